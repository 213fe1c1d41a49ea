package jetstream

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
)

// Channel subscriptions: the stream republishes (RePublish) every message it stored on
// P.live.SafeName(channel), with its stream sequence (Nats-Sequence) and the sequence of the
// channel's message before it (Nats-Last-Sequence, 0 for none). A node reads a channel through
// one core NATS subscription on that subject, delivering into the node's one shared channel
// (fan), which one dispatcher goroutine reads: an idle channel subscription holds no goroutine,
// no consumer on the server and no timer. Each message is handed on only when it follows the
// last one handed on (its Nats-Last-Sequence is that one's sequence): a republished message the
// node missed (disconnected, nats.go dropped it, the subscriber's queue was full) shows as a
// gap, and the subscription then reads the stream itself (catchUp) from its last message until
// it has caught up with what was republished meanwhile. A reconnect, a slow-consumer report
// and a recreated stream make the node check each subscription's channel for a newer message
// (probe). The stream's retention is checked as Replay checks it: a subscription whose catch-up
// would start before the stream's first message ends (its clients resume and learn what was
// lost) rather than deliver past a gap.

// liveQueue is how many messages a channel subscription queues for its subscriber before it
// falls back to reading the stream at the subscriber's pace (as many as a pull of the ordered
// consumer it replaces had in flight).
const liveQueue = 64

// liveChunk is how many messages a catch-up reads from the stream at once.
const liveChunk = 256

// probeWorkers bounds the requests of a probe of every subscription (after a reconnect).
const probeWorkers = 8

// Headers of a republished message.
const (
	hdrStream   = "Nats-Stream"
	hdrSequence = "Nats-Sequence"
	hdrLastSeq  = "Nats-Last-Sequence"
	hdrTime     = "Nats-Time-Stamp" // nats-server 2.10+
)

// liveSubject is the subject the channel stream republishes subject's messages on.
func (b *Broker) liveSubject(channel string) string {
	return b.cfg.Prefix + ".live." + transports.SafeName(channel)
}

// rePublish is the channel stream's RePublish.
func (b *Broker) rePublish() *jetstream.RePublish {
	return &jetstream.RePublish{Source: b.cfg.Prefix + ".ch.>", Destination: b.cfg.Prefix + ".live.>"}
}

// republishes reports whether a stream's configuration republishes as the node needs.
func (b *Broker) republishes(cfg jetstream.StreamConfig) bool {
	rp, want := cfg.RePublish, b.rePublish()
	return rp != nil && rp.Source == want.Source && rp.Destination == want.Destination && !rp.HeadersOnly
}

// liveSub is one channel subscription (SubscribeFunc on a channel topic).
type liveSub struct {
	b                 *Broker
	topic             string
	subject           string // the channel's subject in the stream
	transports.Ending        // Cancel ends the subscription
	relay             *transports.Relay
	ns                *nats.Subscription

	mu    sync.Mutex
	epoch string // the stream lineage last refers to
	last  uint64 // stream sequence of the last message queued for the subscriber (or the start)
	// catching: a catch-up runs (or the subscription is being set up); the dispatcher only
	// records in want the highest sequence it saw, which the catch-up reads up to.
	catching bool
	want     uint64
}

// subscribeLive is SubscribeFunc on a channel topic.
func (b *Broker) subscribeLive(ctx context.Context, topic, channel string, deliver func(*message.Message) bool, ended func()) error {
	if b.closed() {
		return transports.ErrClosed
	}
	if err := b.checkUp(); err != nil {
		return err
	}
	if !b.ready.Load() {
		b.signal()
		return fmt.Errorf("jetstream: %w: streams not provisioned yet", transports.ErrUnavailable)
	}
	subject, _, err := b.route(topic)
	if err != nil {
		return err
	}
	ls := &liveSub{b: b, topic: topic, subject: subject, catching: true}
	ls.Init(ctx)
	ls.relay = transports.NewRelay(ls.Context(), ls.Cancel, transports.RelayConfig{Deliver: deliver, Limit: liveQueue, WG: &b.wg})
	b.subMu.Lock()
	if b.closed() {
		b.subMu.Unlock()
		ls.Cancel()
		return transports.ErrClosed
	}
	b.wg.Add(1) // done once the subscription ended
	b.liveMu.Lock()
	ns, err := b.nc.ChanSubscribe(b.liveSubject(channel), b.fan)
	if err == nil {
		ls.ns = ns
		b.live[ns] = ls
	}
	b.liveMu.Unlock()
	b.subMu.Unlock()
	if err != nil {
		ls.Cancel()
		b.wg.Done()
		return unavailable("subscribe", err)
	}
	fail := func(err error) error {
		ls.Cancel()
		ls.stop()
		b.wg.Done()
		return err
	}
	// The SUB reaches the server before the channel's last message is read: every message
	// stored after that read is republished to this subscription. The requests run on a
	// goroutine of their own, which ends with them: decoding their answers needs a deeper stack
	// than the caller's (a connection's goroutine) would otherwise keep for as long as it lives.
	type start struct {
		epoch string
		last  uint64
		err   error
	}
	started := make(chan start, 1)
	go func() {
		var st start
		defer func() { started <- st }()
		ctx, cancel := context.WithTimeout(ls.Context(), b.cfg.PublishTimeout)
		defer cancel()
		if st.err = b.nc.FlushWithContext(ctx); st.err != nil {
			return
		}
		var s jetstream.Stream
		if s, st.epoch, st.err = b.channelStream(ctx); st.err != nil {
			return
		}
		st.last, st.err = lastOf(ctx, s, subject)
	}()
	st := <-started
	if st.err != nil {
		return fail(unavailable("subscribe", st.err))
	}
	epoch, last := st.epoch, st.last
	ls.mu.Lock()
	ls.epoch, ls.last = epoch, last
	catchUp := ls.want > last // republished after the read, before the subscription was set
	ls.catching = catchUp
	ls.mu.Unlock()
	// The node's Close ends it (endLive): it is in b.live from now until its end.
	ls.Start(ctx, func() {
		ls.stop()
		ended()
		b.wg.Done()
	})
	if catchUp {
		b.goCatchUp(ls)
	}
	return nil
}

// channelStream is the channel stream and its epoch as the node knows them (a stream info the
// first time only): a subscription does not need a fresh stream info, since a recreated stream
// is found by the keeper and its subscriptions then restart on it (probe).
func (b *Broker) channelStream(ctx context.Context) (jetstream.Stream, string, error) {
	b.lineMu.Lock()
	s, epoch := b.chStream, b.epochs[b.channels].epoch
	b.lineMu.Unlock()
	if s != nil && epoch != "" {
		return s, epoch, nil
	}
	s, err := b.js.Stream(ctx, b.channels)
	if err != nil {
		return nil, "", err
	}
	epoch = b.noteStream(s.CachedInfo())
	b.lineMu.Lock()
	b.chStream = s // its methods name the stream, whatever its lineage
	b.lineMu.Unlock()
	return s, epoch, nil
}

// lastOf is the stream sequence of subject's last message in s, 0 when it has none.
func lastOf(ctx context.Context, s jetstream.Stream, subject string) (uint64, error) {
	m, err := s.GetLastMsgForSubject(ctx, subject)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return 0, nil
	case err != nil:
		return 0, err
	}
	return m.Sequence, nil
}

// stop unsubscribes and waits for the message being delivered, if any: nothing is delivered
// after it returns.
func (ls *liveSub) stop() {
	_ = ls.ns.Unsubscribe()
	ls.b.liveMu.Lock()
	delete(ls.b.live, ls.ns)
	ls.b.liveMu.Unlock()
	ls.relay.Close()
}

// dispatch hands each republished message to its subscription, and probes every subscription
// when the channel stream was found recreated, until Close.
func (b *Broker) dispatch() {
	defer b.wg.Done()
	lineage := b.lineageChanged(b.channels)
	for {
		select {
		case <-b.ctx.Done():
			return
		case nm := <-b.fan:
			if b.dropLive != nil && b.dropLive(nm) {
				continue
			}
			b.liveMu.Lock()
			ls := b.live[nm.Sub]
			b.liveMu.Unlock()
			if ls != nil { // else unsubscribed meanwhile
				ls.handle(nm)
			}
		case <-lineage:
			lineage = b.lineageChanged(b.channels)
			b.goProbeAll()
		}
	}
}

// handle takes one republished message.
func (ls *liveSub) handle(nm *nats.Msg) {
	if ls.Context().Err() != nil || nm.Header.Get(hdrStream) != ls.b.channels {
		return // not the stream's (someone published on the subject)
	}
	seq, err1 := strconv.ParseUint(nm.Header.Get(hdrSequence), 10, 64)
	prev, err2 := strconv.ParseUint(nm.Header.Get(hdrLastSeq), 10, 64)
	if err1 != nil || err2 != nil || seq == 0 {
		return
	}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	switch {
	case ls.catching:
		ls.want = max(ls.want, seq)
	case seq <= ls.last:
		if seq < ls.last {
			ls.b.signal() // already handed on, or a recreated stream: let the keeper look
		}
	case prev != ls.last: // a message of the channel was missed
		ls.startCatchUp(seq)
	default:
		m := ls.b.codec.decode(nm.Header, nm.Data, ls.b.channels, seq)
		if ts := nm.Header.Get(hdrTime); ts != "" {
			if t, err := time.Parse(time.RFC3339Nano, ts); err == nil {
				m.Metadata.Set(protocol.MetaStoredAt, strconv.FormatInt(t.UnixMilli(), 10))
			}
		}
		if !ls.relay.Offer(m, 0) { // the subscriber is behind: read the stream at its pace
			ls.startCatchUp(seq)
			return
		}
		ls.last = seq
	}
}

// startCatchUp starts a catch-up up to sequence want at least. ls.mu is held.
func (ls *liveSub) startCatchUp(want uint64) {
	ls.want = max(ls.want, want)
	if ls.catching {
		return
	}
	ls.catching = true
	ls.b.goCatchUp(ls)
}

// goCatchUp runs ls's catch-up on a goroutine of the broker's.
func (b *Broker) goCatchUp(ls *liveSub) { b.goOwned(ls.catchUp) }

// goOwned runs fn on a goroutine the broker owns (Close waits for it), unless the broker is
// closed.
func (b *Broker) goOwned(fn func()) {
	b.subMu.Lock()
	defer b.subMu.Unlock()
	if b.closed() {
		return
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		fn()
	}()
}

// catchUp reads the channel from the stream after ls.last until it has read what was
// republished meanwhile (want), retrying while the broker cannot answer. When the stream no
// longer holds the message after ls.last, it ends the subscription once what is queued was
// delivered.
func (ls *liveSub) catchUp() {
	delay := 250 * time.Millisecond
	for ls.Context().Err() == nil {
		done, gap, err := ls.catchStep()
		switch {
		case ls.Context().Err() != nil:
			return
		case gap:
			ls.b.log.Warn("jetstream: the stream dropped messages this node had not read yet, closing the channel subscription; its clients resume",
				"topic", ls.topic)
			ls.relay.Finish()
			return
		case err != nil:
			ls.b.log.Debug("jetstream: channel catch-up, retrying", "topic", ls.topic, "error", err)
			t := time.NewTimer(delay)
			select {
			case <-ls.Context().Done():
			case <-t.C:
			}
			t.Stop()
			delay = min(2*delay, 5*time.Second)
		case done:
			return
		default:
			delay = 250 * time.Millisecond
		}
	}
}

// catchStep reads up to liveChunk messages of the channel after ls.last and queues them for the
// subscriber (waiting for room). done: nothing more to read; the dispatcher hands messages on
// again. gap: the stream dropped the message after ls.last.
func (ls *liveSub) catchStep() (done, gap bool, err error) {
	b := ls.b
	ctx, cancel := context.WithTimeout(ls.Context(), 4*b.cfg.PublishTimeout)
	defer cancel()
	info, epoch, err := b.streamInfo(ctx, b.channels)
	if err != nil {
		return false, false, err
	}
	ls.mu.Lock()
	if epoch != ls.epoch { // recreated: everything of the new stream follows the old one's
		ls.epoch, ls.last, ls.want = epoch, max(info.State.FirstSeq, 1)-1, 0
	}
	last := ls.last
	ls.mu.Unlock()
	if last+1 < info.State.FirstSeq {
		return false, true, nil
	}
	msgs, seqs, err := b.readChunk(ctx, ls.subject, last+1, liveChunk)
	if err != nil {
		return false, false, err
	}
	after, epoch2, err := b.streamInfo(ctx, b.channels)
	switch {
	case err != nil:
		return false, false, err
	case epoch2 != epoch:
		return false, false, nil // the next step starts on the new stream
	case last+1 < after.State.FirstSeq: // trimmed while reading: messages may have gone
		return false, true, nil
	}
	for i, m := range msgs {
		if !ls.relay.Offer(m, time.Duration(1<<62)) || ls.Context().Err() != nil {
			return false, false, nil
		}
		ls.mu.Lock()
		ls.last = seqs[i]
		ls.mu.Unlock()
	}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if len(msgs) == liveChunk || (len(msgs) > 0 && ls.want > ls.last) {
		return false, false, nil
	}
	// Caught up (or what was wanted is not in the stream anymore: the next message's
	// Nats-Last-Sequence tells).
	ls.catching, ls.want = false, 0
	return true, false, nil
}

// readChunk returns, oldest first, up to n messages of subject from stream sequence start on,
// with their sequences, read through an ephemeral pull consumer (deleted when done).
func (b *Broker) readChunk(ctx context.Context, subject string, start uint64, n int) ([]*message.Message, []uint64, error) {
	cons, done, err := b.readConsumer(ctx, "catch-up", subject, start)
	if err != nil {
		return nil, nil, err
	}
	defer done()
	want := int(min(cons.CachedInfo().NumPending, uint64(n)))
	var msgs []*message.Message
	var seqs []uint64
	for len(msgs) < want {
		batch, err := cons.FetchNoWait(want - len(msgs))
		if err != nil {
			return nil, nil, unavailable("catch-up", err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			msgs = append(msgs, b.codec.fromJetStream(m))
			seqs = append(seqs, md.Sequence.Stream)
		}
		if err := batch.Error(); err != nil {
			return nil, nil, unavailable("catch-up", err)
		}
		if got == 0 {
			break // trimmed meanwhile: the caller's check says so
		}
	}
	return msgs, seqs, nil
}

// probe starts a catch-up of ls when its channel has a message newer than ls.last in the stream
// s (the node may have missed its republication), or when the stream was recreated.
func (ls *liveSub) probe(ctx context.Context, s jetstream.Stream, epoch string) error {
	last, err := lastOf(ctx, s, ls.subject)
	if err != nil {
		return err
	}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	switch {
	case epoch != ls.epoch && last == 0 && !ls.catching: // a new stream without the channel
		ls.epoch, ls.last = epoch, 0
	case epoch != ls.epoch || last > ls.last:
		ls.startCatchUp(last)
	}
	return nil
}

// goProbeAll probes every channel subscription, on a goroutine of the broker's: after a
// reconnect (core NATS drops what is republished while the node is disconnected) and when the
// channel stream was found recreated.
func (b *Broker) goProbeAll() { b.goOwned(b.probeAll) }

// liveSubs are the channel subscriptions of the node.
func (b *Broker) liveSubs() []*liveSub {
	b.liveMu.Lock()
	defer b.liveMu.Unlock()
	subs := make([]*liveSub, 0, len(b.live))
	for _, ls := range b.live {
		subs = append(subs, ls)
	}
	return subs
}

// endLive ends every channel subscription of the node (Close, once b.ctx is done: no new one is
// added to b.live after that). A subscription ends with its own context otherwise: one
// registration on b.ctx per subscription would cost an idle node's every channel a few hundred
// bytes.
func (b *Broker) endLive() {
	for _, ls := range b.liveSubs() {
		ls.Cancel()
	}
}

func (b *Broker) probeAll() {
	subs := b.liveSubs()
	if len(subs) == 0 {
		return
	}
	delay := 250 * time.Millisecond
	for b.ctx.Err() == nil {
		ctx, cancel := context.WithTimeout(b.ctx, b.cfg.PublishTimeout)
		s, err := b.js.Stream(ctx, b.channels)
		cancel()
		if err == nil {
			epoch := b.noteStream(s.CachedInfo())
			subs = b.probeEach(s, epoch, subs)
			if len(subs) == 0 {
				return
			}
		}
		b.log.Debug("jetstream: cannot check channel subscriptions after a reconnect, retrying", "left", len(subs), "error", err)
		t := time.NewTimer(delay)
		select {
		case <-b.ctx.Done():
		case <-t.C:
		}
		t.Stop()
		delay = min(2*delay, b.cfg.MaxReconnectWait)
	}
}

// probeEach probes subs, probeWorkers at a time, and returns those it could not.
func (b *Broker) probeEach(s jetstream.Stream, epoch string, subs []*liveSub) []*liveSub {
	var mu sync.Mutex
	var failed []*liveSub
	var wg sync.WaitGroup
	next := make(chan *liveSub)
	for range probeWorkers {
		wg.Go(func() {
			for ls := range next {
				if ls.Context().Err() != nil {
					continue
				}
				ctx, cancel := context.WithTimeout(ls.Context(), b.cfg.PublishTimeout)
				err := ls.probe(ctx, s, epoch)
				cancel()
				if err != nil && ls.Context().Err() == nil {
					mu.Lock()
					failed = append(failed, ls)
					mu.Unlock()
				}
			}
		})
	}
	for _, ls := range subs {
		next <- ls
	}
	close(next)
	wg.Wait()
	return failed
}

// slowConsumer probes the channel subscription of which nats.go dropped messages.
func (b *Broker) slowConsumer(sub *nats.Subscription) {
	b.liveMu.Lock()
	ls := b.live[sub]
	b.liveMu.Unlock()
	if ls == nil {
		return
	}
	b.goOwned(func() {
		ctx, cancel := context.WithTimeout(ls.Context(), b.cfg.PublishTimeout)
		defer cancel()
		s, err := b.js.Stream(ctx, b.channels)
		if err == nil {
			err = ls.probe(ctx, s, b.noteStream(s.CachedInfo()))
		}
		if err != nil && ls.Context().Err() == nil {
			ls.mu.Lock()
			ls.startCatchUp(0) // it retries until it can read
			ls.mu.Unlock()
		}
	})
}
