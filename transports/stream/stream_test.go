package stream

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/wsgateway/gateway/protocol"
)

func TestCursorAndResume(t *testing.T) {
	chs := []string{"a", "$user", "b"}
	c := NewCursor(chs)
	if got := Resume(c.ID(), chs); strings.Join(got, ",") != ",," {
		t.Fatalf("no position yet: %q", got)
	}
	if !c.Update("b", "e:0:7:x") || c.Update("b", "e:0:7:x") || c.Update("nope", "e:0:1:x") {
		t.Fatal("Update reports a change only for a new position of a channel of the stream")
	}
	c.Update("a", "e:0:9:y")
	id := c.ID()
	if id != "1.e:0:9:y..e:0:7:x" {
		t.Fatalf("id %q", id)
	}
	if got := Resume(id, chs); strings.Join(got, ",") != "e:0:9:y,,e:0:7:x" {
		t.Fatalf("Resume(%q) = %q", id, got)
	}
	for _, bad := range []string{"", "garbage", "2.e:0:9:y..e:0:7:x", "1.e:0:9:y.e:0:7:x", id + ".more", "1." + strings.Repeat("x", MaxIDLen(3))} {
		if got := Resume(bad, chs); strings.Join(got, "") != "" {
			t.Errorf("Resume(%.40q) = %q, want nothing", bad, got)
		}
	}
	if MaxIDLen(32) > 1+32*(protocol.MaxPositionLen+1) {
		t.Fatal("MaxIDLen")
	}
}

func TestWriter(t *testing.T) {
	msg := protocol.ChannelMessageFrame("a", "m1", "e:0:5:abc", []byte(`{"k":1}`), nil)
	welcome := []byte(`{"type":"welcome","session":"s"}`)
	for _, tc := range []struct {
		f           Format
		contentType string
		want        string
	}{
		{SSE, "text/event-stream", "retry: 1000\n\ndata: " + string(welcome) + "\n\nid: 1.e:0:5:abc.\ndata: " + string(msg) + "\n\ndata: " + string(msg) + "\n\n: heartbeat\n\n"},
		{NDJSON, "application/x-ndjson", string(welcome) + "\n" + `{"event_id":"1.e:0:5:abc.",` + string(msg[1:]) + "\n" + string(msg) + "\n" + `{"type":"heartbeat"}` + "\n"},
	} {
		rec := httptest.NewRecorder()
		w := NewWriter(rec, tc.f, NewCursor([]string{"a", "b"}), 0)
		if err := w.Start(); err != nil {
			t.Fatal(err)
		}
		// The same message twice: the second changes no position and carries no id.
		for _, f := range [][]byte{welcome, msg, msg} {
			if err := w.Write(f); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Heartbeat(); err != nil || w.Flush() != nil {
			t.Fatal(err)
		}
		if got := rec.Body.String(); got != tc.want {
			t.Errorf("format %d wrote\n%q\nwant\n%q", tc.f, got, tc.want)
		}
		if ct := rec.Header().Get("Content-Type"); ct != tc.contentType || rec.Header().Get("Cache-Control") != "no-store" {
			t.Errorf("headers %v", rec.Header())
		}
	}
}

// A payload published pretty-printed is embedded as it is in the frame; its line breaks, JSON
// whitespace, must not break the event or the line.
func TestWriterOneLine(t *testing.T) {
	msg := protocol.ChannelMessageFrame("a", "m1", "e:0:5:abc", []byte("{\r\n  \"k\": \"v\"\n}"), nil)
	for _, f := range []Format{SSE, NDJSON} {
		rec := httptest.NewRecorder()
		w := NewWriter(rec, f, NewCursor([]string{"a"}), 0)
		if err := w.Write(msg); err != nil || w.Flush() != nil {
			t.Fatal(err)
		}
		body := rec.Body.String()
		if strings.Count(body, "\n") != map[Format]int{SSE: 3, NDJSON: 1}[f] || strings.Contains(body, "\r") {
			t.Errorf("format %d wrote %q", f, body)
		}
	}
}
