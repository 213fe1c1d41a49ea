package handlers

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/wsgateway/gateway/internal/metrics"
	"github.com/wsgateway/gateway/internal/poll"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/router/middleware"
	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/memory"
)

const hookSecret = "webhook-secret-0123456789"

// receiver is a webhook endpoint that records every POST and answers what status says.
type receiver struct {
	t      *testing.T
	srv    *httptest.Server
	mu     sync.Mutex
	posts  []post
	status func(n int) int // status of the nth POST (1-based)
}

type post struct {
	batch  protocol.WebhookBatch
	header http.Header
	status int
}

func newReceiver(t *testing.T, status func(n int) int) *receiver {
	r := &receiver{t: t, status: status}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		if err := verifyFresh([]byte(hookSecret), req.Header.Get("X-Gateway-Signature"), body); err != nil {
			t.Errorf("POST %d: %v", len(r.posts)+1, err)
		}
		var b protocol.WebhookBatch
		if err := json.Unmarshal(body, &b); err != nil {
			t.Errorf("body %q: %v", body, err)
		}
		r.mu.Lock()
		n := len(r.posts) + 1
		st := r.status(n)
		r.posts = append(r.posts, post{batch: b, header: req.Header.Clone(), status: st})
		r.mu.Unlock()
		w.WriteHeader(st)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// verifyFresh checks a signature header the way a receiver would, written here from the
// documented rule (not with the package's code): HMAC-SHA256 of "<t>.<body>", hex, in v1.
func verifyFresh(secret []byte, header string, body []byte) error {
	var ts, sig string
	for _, kv := range strings.Split(header, ",") {
		if v, ok := strings.CutPrefix(kv, "t="); ok {
			ts = v
		} else if v, ok := strings.CutPrefix(kv, "v1="); ok {
			sig = v
		}
	}
	if _, err := strconv.ParseInt(ts, 10, 64); err != nil || sig == "" {
		return fmt.Errorf("header %q: no t or v1", header)
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts + "." + string(body)))
	if want := hex.EncodeToString(mac.Sum(nil)); sig != want {
		return fmt.Errorf("signature %s, want %s", sig, want)
	}
	return nil
}

func ok200(int) int { return 200 }

// value is a counter's value.
func value(c prometheus.Counter) float64 {
	var m dto.Metric
	_ = c.Write(&m)
	return m.GetCounter().GetValue()
}

// delivered are the events of the POSTs answered 2xx, in order.
func (r *receiver) delivered() []protocol.WebhookEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []protocol.WebhookEvent
	for _, p := range r.posts {
		if p.status/100 == 2 {
			out = append(out, p.batch.Events...)
		}
	}
	return out
}

func (r *receiver) all() []post {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]post(nil), r.posts...)
}

// waitDelivered waits until the receiver has n delivered events, and checks each id came once.
func (r *receiver) waitDelivered(n int) []protocol.WebhookEvent {
	r.t.Helper()
	var evs []protocol.WebhookEvent
	poll.Until(r.t, 10*time.Second, func() error {
		if evs = r.delivered(); len(evs) < n {
			return fmt.Errorf("%d events delivered, want %d", len(evs), n)
		}
		return nil
	})
	seen := map[string]int{}
	for _, e := range evs {
		if seen[e.ID]++; seen[e.ID] == 2 {
			r.t.Errorf("event %s delivered twice", e.ID)
		}
	}
	return evs
}

type hookEnv struct {
	broker *memory.Node
	m      *metrics.Metrics
}

func newHookEnv(t *testing.T) *hookEnv {
	b := memory.NewBroker(memory.Config{})
	t.Cleanup(b.Close)
	n := b.Node("wh")
	t.Cleanup(func() { _ = n.Close() })
	return &hookEnv{broker: n, m: metrics.New()}
}

func (e *hookEnv) start(t *testing.T, url string, change func(*WebhooksConfig)) *Webhooks {
	t.Helper()
	cfg := WebhooksConfig{URL: url, Format: GatewayWebhookFormat{Secret: []byte(hookSecret)},
		Events: []string{protocol.EventConnected, protocol.EventDisconnected, protocol.EventSubscribed},
		Batch:  10, BatchWait: time.Hour, Timeout: 5 * time.Second, RetryInitial: time.Millisecond, RetryMax: 10 * time.Millisecond,
		RetryBudget: time.Minute, Broker: e.broker, Metrics: e.m, Log: slog.New(slog.DiscardHandler)}
	if change != nil {
		change(&cfg)
	}
	w := NewWebhooks(cfg)
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	return w
}

// emit publishes events of typ on the events topic as a node does; it returns their ids.
func (e *hookEnv) emit(t *testing.T, typ string, n int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		ev := protocol.Event{Type: typ, User: "u", Session: fmt.Sprintf("s%d", i), Node: "n1", At: time.Now().UTC()}
		payload, _ := json.Marshal(ev)
		msg := message.NewMessage(watermill.NewUUID(), payload)
		if err := e.broker.Publish(protocol.TopicEvents, msg); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, msg.UUID)
	}
	return ids
}

// TestWebhooksBatch: 20 events with batch 10 (and a wait far longer than the test) go in two
// POSTs of exactly 10, signed, each event with its message's id, in time order within a batch.
func TestWebhooksBatch(t *testing.T) {
	e := newHookEnv(t)
	r := newReceiver(t, ok200)
	e.start(t, r.srv.URL, nil)
	ids := e.emit(t, protocol.EventConnected, 20)
	evs := r.waitDelivered(20)
	got := map[string]bool{}
	for _, ev := range evs {
		got[ev.ID] = true
		if ev.Type != protocol.EventConnected || ev.User != "u" || ev.Node != "n1" || ev.At.IsZero() {
			t.Errorf("event %+v", ev)
		}
	}
	for _, id := range ids {
		if !got[id] {
			t.Errorf("event %s not delivered", id)
		}
	}
	posts := r.all()
	if len(posts) != 2 {
		t.Fatalf("%d POSTs, want 2 of 10", len(posts))
	}
	for _, p := range posts {
		if len(p.batch.Events) != 10 || p.batch.ID == "" || p.header.Get("X-Gateway-Batch") != p.batch.ID ||
			p.header.Get("Content-Type") != "application/json" {
			t.Errorf("batch %s (header %q): %d events", p.batch.ID, p.header.Get("X-Gateway-Batch"), len(p.batch.Events))
		}
		for i := 1; i < len(p.batch.Events); i++ {
			if p.batch.Events[i].At.Before(p.batch.Events[i-1].At) {
				t.Errorf("batch %s: event %d is older than the one before", p.batch.ID, i)
			}
		}
	}
	poll.Until(t, 10*time.Second, func() error { // counted once the 2xx is read, after the receiver has it
		var h dto.Metric
		_ = e.m.WebhookBatchLatency.Write(&h)
		if got, n := value(e.m.WebhookDelivered), h.GetHistogram().GetSampleCount(); got != 20 || n != 2 {
			return fmt.Errorf("delivered metric %v, want 20; latency histogram %d samples, want 2 batches", got, n)
		}
		return nil
	})
}

// TestWebhooksBatchWait: fewer events than a batch holds are POSTed once batch_wait has passed.
func TestWebhooksBatchWait(t *testing.T) {
	e := newHookEnv(t)
	r := newReceiver(t, ok200)
	e.start(t, r.srv.URL, func(c *WebhooksConfig) { c.Batch, c.BatchWait = 100, 20*time.Millisecond })
	e.emit(t, protocol.EventSubscribed, 3)
	r.waitDelivered(3)
}

// TestWebhooksFilter: event types not in Events, and payloads that are no event, are acked and
// never POSTed; the events after them are.
func TestWebhooksFilter(t *testing.T) {
	e := newHookEnv(t)
	r := newReceiver(t, ok200)
	e.start(t, r.srv.URL, func(c *WebhooksConfig) { c.Batch, c.BatchWait = 1, 0 })
	e.emit(t, protocol.EventNodeAlive, 5)
	e.emit(t, protocol.EventUnsubscribed, 5)
	if err := e.broker.Publish(protocol.TopicEvents, message.NewMessage(watermill.NewUUID(), []byte("not json"))); err != nil {
		t.Fatal(err)
	}
	ids := e.emit(t, protocol.EventDisconnected, 2)
	evs := r.waitDelivered(2)
	if len(evs) != 2 || evs[0].ID != ids[0] || evs[1].ID != ids[1] {
		t.Fatalf("delivered %+v, want only the 2 disconnected events %v", evs, ids)
	}
}

// TestWebhooksRetry: a receiver that fails 3 POSTs gets the batch on the 4th, the same batch
// (same id, same events), and each event once; the failed attempts are counted.
func TestWebhooksRetry(t *testing.T) {
	e := newHookEnv(t)
	r := newReceiver(t, func(n int) int {
		if n <= 3 {
			return http.StatusServiceUnavailable
		}
		return 200
	})
	e.start(t, r.srv.URL, func(c *WebhooksConfig) { c.Batch = 4 })
	e.emit(t, protocol.EventConnected, 4)
	r.waitDelivered(4)
	posts := r.all()
	if len(posts) != 4 {
		t.Fatalf("%d POSTs, want 4", len(posts))
	}
	for _, p := range posts[1:] {
		if p.batch.ID != posts[0].batch.ID || len(p.batch.Events) != 4 {
			t.Errorf("attempt of batch %s with %d events, want batch %s again", p.batch.ID, len(p.batch.Events), posts[0].batch.ID)
		}
	}
	if got := value(e.m.WebhookFailed); got != 3 {
		t.Errorf("failed attempts %v, want 3", got)
	}
}

// TestWebhooksPoison: a batch that still fails when its budget is spent goes to the poison topic
// with the reason; its events are acked (never POSTed again) and the next events are delivered.
func TestWebhooksPoison(t *testing.T) {
	e := newHookEnv(t)
	down := true // read and changed under r.mu
	r := newReceiver(t, func(int) int {
		if down {
			return http.StatusInternalServerError
		}
		return 200
	})
	poisoned, err := e.broker.Subscribe(t.Context(), "poison")
	if err != nil {
		t.Fatal(err)
	}
	e.start(t, r.srv.URL, func(c *WebhooksConfig) {
		c.Batch, c.BatchWait, c.RetryBudget, c.PoisonTopic = 3, 10*time.Millisecond, 50*time.Millisecond, "poison"
	})
	ids := e.emit(t, protocol.EventSubscribed, 3)
	want := map[string]bool{ids[0]: true, ids[1]: true, ids[2]: true}
	for range 3 {
		select {
		case m := <-poisoned:
			m.Ack()
			if !want[m.UUID] || !strings.Contains(m.Metadata.Get(middleware.ReasonForPoisonedKey), "500") ||
				m.Metadata.Get(middleware.PoisonedHandlerKey) != WebhooksHandler {
				t.Errorf("poisoned %s %v", m.UUID, m.Metadata)
			}
			delete(want, m.UUID)
		case <-time.After(10 * time.Second):
			t.Fatalf("not poisoned: %v", want)
		}
	}
	poll.Until(t, 10*time.Second, func() error { // counted just after the poison topic took it
		if got := value(e.m.WebhookPoisoned); got != 3 {
			return fmt.Errorf("poisoned metric %v, want 3", got)
		}
		return nil
	})
	r.mu.Lock()
	down = false
	r.mu.Unlock()
	next := e.emit(t, protocol.EventSubscribed, 1)
	evs := r.waitDelivered(1)
	if len(evs) != 1 || evs[0].ID != next[0] {
		t.Fatalf("delivered %+v, want only %s (the poisoned events are not tried again)", evs, next[0])
	}
}

// TestWebhooksCloseLeavesBatchToOthers: a node closed while its batch fails acks nothing: the
// events go to the group's next member, which delivers each once.
func TestWebhooksCloseLeavesBatchToOthers(t *testing.T) {
	e := newHookEnv(t)
	down := newReceiver(t, func(int) int { return http.StatusBadGateway })
	first := e.start(t, down.srv.URL, func(c *WebhooksConfig) { c.Batch = 5 })
	ids := e.emit(t, protocol.EventConnected, 5)
	poll.Until(t, 10*time.Second, func() error {
		if n := len(down.all()); n < 2 {
			return fmt.Errorf("%d attempts", n)
		}
		return nil
	})
	first.Close()
	first.Close()
	up := newReceiver(t, ok200)
	e.start(t, up.srv.URL, func(c *WebhooksConfig) { c.Batch = 5 })
	evs := up.waitDelivered(5)
	got := map[string]bool{}
	for _, ev := range evs {
		got[ev.ID] = true
	}
	for _, id := range ids {
		if !got[id] {
			t.Errorf("event %s lost", id)
		}
	}
}

// TestWebhooksStartClose: nil webhooks (no URL) do nothing; Start and Close are safe twice, and
// Start after Close starts nothing.
func TestWebhooksStartClose(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	if w := NewWebhooks(WebhooksConfig{}); w != nil {
		t.Fatal("webhooks without a URL")
	}
	var none *Webhooks
	if err := none.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	none.Close()
	e := newHookEnv(t)
	w := e.start(t, "http://127.0.0.1:1/", nil)
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	w.Close()
	w.Close()
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	w.Close()
}

// downBroker is a broker that is never reachable; it counts the subscribe attempts.
type downBroker struct{ tries atomic.Int64 }

func (d *downBroker) SubscribeGroup(context.Context, string, string) (<-chan *message.Message, error) {
	d.tries.Add(1)
	return nil, fmt.Errorf("down: %w", transports.ErrUnavailable)
}
func (*downBroker) Publish(string, ...*message.Message) error { return transports.ErrUnavailable }

// TestWebhooksCloseWhileStarting: Start waits while the broker is unavailable, and Close ends
// that wait (Start then fails) rather than waiting for it.
func TestWebhooksCloseWhileStarting(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	broker := &downBroker{}
	w := NewWebhooks(WebhooksConfig{URL: "http://127.0.0.1:1/", Format: GatewayWebhookFormat{Secret: []byte(hookSecret)},
		Batch: 2, Broker: broker, Metrics: metrics.New(), Log: slog.New(slog.DiscardHandler)})
	errc := make(chan error, 1)
	go func() { errc <- w.Start(context.Background()) }()
	poll.Until(t, 10*time.Second, func() error { // Start is waiting, trying again
		if n := broker.tries.Load(); n < 2 {
			return fmt.Errorf("%d subscribe attempts", n)
		}
		return nil
	})
	w.Close()
	if err := <-errc; err == nil || !errors.Is(err, transports.ErrUnavailable) {
		t.Fatalf("Start: %v, want it to give up with the broker's error", err)
	}
}
