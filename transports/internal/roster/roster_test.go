package roster

import (
	"fmt"
	"testing"

	"github.com/wsgateway/gateway/protocol"
)

func member(user, session string) Entry[int] {
	return Entry[int]{M: protocol.Member{User: user, Session: session}}
}

func TestPutRemove(t *testing.T) {
	var r Roster[int]
	if occ, _, _ := r.Put("a", member("u1", "s2")); !occ {
		t.Fatal("first Put: occupied false")
	}
	if occ, _, had := r.Put("a", member("u1", "s1")); occ || had {
		t.Fatalf("second Put: occupied %v had %v", occ, had)
	}
	e := member("u2", "s1")
	e.X = 7
	if _, old, had := r.Put("a", e); !had || old.M.User != "u1" {
		t.Fatalf("replace: had %v old %v", had, old)
	}
	if st := r.Stats("a"); st.Connections != 2 || st.Users != 2 {
		t.Fatalf("stats %+v, want 2 connections of 2 users", st)
	}
	r.Put("a", member("", "s3"))
	r.Put("a", member("", "s4"))
	if st := r.Stats("a"); st.Connections != 4 || st.Users != 4 {
		t.Fatalf("stats with anonymous %+v, want 4 and 4", st)
	}
	if got, ok := r.Get("a", "s1"); !ok || got.X != 7 {
		t.Fatalf("Get s1 = %v %v", got, ok)
	}
	for _, s := range []string{"s3", "s4", "s2"} {
		if _, ok, vac := r.Remove("a", s); !ok || vac {
			t.Fatalf("Remove %s: ok %v vacated %v", s, ok, vac)
		}
	}
	if _, ok, _ := r.Remove("a", "s2"); ok {
		t.Fatal("Remove of a removed session reported ok")
	}
	if _, ok, vac := r.Remove("a", "s1"); !ok || !vac {
		t.Fatalf("last Remove: ok %v vacated %v", ok, vac)
	}
	if len(r.Names()) != 0 || r.Stats("a") != (protocol.PresenceStats{}) {
		t.Fatalf("after vacating: names %v stats %+v", r.Names(), r.Stats("a"))
	}
}

func TestPaging(t *testing.T) {
	var r Roster[int]
	for i := 999; i >= 0; i-- {
		r.Put("c", member(fmt.Sprint("u", i%10), fmt.Sprintf("s%04d", i)))
	}
	var got []string
	after := ""
	for {
		ms, more := r.Members("c", after, 70)
		for _, m := range ms {
			got = append(got, m.Session)
		}
		if !more {
			break
		}
		after = ms[len(ms)-1].Session
	}
	if len(got) != 1000 {
		t.Fatalf("paged %d members, want 1000", len(got))
	}
	for i, s := range got {
		if s != fmt.Sprintf("s%04d", i) {
			t.Fatalf("member %d is %s", i, s)
		}
	}
	if st := r.Stats("c"); st.Users != 10 {
		t.Fatalf("users %d, want 10", st.Users)
	}
	n := 0
	r.Each("c", func(Entry[int]) bool { n++; return n < 5 })
	if n != 5 {
		t.Fatalf("Each stopped after %d, want 5", n)
	}
}

func TestChannels(t *testing.T) {
	var r Roster[int]
	for _, ch := range []string{"room:b", "room:a", "lobby", "room:c"} {
		r.Put(ch, member("u", "s"))
	}
	cs, more := r.Channels("room:", "", 2)
	if len(cs) != 2 || cs[0].Channel != "room:a" || cs[1].Channel != "room:b" || !more {
		t.Fatalf("first page %v more %v", cs, more)
	}
	cs, more = r.Channels("room:", "room:b", 2)
	if len(cs) != 1 || cs[0].Channel != "room:c" || more || cs[0].Connections != 1 {
		t.Fatalf("second page %v more %v", cs, more)
	}
}
