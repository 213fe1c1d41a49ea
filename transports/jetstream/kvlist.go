package jetstream

// Listing a KV bucket's keys, complete by construction.
//
// nats.go's KV listings (ListKeys, Keys, Watch) read through an ordered push consumer and end
// once they counted as many messages as the consumer had pending when it was made. When the
// client misses a message (a slow consumer on a loaded machine), nats.go replaces the consumer
// from the missed sequence on, but the messages delivered twice count twice toward that number:
// the listing ends before its last keys (TestPresenceStorm once listed 599 of 600 members).
//
// listKV reads through a pull consumer of its own (ephemeral, in memory, no acks, the last entry
// of each key, in stream order) until the server says nothing more is pending: a message whose
// num_pending is 0, or the consumer's info saying so with nothing delivered that the listing did
// not read. That word can come early while the listed keys are rewritten (the end of read says
// why; TestPresenceStorm listed 599 of 600 members so again), so the listing then checks that it
// read the bucket's last entry of its keys, and when it did not, adds the keys the stream holds
// that it missed (reconcile). A message lost on the way shows as a gap in the consumer sequence;
// a consumer that vanished (a server restart) or a failed pull is a reset. After either, the
// listing goes on with a new consumer from the stream sequence after the last entry it read,
// keeping what it read: the bucket keeps one entry per key (History 1) and entries come in stream
// order, so what it read before and after that sequence together is every key's latest entry.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// kvEntry is the latest entry of a key as a listing read it.
type kvEntry struct {
	key     string
	value   []byte // nil when the listing read headers only
	rev     uint64 // the entry's revision: its stream sequence
	deleted bool   // a delete or purge marker
	created time.Time
}

const (
	// listPull is how many entries a listing asks for in one pull request.
	listPull = 1024
	// listResets is how many resets and gaps a listing survives; its ctx bounds it too.
	listResets = 16
)

// errListGap: the consumer delivered a message the listing did not receive.
var errListGap = errors.New("a listed entry was lost on the way")

// listTest holds the listing's test hooks; all nil and 0 outside tests.
type listTest struct {
	pull   int                                   // entries per pull request (0: listPull)
	pulled func(filter, stream, consumer string) // after each pull request
	lose   func(filter string, cseq uint64) bool // drops a delivered message, as a slow client would
	// low replaces the num_pending a delivered message reports, as the server's count running
	// low while it has not counted entries written meanwhile.
	low    func(filter string, cseq, pending uint64) uint64
	resets func(filter string, cause error) // after each reset, with its cause
	// reconciled: after a listing looked for the keys it missed, with how many it added.
	reconciled func(filter string, added int)
}

// listKV returns the latest entry of every key of kv matching filter (a key pattern with * and
// >), sorted by key; deleted keys are left out unless withDeleted. values: read the values too
// (else headers only).
func (b *Broker) listKV(ctx context.Context, kv jetstream.KeyValue, filter string, values, withDeleted bool) ([]kvEntry, error) {
	return b.listKVAs(ctx, kv, filter, values, withDeleted, true)
}

// listKVAs is listKV; unless exact, the listing ends on the server's word that nothing is
// pending, without checking it: a key rewritten while it is listed may be missing (the leases:
// one rewritten meanwhile is a live node's).
func (b *Broker) listKVAs(ctx context.Context, kv jetstream.KeyValue, filter string, values, withDeleted, exact bool) ([]kvEntry, error) {
	l := kvListing{
		b: b, stream: "KV_" + kv.Bucket(), pfx: "$KV." + kv.Bucket() + ".", filter: filter, values: values,
		exact: exact, got: map[string]kvEntry{},
	}
	pause := b.cfg.ReconnectWait
	for resets := 0; ; resets++ {
		err := l.read(ctx)
		if err == nil {
			break
		}
		if cerr := ctx.Err(); cerr != nil {
			return nil, fmt.Errorf("listing %s: %w (after %v)", filter, cerr, err)
		}
		if resets == listResets {
			return nil, fmt.Errorf("listing %s: %d resets, the last: %w", filter, resets, err)
		}
		if h := b.listTest.resets; h != nil {
			h(filter, err)
		}
		b.log.Debug("jetstream: a KV listing was reset, going on from where it was", "filter", filter, "error", err)
		if errors.Is(err, errListGap) {
			continue // the server is there: go on at once
		}
		// The server or the connection failed: give it time, more after each failure.
		t := time.NewTimer(pause)
		pause = min(2*pause, b.cfg.MaxReconnectWait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("listing %s: %w (after %v)", filter, ctx.Err(), err)
		case <-t.C:
		}
	}
	out := make([]kvEntry, 0, len(l.got))
	for _, e := range l.got {
		if withDeleted || !e.deleted {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b kvEntry) int { return strings.Compare(a.key, b.key) })
	return out, nil
}

// kvListing is a listing under way.
type kvListing struct {
	b           *Broker
	stream, pfx string
	filter      string // the keys listed
	values      bool
	exact       bool               // check the end: see listKVAs
	got         map[string]kvEntry // key -> its latest entry read
	next        uint64             // the stream sequence after the last entry read; 0: none read
}

// read reads with a new consumer from l.next (from the start, the last entry of each key, when
// it is 0) until nothing is pending; an error is a reset or a gap, after which a new read goes on.
func (l *kvListing) read(ctx context.Context) error {
	b := l.b
	cfg := jetstream.ConsumerConfig{
		FilterSubject:     l.pfx + l.filter,
		DeliverPolicy:     jetstream.DeliverLastPerSubjectPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		HeadersOnly:       !l.values,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: max(b.listTimeout(), 5*time.Second), // left by a node that died listing
	}
	if l.next > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, l.next
	}
	c, err := b.js.CreateConsumer(ctx, l.stream, cfg)
	if err != nil {
		return err
	}
	name := c.CachedInfo().Name
	defer func() {
		dctx, cancel := presenceCtx(context.WithoutCancel(ctx), b)
		_ = b.js.DeleteConsumer(dctx, l.stream, name)
		cancel()
	}()
	pending := c.CachedInfo().NumPending
	var cseq uint64 // the consumer sequence of the last message read
	pull := listPull
	if b.listTest.pull > 0 {
		pull = b.listTest.pull
	}
	for pending > 0 {
		mb, err := c.FetchNoWait(int(min(pending, uint64(pull))))
		if err != nil {
			return err
		}
		n := 0
		for m := range mb.Messages() {
			md, err := m.Metadata()
			if err != nil {
				return err
			}
			key := strings.TrimPrefix(m.Subject(), l.pfx)
			if h := b.listTest.lose; h != nil && h(l.filter, md.Sequence.Consumer) {
				continue
			}
			if md.Sequence.Consumer != cseq+1 {
				return fmt.Errorf("%w (consumer sequence %d after %d)", errListGap, md.Sequence.Consumer, cseq)
			}
			cseq, pending, n = md.Sequence.Consumer, md.NumPending, n+1
			if h := b.listTest.low; h != nil {
				pending = h(l.filter, cseq, pending)
			}
			e := kvEntry{key: key, rev: md.Sequence.Stream, created: md.Timestamp}
			switch m.Headers().Get("KV-Operation") {
			case "DEL", "PURGE":
				e.deleted = true
			}
			if l.values && !e.deleted {
				e.value = m.Data()
			}
			l.got[key] = e
			l.next = md.Sequence.Stream + 1
		}
		if err := mb.Error(); err != nil {
			return err
		}
		if h := b.listTest.pulled; h != nil {
			h(l.filter, l.stream, name)
		}
		if n > 0 {
			continue
		}
		// Nothing came though entries were pending: they were removed meanwhile (a purge), or
		// the pull or its messages were lost. The consumer tells which.
		info, err := c.Info(ctx)
		if err != nil {
			return err
		}
		if info.Delivered.Consumer != cseq {
			return fmt.Errorf("%w (consumer delivered %d, read %d)", errListGap, info.Delivered.Consumer, cseq)
		}
		pending = info.NumPending
	}
	// The server's word is not enough. It counts an entry toward num_pending when it tells the
	// stream's consumers about it, after it stored and acked it, while the entry a rewrite
	// replaced is discounted at once: a listing that reads while its keys are rewritten can hear
	// "nothing pending" with a rewritten key's new entry unread and its old one gone before the
	// listing reached it (TestPresenceStorm listed 599 of 600 members, the nodes recording their
	// members again meanwhile). So the bucket's last entry of the listed keys must have been read;
	// when it was written after the last entry read, the listing looks for what it missed.
	if !l.exact {
		return nil
	}
	last, ok, err := l.lastEntry(ctx, l.filter)
	if err != nil {
		return err
	}
	if !ok || last.rev < l.next {
		return nil
	}
	return l.reconcile(ctx)
}

// reconcile adds the keys the bucket has now and the listing did not read, from the stream's
// list of the subjects it holds (a snapshot, O(keys)), each key's entry read on its own: keys
// written during the listing, among them any whose entries moved ahead of the listing each time
// it was about to read them. What the listing read of the others stays (each key's entry as
// of a moment during the listing).
func (l *kvListing) reconcile(ctx context.Context) error {
	b := l.b
	st, err := b.js.Stream(ctx, l.stream)
	if err != nil {
		return err
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(l.pfx+l.filter))
	if err != nil {
		return err
	}
	added := 0
	for subject := range info.State.Subjects {
		key := strings.TrimPrefix(subject, l.pfx)
		if _, ok := l.got[key]; ok {
			continue
		}
		e, ok, err := l.lastEntry(ctx, key)
		if err != nil {
			return err
		}
		if ok { // else purged since
			l.got[key] = e
			added++
		}
	}
	if h := b.listTest.reconciled; h != nil {
		h(l.filter, added)
	}
	return nil
}

// lastEntry reads the last entry of the keys matching filter (one key, or a pattern): a direct
// get (KV streams allow them) of the last message of their subjects, through the JetStream API
// when the stream takes no direct gets; ok is false when there is none.
func (l *kvListing) lastEntry(ctx context.Context, filter string) (e kvEntry, ok bool, err error) {
	m, err := l.lastMsg(ctx, l.pfx+filter)
	if err != nil || m == nil {
		return kvEntry{}, false, err
	}
	e = kvEntry{key: strings.TrimPrefix(m.Subject, l.pfx), rev: m.Sequence, created: m.Time}
	switch m.Header.Get("KV-Operation") {
	case "DEL", "PURGE":
		e.deleted = true
	}
	if l.values && !e.deleted {
		e.value = m.Data
	}
	return e, true, nil
}

// lastMsg is the last message of subject (a pattern or not) in the listing's stream, nil when
// there is none.
func (l *kvListing) lastMsg(ctx context.Context, subject string) (*jetstream.RawStreamMsg, error) {
	req, err := json.Marshal(struct {
		LastFor string `json:"last_by_subj"`
	}{subject})
	if err != nil {
		return nil, err
	}
	m, err := l.b.nc.RequestWithContext(ctx, "$JS.API.DIRECT.GET."+l.stream, req)
	if errors.Is(err, nats.ErrNoResponders) {
		// A stream without direct gets (AllowDirect false: a bucket some other client made).
		st, err := l.b.js.Stream(ctx, l.stream)
		if err != nil {
			return nil, err
		}
		rm, err := st.GetLastMsgForSubject(ctx, subject)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil, nil
		}
		return rm, err
	}
	if err != nil {
		return nil, fmt.Errorf("the last message of %s: %w", subject, err)
	}
	switch status := m.Header.Get("Status"); status {
	case "":
	case "404":
		return nil, nil
	default:
		return nil, fmt.Errorf("the last message of %s: status %s %s", subject, status, m.Header.Get("Description"))
	}
	rm := &jetstream.RawStreamMsg{Subject: m.Header.Get(jetstream.SubjectHeader), Header: m.Header, Data: m.Data}
	if rm.Sequence, err = strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64); err != nil {
		return nil, fmt.Errorf("the last message of %s: sequence: %w", subject, err)
	}
	rm.Time, _ = time.Parse(time.RFC3339Nano, m.Header.Get(jetstream.TimeStampHeaer))
	return rm, nil
}

// listKeys lists the live keys matching filter, decodes what follows pfx, keeps the names keep
// accepts and returns them sorted; exact as for listKVAs.
func (b *Broker) listKeys(ctx context.Context, kv jetstream.KeyValue, filter, pfx string, exact bool, keep func(string) bool) ([]string, error) {
	entries, err := b.listKVAs(ctx, kv, filter, false, false, exact)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		name, ok := unsafeName(strings.TrimPrefix(e.key, pfx))
		if ok && keep(name) {
			names = append(names, name)
		}
	}
	slices.Sort(names) // the keys' order is not their names' (SafeName escapes)
	return names, nil
}
