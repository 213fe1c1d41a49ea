package faults

import (
	"encoding/json"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/wsgateway/gateway/internal/auth"
)

// TestReplayRate measures how fast one client is replayed a channel's history after a reconnect
// to another node (figures for docs and the issue notes; it asserts completeness, not speed).
func TestReplayRate(t *testing.T) {
	const total = 1000
	for _, b := range brokers {
		if !b.history {
			continue
		}
		t.Run(b.name, func(t *testing.T) {
			nodes := cluster(t, b, 2, "GATEWAY_HISTORY_MAX_REPLAY=5000")
			tok, _ := auth.SignHS256([]byte(secret), "r", time.Hour, []string{"*"}, nil)
			first := rawDial(t, nodes[0].URL, tok, 0)
			first.send(t, `{"type":"subscribe","id":"s","channel":"feed"}`)
			start, _ := first.until(t, "subscribed")["position"].(string)
			publishAll(t, nodes[0].URL, 0, total, nil)

			r := rawDial(t, nodes[1].URL, tok, 0)
			sub, _ := json.Marshal(map[string]any{"type": "subscribe", "id": "r", "channel": "feed", "since": start})
			began := time.Now()
			r.send(t, string(sub))
			for i := 0; i < total; i++ {
				f := r.next(t)
				if f["type"] != "message" || seqOf(f) != i {
					t.Fatalf("replayed frame %d: %v", i, f)
				}
			}
			if f := r.next(t); f["type"] != "subscribed" || f["recovered"] != true {
				t.Fatalf("after the replay: %v", f)
			}
			took := time.Since(began)
			t.Logf("%s: replayed %d messages of 8 KiB to one client in %v (%.0f msg/s)", b.name, total, took.Round(time.Millisecond), total/took.Seconds())
		})
	}
}

// TestManyClientsResume kills a node holding a third of FAULTS_CLIENTS clients (default 60; set
// 1000 for the figure in the notes) and reports how long until all of them resumed elsewhere.
func TestManyClientsResume(t *testing.T) {
	n := 60
	if v, err := strconv.Atoi(os.Getenv("FAULTS_CLIENTS")); err == nil && v > 0 {
		n = v
	}
	for _, b := range brokers {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel() // the brokers are independent: own prefix, own node processes
			nodes := cluster(t, b, 3)
			readers := startReaders(t, nodes, n)
			publishAll(t, nodes[2].URL, 0, 10, nil)
			checkComplete(t, readers, 10, true)
			killed := time.Now()
			nodes[0].Kill()
			publishAll(t, nodes[2].URL, 10, 20, nil)
			checkComplete(t, readers, 20, b.history)
			var last time.Time
			moved := 0
			for _, r := range readers {
				r.mu.Lock()
				if r.resub.After(killed) {
					moved++
					last = maxTime(last, r.resub)
				}
				r.mu.Unlock()
			}
			t.Logf("%s: %d of %d clients were on the killed node; all resumed within %v", b.name, moved, n, last.Sub(killed).Round(time.Millisecond))
			if moved == 0 {
				t.Fatalf("no client was on the killed node of %d", n)
			}
		})
	}
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
