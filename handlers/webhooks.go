package handlers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/cenkalti/backoff/v5"

	"github.com/wsgateway/gateway/internal/metrics"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/router/middleware"
	"github.com/wsgateway/gateway/transports"
)

// WebhooksGroup is the consumer group every node's webhooks share on the events topic, so that
// each event is POSTed by one node of the cluster.
const WebhooksGroup = "webhooks"

// WebhooksHandler names the webhooks in the poison topic's PoisonedHandlerKey.
const WebhooksHandler = "webhooks"

// WebhookFormat is how a batch is encoded and signed for the receiver: the gateway's own
// (GatewayWebhookFormat) or another receiver's convention (Pusher's, say) over the same delivery.
type WebhookFormat interface {
	// Encode returns the body of the POST of batch and sets its headers (content type, signature),
	// signed at now. It is called again for each attempt of a batch, with the same batch.
	Encode(batch protocol.WebhookBatch, now time.Time, h http.Header) ([]byte, error)
}

// GatewayWebhookFormat is the gateway's webhook format: the batch as JSON
// (protocol.WebhookBatch), signed in protocol.WebhookSignatureHeader with Secret.
type GatewayWebhookFormat struct {
	Secret []byte
}

// Encode implements WebhookFormat.
func (f GatewayWebhookFormat) Encode(batch protocol.WebhookBatch, now time.Time, h http.Header) ([]byte, error) {
	body, err := json.Marshal(batch)
	if err != nil {
		return nil, err
	}
	h.Set("Content-Type", "application/json")
	h.Set(protocol.WebhookBatchHeader, batch.ID)
	h.Set(protocol.WebhookSignatureHeader, protocol.WebhookSignatureValue(f.Secret, now, body))
	return body, nil
}

// WebhookBroker is what the webhooks need of the broker (transports.Broker).
type WebhookBroker interface {
	SubscribeGroup(ctx context.Context, topic, group string) (<-chan *message.Message, error)
	Publish(topic string, messages ...*message.Message) error
}

// WebhooksConfig is what Webhooks need.
type WebhooksConfig struct {
	URL    string
	Format WebhookFormat // how a batch is encoded and signed
	Events []string      // event types POSTed; the others are acked and dropped
	// Accept, when set, is asked of each event of those types too: false acks and drops it (the
	// events of one Pusher app, say). Called on the feeding goroutines, one event at a time each.
	Accept func(protocol.Event) bool
	// Batch is the most events per POST, and the group subscriptions the node holds (each holds
	// one unacknowledged event).
	Batch        int
	BatchWait    time.Duration // longest a batch waits to fill once it has an event
	Timeout      time.Duration // of one POST
	RetryInitial time.Duration // first backoff after a failed POST
	RetryMax     time.Duration // longest backoff
	RetryBudget  time.Duration // how long a batch is tried before its events are poisoned
	Group        string        // consumer group; "" is WebhooksGroup
	Broker       WebhookBroker
	PoisonTopic  string       // logical topic of events whose batch ran out of budget; "": dropped (logged)
	Client       *http.Client // nil: a client of its own
	Metrics      *metrics.Metrics
	Log          *slog.Logger
}

// Webhooks POSTs lifecycle events to the backend: every node runs them, consuming the events
// topic in one consumer group, so each event is POSTed by one node. Events are batched (Batch,
// BatchWait), POSTed (Format), retried with exponential backoff and jitter for RetryBudget, then
// sent to the poison topic. An event's message is acked only once its batch got a 2xx (or went
// to the poison topic): a node that dies with a batch leaves its events to another node.
//
// The broker hands a group subscription's next message only after the previous was acked, so
// the node holds Batch subscriptions, each feeding one event at a time to the one goroutine that
// batches and POSTs.
type Webhooks struct {
	cfg    WebhooksConfig
	events map[string]bool
	in     chan pending

	mu      sync.Mutex
	started bool
	closed  bool
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// pending is an event waiting in a batch, with the message to ack.
type pending struct {
	msg *message.Message
	ev  protocol.WebhookEvent
}

// NewWebhooks makes the webhooks; nil when cfg.URL is empty (off). It starts nothing.
func NewWebhooks(cfg WebhooksConfig) *Webhooks {
	if cfg.URL == "" {
		return nil
	}
	if cfg.Group == "" {
		cfg.Group = WebhooksGroup
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{}
	}
	cfg.Batch = max(cfg.Batch, 1)
	w := &Webhooks{cfg: cfg, events: map[string]bool{}, in: make(chan pending)}
	for _, e := range cfg.Events {
		w.events[e] = true
	}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	return w
}

// Start subscribes the group once (so that it exists on the broker and keeps what is published
// from now on), waiting while the broker is unavailable until ctx ends, then starts the other
// subscriptions and the batching goroutine, which Close stops. Safe on nil and twice; after
// Close it does nothing.
func (w *Webhooks) Start(ctx context.Context) error {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.started || w.closed {
		return nil
	}
	first, err := w.subscribe(ctx)
	if err != nil {
		return fmt.Errorf("webhooks: subscribe to the events topic as %q: %w", w.cfg.Group, err)
	}
	w.started = true
	w.wg.Add(1 + w.cfg.Batch)
	go w.run()
	go w.feed(first)
	for range w.cfg.Batch - 1 {
		go w.feed(nil)
	}
	return nil
}

// Close stops the subscriptions and the batching; the events of an unfinished batch are nacked
// (another node takes them). It waits for the goroutines: at most the POST under way, which it
// cancels. Safe on nil and twice.
func (w *Webhooks) Close() {
	if w == nil {
		return
	}
	w.cancel() // first: it ends a Start waiting for the broker, which holds mu
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.wg.Wait()
}

// subscribe subscribes the group, again with backoff while the broker reports it unavailable,
// until ctx or the webhooks end.
func (w *Webhooks) subscribe(ctx context.Context) (<-chan *message.Message, error) {
	bo := &backoff.ExponentialBackOff{InitialInterval: 20 * time.Millisecond, RandomizationFactor: 0.5, Multiplier: 2, MaxInterval: 2 * time.Second}
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	defer context.AfterFunc(w.ctx, stop)()
	for {
		ch, err := w.cfg.Broker.SubscribeGroup(w.ctx, protocol.TopicEvents, w.cfg.Group)
		if err == nil {
			return ch, nil
		}
		if !errors.Is(err, transports.ErrUnavailable) || errors.Is(err, transports.ErrNotStarted) {
			return nil, err
		}
		t := time.NewTimer(bo.NextBackOff())
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w (gave up: %w)", err, ctx.Err())
		}
	}
}

// feed hands the events of one group subscription (ch; nil: subscribe first) to the batching
// goroutine, one at a time (the broker sends the next once this one is acked), subscribing
// again when the subscription ends before Close. Events of types not POSTed are acked here.
func (w *Webhooks) feed(ch <-chan *message.Message) {
	defer w.wg.Done()
	for w.ctx.Err() == nil {
		if ch == nil {
			var err error
			if ch, err = w.subscribe(w.ctx); err != nil {
				if errors.Is(err, transports.ErrClosed) {
					return // the broker is closed: the node is going away
				}
				if w.ctx.Err() == nil {
					w.cfg.Log.Error("webhooks: cannot subscribe to the events topic", "group", w.cfg.Group, "error", err)
					w.pause(time.Second)
				}
				continue
			}
		}
		for msg := range ch {
			p, ok := w.decode(msg)
			if !ok {
				msg.Ack()
				continue
			}
			select {
			case w.in <- p:
			case <-w.ctx.Done():
				msg.Nack()
				return
			}
		}
		ch = nil
	}
}

// pause waits d or until Close.
func (w *Webhooks) pause(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-w.ctx.Done():
	}
}

// decode reads an event; false for one that is not POSTed (a type not in Events, a payload that
// is no event: logged).
func (w *Webhooks) decode(msg *message.Message) (pending, bool) {
	var ev protocol.Event
	if err := json.Unmarshal(msg.Payload, &ev); err != nil || ev.Type == "" {
		w.cfg.Log.Warn("webhooks: event skipped, its payload is no lifecycle event", "message_uuid", msg.UUID, "error", err)
		return pending{}, false
	}
	if !w.events[ev.Type] || (w.cfg.Accept != nil && !w.cfg.Accept(ev)) {
		return pending{}, false
	}
	return pending{msg: msg, ev: protocol.WebhookEvent{ID: msg.UUID, Event: ev}}, true
}

// run collects batches and delivers them, one at a time, until Close.
func (w *Webhooks) run() {
	defer w.wg.Done()
	for {
		batch, ok := w.collect()
		if !ok {
			return
		}
		w.deliver(batch)
	}
}

// collect waits for an event, then for more until the batch is full or BatchWait has passed.
// false when Close came first (what was collected is nacked).
func (w *Webhooks) collect() ([]pending, bool) {
	var batch []pending
	select {
	case p := <-w.in:
		batch = append(batch, p)
	case <-w.ctx.Done():
		return nil, false
	}
	wait := time.NewTimer(w.cfg.BatchWait)
	defer wait.Stop()
	for len(batch) < w.cfg.Batch {
		select {
		case p := <-w.in:
			batch = append(batch, p)
		case <-wait.C:
			return batch, true
		case <-w.ctx.Done():
			nackAll(batch)
			return nil, false
		}
	}
	return batch, true
}

// deliver POSTs batch until a 2xx, with backoff, for at most RetryBudget; then it sends its
// events to the poison topic. On Close the batch is nacked.
func (w *Webhooks) deliver(batch []pending) {
	slices.SortStableFunc(batch, func(a, b pending) int { return a.ev.At.Compare(b.ev.At) })
	body := protocol.WebhookBatch{ID: watermill.NewUUID(), Events: make([]protocol.WebhookEvent, len(batch))}
	for i, p := range batch {
		body.Events[i] = p.ev
	}
	start := time.Now()
	bo := &backoff.ExponentialBackOff{InitialInterval: w.cfg.RetryInitial, RandomizationFactor: 0.5, Multiplier: 2, MaxInterval: w.cfg.RetryMax}
	for attempt := 1; ; attempt++ {
		err := w.post(body)
		if err == nil {
			ackAll(batch)
			w.cfg.Metrics.WebhookDelivered.Add(float64(len(batch)))
			w.cfg.Metrics.WebhookBatchLatency.Observe(time.Since(start).Seconds())
			return
		}
		if w.ctx.Err() != nil {
			nackAll(batch)
			return
		}
		w.cfg.Metrics.WebhookFailed.Inc()
		next := bo.NextBackOff()
		if time.Since(start)+next > w.cfg.RetryBudget {
			w.poison(batch, fmt.Sprintf("webhooks: %d attempts in %s failed, the last: %v", attempt, time.Since(start).Round(time.Millisecond), err))
			return
		}
		w.cfg.Log.Warn("webhooks: POST failed, trying again", "batch", body.ID, "events", len(batch), "attempt", attempt, "retry_in", next, "error", err)
		w.pause(next)
		if w.ctx.Err() != nil {
			nackAll(batch)
			return
		}
	}
}

// post makes one attempt: nil on a 2xx answer.
func (w *Webhooks) post(batch protocol.WebhookBatch) error {
	ctx, cancel := context.WithTimeout(w.ctx, w.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.URL, nil)
	if err != nil {
		return err
	}
	body, err := w.cfg.Format.Encode(batch, time.Now(), req.Header)
	if err != nil {
		return fmt.Errorf("encode: %w", err)
	}
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.ContentLength = int64(len(body))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	resp, err := w.cfg.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // so the connection is reused
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("answered %s", resp.Status)
	}
	return nil
}

// poison sends the events of a batch that ran out of budget to the poison topic with reason,
// and acks them; an event the poison topic did not take is nacked (tried again). Without a
// poison topic they are logged and dropped.
func (w *Webhooks) poison(batch []pending, reason string) {
	ids := make([]string, len(batch))
	for i, p := range batch {
		ids[i] = p.msg.UUID
	}
	if w.cfg.PoisonTopic == "" {
		w.cfg.Log.Error("webhooks: events dropped (no router.poison_topic)", "events", ids, "reason", reason)
		w.cfg.Metrics.WebhookPoisoned.Add(float64(len(batch)))
		ackAll(batch)
		return
	}
	w.cfg.Log.Error("webhooks: events sent to the poison topic", "topic", w.cfg.PoisonTopic, "events", ids, "reason", reason)
	for _, p := range batch {
		c := p.msg.Copy()
		c.Metadata.Set(middleware.ReasonForPoisonedKey, reason)
		c.Metadata.Set(middleware.PoisonedHandlerKey, WebhooksHandler)
		if err := w.cfg.Broker.Publish(w.cfg.PoisonTopic, c); err != nil {
			w.cfg.Log.Error("webhooks: poison topic refused an event; it comes again", "event", p.msg.UUID, "error", err)
			p.msg.Nack()
			continue
		}
		w.cfg.Metrics.WebhookPoisoned.Inc()
		p.msg.Ack()
	}
}

func nackAll(batch []pending) {
	for _, p := range batch {
		p.msg.Nack()
	}
}

func ackAll(batch []pending) {
	for _, p := range batch {
		p.msg.Ack()
	}
}
