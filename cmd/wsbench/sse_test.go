package main

import (
	"fmt"
	"strings"
	"testing"
)

// The event stream's parser gives each event's data once, whole, however the chunked body is
// cut into reads; comments, ids and retry lines are skipped, and the last chunk ends it.
func TestSSEParser(t *testing.T) {
	events := "retry: 1000\n\ndata: {\"type\":\"welcome\"}\n\n: heartbeat\n\nid: 1.a:0:1:x\ndata: {\"type\":\"message\",\"n\":1}\n\n"
	var chunked strings.Builder
	for _, part := range []string{events[:7], events[7:40], events[40:]} {
		fmt.Fprintf(&chunked, "%x\r\n%s\r\n", len(part), part)
	}
	chunked.WriteString("0\r\n\r\n")
	body := chunked.String()
	for step := 1; step <= len(body); step++ {
		p := &sseParser{chunked: true}
		var got []string
		var end error
		for i := 0; i < len(body) && end == nil; i += step {
			end = p.feed([]byte(body[i:min(i+step, len(body))]), func(op byte, d []byte) error {
				if op != opText {
					t.Fatalf("op %d", op)
				}
				got = append(got, string(d))
				return nil
			})
		}
		want := []string{`{"type":"welcome"}`, `{"type":"message","n":1}`}
		if strings.Join(got, "|") != strings.Join(want, "|") || end != errServerClosed {
			t.Fatalf("reads of %d bytes: got %q (end %v), want %q and the end", step, got, end, want)
		}
	}
}
