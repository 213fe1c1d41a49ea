package main

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestChurn closes connections while publishing and resumes each on the "next node" (the same
// in-process node listed twice: the embedded broker's history spans one node only): every resume
// recovers, and the gap check finds every message published after a first subscribe, once.
func TestChurn(t *testing.T) {
	url := startGateway(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	o := defaults()
	o.URL, o.Secret, o.APIKey = url+","+url, testSecret, testAPIKey
	o.Conns, o.Channels, o.Rate, o.Duration, o.Churn = 20, 4, 100, 2*time.Second, 20
	rep, err := run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	c, g := rep.Churn, rep.Gaps
	if c == nil || g == nil {
		t.Fatalf("no churn or gap report: %+v", rep)
	}
	if c.Resumes < 10 || c.NotRecovered != 0 || c.Failed != 0 || c.Recovered+c.Unfinished != c.Resumes {
		t.Fatalf("resumes %+v, want at least 10, each recovered", *c)
	}
	// Each of the 4 channels has 5 subscribers: everything published is owed to them.
	if g.Checked != 5*rep.Published || g.Missing != 0 || g.Duplicates != 0 || rep.Published == 0 {
		t.Fatalf("gap check %+v, published %d (owed 5 × published, none missing)", *g, rep.Published)
	}
	var sb strings.Builder
	printTable(&sb, rep)
	if !strings.Contains(sb.String(), "missing 0") || !strings.Contains(sb.String(), "resumes") {
		t.Fatalf("table:\n%s", sb.String())
	}
}

// TestGapReport checks the check itself: a message published after a connection's first
// subscribe and never received is missing, one published before it (or not published) is not
// owed, and one received twice is a duplicate.
func TestGapReport(t *testing.T) {
	b := &bench{o: options{Channels: 2, Gaps: true}}
	b.pubT = make([]atomic.Int64, 10) // seq 0..9; channel 0 has the even ones
	for seq := range 10 {
		if seq != 8 { // 8 failed to publish
			b.pubT[seq].Store(int64(100 + seq))
		}
	}
	c := &conn{i: 0, subAt: 102} // owed 4 and 6 (8 failed)
	for _, seq := range []uint64{0, 4, 4} {
		c.mark(seq, 2)
	}
	other := &conn{i: 1, subAt: 100} // owed 1 3 5 7 9: all received
	for seq := uint64(1); seq < 10; seq += 2 {
		other.mark(seq, 2)
	}
	never := &conn{i: 3} // never subscribed: owed nothing
	g := b.gapReport([]*conn{c, other, never})
	want := GapReport{Checked: 2 + 5, Missing: 1, Duplicates: 1, ConnsWithGaps: 1}
	if *g != want {
		t.Fatalf("gap report %+v, want %+v", *g, want)
	}
}

func TestPayloadSeq(t *testing.T) {
	frame := appendPayload([]byte(`{"type":"message","channel":"c","position":"1-2","data":`), 123, 4567, 64, padX)
	if seq, ok := payloadSeq(frame); !ok || seq != 4567 {
		t.Fatalf("seq %d %v, want 4567", seq, ok)
	}
	if _, ok := payloadSeq([]byte(`{"type":"message","data":{"x":1}}`)); ok {
		t.Fatal("a payload without seq has one")
	}
	if pos := stringField(frame, keyPosition); string(pos) != "1-2" {
		t.Fatalf("position %q", pos)
	}
}
