package jetstream

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/transporttest"
)

// listingNode starts one node on the server at url whose KV listings run with the test hooks h
// (set before Start: the node's own loops list too).
func listingNode(t *testing.T, url string, h listTest) *Broker {
	t.Helper()
	prefix := transporttest.Prefix(t)
	dropStreams(t, url, prefix)
	cfg := testConfig(url, prefix)
	cfg.PublishTimeout = wait
	b, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	b.listTest = h
	t.Cleanup(func() { _ = b.Close() })
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestKVListingSurvivesResets: a listing of a channel's 300 members, 7 per pull request, loses a
// message on the way (a gap), has its consumer deleted under it, and sees the server restart in
// the middle; it goes on after each and lists every member once, in order.
func TestKVListingSurvivesResets(t *testing.T) {
	br := startBroker(t)
	const count = 300
	members := "m." + transports.SafeName("big") + ".*"
	var (
		pulls, lost atomic.Int32
		mu          sync.Mutex
		causes      []error
		n           *Broker
	)
	n = listingNode(t, br.url(), listTest{
		pull: 7,
		lose: func(filter string, cseq uint64) bool {
			return filter == members && cseq == 10 && lost.CompareAndSwap(0, 1)
		},
		pulled: func(filter, stream, consumer string) {
			if filter != members {
				return
			}
			switch pulls.Add(1) {
			case 5:
				if err := n.js.DeleteConsumer(t.Context(), stream, consumer); err != nil {
					t.Errorf("deleting the listing's consumer: %v", err)
				}
			case 12:
				br.restart(t)
			}
		},
		resets: func(filter string, cause error) {
			if filter == members {
				mu.Lock()
				causes = append(causes, cause)
				mu.Unlock()
			}
		},
	})
	seed(t, n, "big", count)
	ms, err := allMembers(t, n, "big", 1000) // one page: one listing
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != count {
		t.Fatalf("%d members listed, want %d", len(ms), count)
	}
	for i, m := range ms {
		if want := fmt.Sprintf("s%05d", i); m.Session != want {
			t.Fatalf("member %d is %s, want %s", i, m.Session, want)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	gaps := 0
	for _, c := range causes {
		if errors.Is(c, errListGap) {
			gaps++
		}
	}
	// The lost message, the deleted consumer, the restart: a reset each at least.
	if gaps == 0 || len(causes)-gaps < 2 {
		t.Fatalf("resets %v: want a gap and at least 2 others", causes)
	}
	if p := pulls.Load(); p < 12 {
		t.Fatalf("%d pull requests: the restart did not happen during the listing", p)
	}
}

// TestKVListingPendingLow: the server's num_pending runs low (it says nothing is pending after
// the 100th of 300 members, as it does while a key's entry written meanwhile is not counted
// yet); the listing does not end there: the bucket's last entry of its keys is unread, so it
// looks for the keys it missed and lists every member. (TestPresenceLocalServer runs it against
// the machine's nats-server 2.9 too.)
func TestKVListingPendingLow(t *testing.T) {
	testKVListingPendingLow(t, startBroker(t).url())
}

func testKVListingPendingLow(t *testing.T, url string) {
	const count = 300
	members := "m." + transports.SafeName("big") + ".*"
	var lowered, added, resets atomic.Int32
	n := listingNode(t, url, listTest{
		pull: 50,
		low: func(filter string, cseq, pending uint64) uint64 {
			if filter == members && cseq == 100 && lowered.CompareAndSwap(0, 1) {
				return 0
			}
			return pending
		},
		reconciled: func(filter string, n int) {
			if filter == members {
				added.Add(int32(n))
			}
		},
		resets: func(filter string, _ error) {
			if filter == members {
				resets.Add(1)
			}
		},
	})
	seed(t, n, "big", count)
	ms, err := allMembers(t, n, "big", 1000) // one page: one listing
	if err != nil {
		t.Fatal(err)
	}
	if lowered.Load() == 0 {
		t.Fatal("the listing never heard a low num_pending")
	}
	if len(ms) != count {
		t.Fatalf("%d members listed, want %d", len(ms), count)
	}
	for i, m := range ms {
		if want := fmt.Sprintf("s%05d", i); m.Session != want {
			t.Fatalf("member %d is %s, want %s", i, m.Session, want)
		}
	}
	if a, r := added.Load(), resets.Load(); a != count-100 || r != 0 {
		t.Fatalf("the listing added %d keys it missed and was reset %d times; want %d and none", a, r, count-100)
	}
}

// TestKVListingUnderRewrites: listings of 600 keys while other clients rewrite random keys of
// them (each rewrite moves a key to the end of the stream; the server counts the new entry
// after it acked it): every listing has all 600. Before the listings confirmed their end with
// the bucket's last entry, a few listings in a hundred missed one or more keys.
func TestKVListingUnderRewrites(t *testing.T) {
	br := startBroker(t)
	n := listingNode(t, br.url(), listTest{})
	kv, err := n.bucket()
	if err != nil {
		t.Fatal(err)
	}
	const count, listings = 600, 150
	for i := range count {
		if _, err := kv.Put(t.Context(), fmt.Sprintf("r.k%03d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for w := range 2 {
		wg.Go(func() {
			for i := w; ctx.Err() == nil; i += 7 {
				_, _ = kv.Put(ctx, fmt.Sprintf("r.k%03d", i%count), []byte("w"))
			}
		})
	}
	for i := range listings {
		es, err := n.listKV(t.Context(), kv, "r.*", false, false)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) != count {
			t.Fatalf("listing %d of %d: %d keys, want %d", i+1, listings, len(es), count)
		}
	}
}

// TestKVListingWithoutDirectGets: on a bucket whose stream takes no direct gets, a listing
// whose num_pending ran low reads the last entry through the JetStream API and still lists
// every key, with its value.
func TestKVListingWithoutDirectGets(t *testing.T) {
	br := startBroker(t)
	n := listingNode(t, br.url(), listTest{
		pull: 2,
		low: func(filter string, cseq, pending uint64) uint64 {
			if filter == "d.*" && cseq == 2 {
				return 0
			}
			return pending
		},
	})
	kv, err := n.bucket()
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	st, err := n.js.Stream(ctx, "KV_"+kv.Bucket())
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.AllowDirect = false
	if _, err := n.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"d.a", "d.b", "d.c", "d.d", "d.e"} {
		if _, err := kv.Put(ctx, k, []byte("v"+k)); err != nil {
			t.Fatal(err)
		}
	}
	es, err := n.listKV(ctx, kv, "d.*", true, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(entryKeys(es)); got != "[d.a=vd.a d.b=vd.b d.c=vd.c d.d=vd.d d.e=vd.e]" {
		t.Fatalf("listed %s", got)
	}
}

// TestKVListingDeletedKeys: a listing leaves out deleted keys unless asked for them, and reads
// values when asked.
func TestKVListingDeletedKeys(t *testing.T) {
	br := startBroker(t)
	n := listingNode(t, br.url(), listTest{pull: 2})
	kv, err := n.bucket()
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for _, k := range []string{"x.a", "x.b", "x.c", "y.a"} {
		if _, err := kv.Put(ctx, k, []byte("v"+k)); err != nil {
			t.Fatal(err)
		}
	}
	if err := kv.Delete(ctx, "x.b"); err != nil {
		t.Fatal(err)
	}
	live, err := n.listKV(ctx, kv, "x.*", true, false)
	if err != nil {
		t.Fatal(err)
	}
	all, err := n.listKV(ctx, kv, "x.*", false, true)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(entryKeys(live)); got != "[x.a=vx.a x.c=vx.c]" {
		t.Errorf("live keys with values: %s", got)
	}
	if got := fmt.Sprint(entryKeys(all)); got != "[x.a= x.b=deleted x.c=]" {
		t.Errorf("every key, headers only: %s", got)
	}
	none, err := n.listKV(ctx, kv, "z.*", false, true)
	if err != nil || len(none) != 0 {
		t.Errorf("listing no key: %v, %v", none, err)
	}
}

func entryKeys(es []kvEntry) []string {
	var out []string
	for _, e := range es {
		v := string(e.value)
		if e.deleted {
			v = "deleted"
		}
		out = append(out, e.key+"="+v)
	}
	return out
}
