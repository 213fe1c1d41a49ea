package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/gorilla/websocket"

	"github.com/wsgateway/gateway"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/memory"
)

// Fuzz targets of the two ways in that take a client's bytes: WebSocket frames and API bodies.
// Both run the whole path of a real node (decode, authorisation, limits, router, broker), not
// only the decoder. Run one for ten minutes with
//
//	go test -run '^$' -fuzz FuzzClientFrame -fuzztime 10m .
//	go test -run '^$' -fuzz FuzzAPIBody -fuzztime 10m .
//
// Without -fuzz they run their seeds as ordinary tests.

// knownCodes are the error codes of docs/protocol.md.
var knownCodes = map[string]bool{
	protocol.CodeBadRequest: true, protocol.CodeUnauthorized: true, protocol.CodeForbidden: true,
	protocol.CodeNotFound: true, protocol.CodeTooLarge: true, protocol.CodeRateLimited: true,
	protocol.CodeUnavailable: true, protocol.CodeInternal: true, protocol.CodeLimitExceeded: true,
}

// replyTypes are the frames that answer a client frame (one each).
var replyTypes = map[string]bool{"subscribed": true, "unsubscribed": true, "ack": true, "pong": true, "error": true, "history": true}

// frameSeeds start the frame fuzzer: every frame type, valid and not.
var frameSeeds = []string{
	`{"type":"subscribe","id":"1","channel":"room:42"}`,
	`{"type":"subscribe","id":"2","channel":"$user","since":"17-3"}`,
	`{"type":"subscribe","id":"2b","channel":"room:42","since":"garbage"}`,
	`{"type":"unsubscribe","id":"3","channel":"room:42"}`,
	`{"type":"publish","id":"4","channel":"room:42","data":{"text":"hi"},"msg_id":"m-1"}`,
	`{"type":"publish","id":"5","channel":"$user","data":1}`,
	`{"type":"send","id":"6","data":"hello"}`,
	`{"type":"ping","id":"7"}`,
	`{"type":"ping"}`,
	`{"type":"subscribe","id":"8","channel":"a b"}`,
	`{"type":"nope","id":"10"}`,
	`{"type":"history","id":"13","channel":"room:42","limit":5,"reverse":true}`,
	`{"type":"history","id":"14","channel":"room:42","since":"garbage","limit":-1}`,
	`{"type":"subscribe","id":"15","channel":"room:43","rewind":3}`,
	`{"type":"subscribe","id":"16","channel":"room:44","rewind":-1,"since":"x"}`,
	`{"id":"11","type":"ping"`,
	`[]`, `null`, ``, `{}`, `"x"`,
	"{\"type\":\"ping\",\"id\":\"\xff\xfe\"}",
	`{"type":"publish","id":"12","channel":"room:1","data":"` + strings.Repeat("x", 70<<10) + `"}`,
}

// FuzzClientFrame sends each input as one text frame on a connection allowed everywhere, then a
// ping as a probe. The node must answer the input with exactly one reply (or close the
// connection with a documented close code) before the probe's pong, every frame it sends must be
// a JSON object of a known type, and every error must carry a known code and a message.
func FuzzClientFrame(f *testing.F) {
	for _, s := range frameSeeds {
		f.Add([]byte(s))
	}
	n := startNode(f, testConfig(f, "GATEWAY_PUBLIC_CHANNELS=*",
		"GATEWAY_LIMITS_SUBSCRIBE_RATE=1000000", "GATEWAY_LIMITS_SUBSCRIBE_BURST=1000000",
		"GATEWAY_LIMITS_PUBLISH_RATE=1000000", "GATEWAY_LIMITS_PUBLISH_BURST=1000000"))
	tok := allowAll(f, "fuzz")
	var conn *websocket.Conn
	probes := 0
	f.Cleanup(func() {
		if conn != nil {
			conn.Close()
		}
	})
	f.Fuzz(func(t *testing.T, frame []byte) {
		if conn == nil {
			conn = dialFuzz(t, n.URL, tok)
		}
		probes++
		probe := fmt.Sprintf("probe-%d", probes)
		closed, err := exchange(conn, frame, probe)
		if err != nil {
			conn.Close()
			conn = nil
			t.Fatalf("frame %q: %v", frame, err)
		}
		if closed {
			conn.Close()
			conn = nil
		}
	})
}

// dialFuzz connects and reads the welcome frame.
func dialFuzz(t *testing.T, base, tok string) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, WriteBufferSize: 128 << 10}
	conn, _, err := d.Dial("ws"+strings.TrimPrefix(base, "http")+"/ws?token="+tok, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	if typ, err := readType(conn); err != nil || typ != "welcome" {
		t.Fatalf("first frame %q, %v; want welcome", typ, err)
	}
	return conn
}

// exchange writes frame and the probe ping, then reads until the probe's pong. It returns
// closed when the node closed the connection with a documented code (after the input).
func exchange(conn *websocket.Conn, frame []byte, probe string) (closed bool, err error) {
	if err := conn.WriteMessage(websocket.TextMessage, frame); err != nil {
		return false, fmt.Errorf("write: %w", err)
	}
	// The node may close as soon as it has read the input; the probe's write may then fail.
	_ = conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"ping","id":"`+probe+`"}`))
	replies := 0
	for {
		_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, b, err := conn.ReadMessage()
		if err != nil {
			return closedAsDocumented(frame, err)
		}
		var fr struct {
			Type, ID, Code, Message string
		}
		if !utf8.Valid(b) || json.Unmarshal(b, &fr) != nil || !bytes.HasPrefix(bytes.TrimSpace(b), []byte("{")) {
			return false, fmt.Errorf("node sent %q: not a UTF-8 JSON object", b)
		}
		switch {
		case fr.Type == "pong" && fr.ID == probe:
			if replies != 1 {
				return false, fmt.Errorf("%d replies before the probe's pong, want 1", replies)
			}
			return false, nil
		case fr.Type == "error" && (!knownCodes[fr.Code] || fr.Message == ""):
			return false, fmt.Errorf("error frame %q: unknown code or no message", b)
		case replyTypes[fr.Type]:
			replies++
		case fr.Type == "message" || fr.Type == "disconnect":
		default:
			return false, fmt.Errorf("frame %q of unknown type", b)
		}
	}
}

// closedAsDocumented accepts the close codes docs/protocol.md gives for bad input: 1009 for a
// frame over the size limit and 1007 for a text frame that is not UTF-8.
func closedAsDocumented(frame []byte, err error) (bool, error) {
	ce, ok := err.(*websocket.CloseError)
	switch {
	case !ok:
		return false, fmt.Errorf("read: %w", err)
	case ce.Code == websocket.CloseMessageTooBig && len(frame) > 64<<10:
		return true, nil
	case ce.Code == websocket.CloseInvalidFramePayloadData && !utf8.Valid(frame):
		return true, nil
	}
	return false, fmt.Errorf("closed with %d %q", ce.Code, ce.Text)
}

// readType reads one frame and returns its type.
func readType(conn *websocket.Conn) (string, error) {
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, b, err := conn.ReadMessage()
	if err != nil {
		return "", err
	}
	var fr struct{ Type string }
	err = json.Unmarshal(b, &fr)
	return fr.Type, err
}

// apiSeeds start the API fuzzer: the first byte picks the path.
var apiSeeds = []string{
	`{"channel":"news","data":{"headline":"hello"}}`,
	`{"user":"alice","data":"just for alice","msg_id":"m1"}`,
	`{"session":"s1","data":1}`,
	`{"broadcast":true,"data":[1,2]}`,
	`{"channel":"news","user":"alice","data":1}`,
	`{"channel":"bad name","data":1}`,
	`{"channel":"news"}`,
	`{"channel":"news","data":1,"extra":2}`,
	`{"channel":"news","data":1} trailing`,
	`{"channel":"news","data":1}{"channel":"news","data":2}`,
	`{"messages":[{"channel":"news","data":1},{"user":"","data":2}]}`,
	`{"messages":[]}`,
	`[]`, `null`, ``, `{`, "\xff",
}

// FuzzAPIBody posts each input to /api/publish or /api/batch with a valid key. The answer must
// be 200, 400, 413 or 503 with a JSON body; a refusal carries a known code and a message; a body
// that is not one JSON value is refused; and what was answered 200 on a channel was published:
// the broker delivers it to a subscriber of that channel.
func FuzzAPIBody(f *testing.F) {
	for i, s := range apiSeeds {
		f.Add(byte(i), []byte(s))
	}
	broker := memory.NewBroker(memory.Config{HistorySize: 10})
	f.Cleanup(broker.Close)
	node := broker.Node("fuzz")
	n := startNode(f, testConfig(f), gateway.WithBroker(node))
	handler := n.Handler()
	// A msg_id accepted before (by this process's node, within its dedupe window) is acked again
	// but delivered once: only its first acceptance is looked for on the broker.
	accepted := map[string]bool{}
	f.Fuzz(func(t *testing.T, pick byte, body []byte) {
		path := "/api/publish"
		if pick%2 == 1 {
			path = "/api/batch"
		}
		channels := publishedChannels(path, body)
		subs := subscribeAll(t, node, channels)
		req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testAPIKey)
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		checkAPIAnswer(t, path, body, rec)
		for _, id := range acceptedChannelIDs(path, rec.Body.Bytes(), body) {
			if id.msgID != "" {
				if accepted[id.msgID] {
					continue
				}
				accepted[id.msgID] = true
			}
			if id.channel != "" {
				waitDelivered(t, subs[id.channel], id.id)
			}
		}
	})
}

// checkAPIAnswer checks the status, content type and body shape of one API answer.
func checkAPIAnswer(t *testing.T, path string, body []byte, rec *httptest.ResponseRecorder) {
	t.Helper()
	switch rec.Code {
	case 200, 400, 413, 503:
	default:
		t.Fatalf("%s %q: status %d", path, body, rec.Code)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %q: content type %q", path, body, ct)
	}
	var out struct {
		ID      string                          `json:"id"`
		Error   *struct{ Code, Message string } `json:"error"`
		Results []json.RawMessage               `json:"results"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatalf("%s %q: answer %q is not JSON", path, body, rec.Body.Bytes())
	}
	if rec.Code != 200 {
		if out.Error == nil || !knownCodes[out.Error.Code] || out.Error.Message == "" {
			t.Fatalf("%s %q: refusal %q without a known code and a message", path, body, rec.Body.Bytes())
		}
		return
	}
	if !json.Valid(body) {
		t.Fatalf("%s %q: accepted a body that is not one JSON value", path, body)
	}
	if path == "/api/publish" && out.ID == "" {
		t.Fatalf("%s %q: 200 without an id: %q", path, body, rec.Body.Bytes())
	}
	if path == "/api/batch" && len(out.Results) == 0 {
		t.Fatalf("%s %q: 200 without results: %q", path, body, rec.Body.Bytes())
	}
}

// publishedChannels returns the channels the body would publish to, when it decodes.
func publishedChannels(path string, body []byte) []string {
	var out []string
	for _, r := range publishRequests(path, body) {
		if r.Channel != nil && protocol.ValidChannel(*r.Channel) {
			out = append(out, *r.Channel)
		}
	}
	return out
}

type fuzzPublish struct {
	Channel *string `json:"channel"`
	MsgID   string  `json:"msg_id"`
}

// publishRequests decodes the body leniently, as far as it goes.
func publishRequests(path string, body []byte) []fuzzPublish {
	if path == "/api/publish" {
		var r fuzzPublish
		if json.Unmarshal(body, &r) != nil {
			return nil
		}
		return []fuzzPublish{r}
	}
	var b struct{ Messages []fuzzPublish }
	if json.Unmarshal(body, &b) != nil {
		return nil
	}
	return b.Messages
}

type channelID struct{ channel, id, msgID string }

// acceptedChannelIDs pairs each message answered with an id to its channel ("" for other
// targets) and msg_id.
func acceptedChannelIDs(path string, answer, body []byte) []channelID {
	reqs := publishRequests(path, body)
	var ids []string
	if path == "/api/publish" {
		var out struct{ ID string }
		_ = json.Unmarshal(answer, &out)
		ids = []string{out.ID}
	} else {
		var out struct{ Results []struct{ ID string } }
		_ = json.Unmarshal(answer, &out)
		for _, r := range out.Results {
			ids = append(ids, r.ID)
		}
	}
	var got []channelID
	for i, id := range ids {
		if id == "" || i >= len(reqs) {
			continue
		}
		ch := ""
		if reqs[i].Channel != nil {
			ch = *reqs[i].Channel
		}
		got = append(got, channelID{ch, id, reqs[i].MsgID})
	}
	return got
}

// subscribeAll subscribes each channel's topic on the broker until the test ends.
func subscribeAll(t *testing.T, b transports.Broker, channels []string) map[string]<-chan *message.Message {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	subs := map[string]<-chan *message.Message{}
	for _, ch := range channels {
		if subs[ch] != nil {
			continue
		}
		in, err := b.Subscribe(ctx, protocol.ChannelTopic(ch))
		if err != nil {
			t.Fatal(err)
		}
		subs[ch] = in
	}
	return subs
}

// waitDelivered reads in until the message with this id arrives.
func waitDelivered(t *testing.T, in <-chan *message.Message, id string) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case m := <-in:
			m.Ack()
			if m.UUID == id {
				return
			}
		case <-deadline:
			t.Fatalf("message %s was answered 200 but never delivered", id)
		}
	}
}
