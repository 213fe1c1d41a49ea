package jetstream

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsgateway/gateway/protocol"
)

// streamEpoch is what the node knows of one stream's lineage.
type streamEpoch struct {
	created time.Time
	epoch   string
}

// epochOf names a stream's lineage: its name and creation time, which the server keeps across
// restarts and changes when the stream is deleted and created again. Only [A-Za-z0-9-], the
// characters protocol.ParsePosition accepts in an epoch.
func epochOf(stream string, created time.Time) string {
	return fmt.Sprintf("js%08x-%s", crc32.ChecksumIEEE([]byte(stream)), strconv.FormatInt(created.UnixNano(), 36))
}

// noteStream records what a stream info says; a changed creation time means the stream was
// recreated, and the subscriptions on it are restarted (their consumers went with the old one).
func (b *Broker) noteStream(info *jetstream.StreamInfo) string {
	if info == nil {
		return ""
	}
	name := info.Config.Name
	b.lineMu.Lock()
	defer b.lineMu.Unlock()
	b.spans[name] = retentionSpan(info.State)
	old, known := b.epochs[name]
	if known && old.created.Equal(info.Created) {
		return old.epoch
	}
	e := streamEpoch{created: info.Created, epoch: epochOf(name, info.Created)}
	b.epochs[name] = e
	if known {
		b.log.Warn("jetstream: stream was recreated: new epoch, older positions cannot be resumed, subscriptions on it restart",
			"stream", name, "epoch", e.epoch, "old_epoch", old.epoch)
		if ch, ok := b.lineage[name]; ok {
			close(ch)
			delete(b.lineage, name)
		}
	}
	return e.epoch
}

// retentionSpan is how much time a stream's messages span, from the oldest kept to the newest:
// about how long a message stays before retention drops it, once the stream is full.
func retentionSpan(st jetstream.StreamState) time.Duration {
	if st.Msgs < 2 {
		return 0
	}
	return st.LastTime.Sub(st.FirstTime)
}

// streamSpan is the retentionSpan of the stream's info the node fetched last (every
// CheckInterval at least), and whether there is one.
func (b *Broker) streamSpan(stream string) (time.Duration, bool) {
	b.lineMu.Lock()
	defer b.lineMu.Unlock()
	span, ok := b.spans[stream]
	return span, ok
}

// cachedEpoch is the last known epoch of a stream, "" when none is known yet.
func (b *Broker) cachedEpoch(stream string) string {
	b.lineMu.Lock()
	defer b.lineMu.Unlock()
	return b.epochs[stream].epoch
}

// lineageChanged returns a channel that is closed when stream is found recreated; nil (never
// closed) for "" (core NATS).
func (b *Broker) lineageChanged(stream string) <-chan struct{} {
	if stream == "" {
		return nil
	}
	b.lineMu.Lock()
	defer b.lineMu.Unlock()
	ch, ok := b.lineage[stream]
	if !ok {
		ch = make(chan struct{})
		b.lineage[stream] = ch
	}
	return ch
}

// streamInfo fetches a stream's info and notes its lineage.
func (b *Broker) streamInfo(ctx context.Context, stream string) (*jetstream.StreamInfo, string, error) {
	s, err := b.js.Stream(ctx, stream)
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			b.ready.Store(false)
			b.signal()
		}
		return nil, "", unavailable("stream info", err)
	}
	info := s.CachedInfo()
	return info, b.noteStream(info), nil
}

func (b *Broker) historyTopic(topic string) (subject string, err error) {
	if err := b.usable(); err != nil {
		return "", err
	}
	if !protocol.IsChannelTopic(topic) {
		return "", fmt.Errorf("jetstream: %q is not a channel topic, it has no history", topic)
	}
	subject, _, err = b.route(topic)
	return subject, err
}

// Last implements transports.History: the stream sequence of the newest message of the channel,
// or, when it has none, the stream's last sequence (any point of the stream is a valid start,
// since Replay reads only the channel's subject).
func (b *Broker) Last(ctx context.Context, topic string) (protocol.Position, error) {
	subject, err := b.historyTopic(topic)
	if err != nil {
		return protocol.Position{}, err
	}
	s, err := b.js.Stream(ctx, b.channels)
	if err != nil {
		return protocol.Position{}, unavailable("last", err)
	}
	info := s.CachedInfo()
	epoch := b.noteStream(info)
	last, err := s.GetLastMsgForSubject(ctx, subject)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return protocol.Position{Epoch: epoch, Lo: info.State.LastSeq}, nil
	case err != nil:
		return protocol.Position{}, unavailable("last", err)
	}
	return protocol.Position{Epoch: epoch, Lo: last.Sequence}, nil
}

// replayChunk is how many messages one pull request asks for during a replay.
const replayChunk = 256

// Replay implements transports.History. It reads the channel's subject from since.Lo+1 through an
// ephemeral pull consumer: one request creates it and tells how many messages of the subject
// follow (NumPending), then batches of up to 256 messages are pulled without waiting. (A direct
// get per message would cost one round trip per message; the batched direct get needs
// nats-server 2.11.) The result is complete when the stream was not recreated (same epoch), was
// not trimmed past since (since.Lo >= FirstSeq-1, checked before and after reading, as trimming
// only moves FirstSeq forward), and no more than limit messages follow.
//
// Trimming is per stream, not per channel: a position older than the stream's first kept message
// gives complete=false even when none of this channel's messages were dropped.
func (b *Broker) Replay(ctx context.Context, topic string, since protocol.Position, limit int) ([]*message.Message, bool, error) {
	subject, err := b.historyTopic(topic)
	if err != nil {
		return nil, false, err
	}
	limit = max(limit, 0)
	info, epoch, err := b.streamInfo(ctx, b.channels)
	if err != nil {
		return nil, false, err
	}
	if !b.reaches(info, epoch, since) || since.Lo > info.State.LastSeq {
		return nil, false, nil
	}
	if since.Lo == info.State.LastSeq {
		return nil, true, nil
	}
	cons, done, err := b.readConsumer(ctx, "replay", subject, since.Lo+1)
	if err != nil {
		return nil, false, err
	}
	defer done()
	pending := int(min(cons.CachedInfo().NumPending, uint64(limit)+1))
	msgs := make([]*message.Message, 0, pending)
	for len(msgs) < pending {
		batch, err := cons.FetchNoWait(min(pending-len(msgs), replayChunk))
		if err != nil {
			return nil, false, unavailable("replay", err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			msgs = append(msgs, b.codec.fromJetStream(m))
		}
		if err := batch.Error(); err != nil {
			return nil, false, unavailable("replay", err)
		}
		if got == 0 {
			break // trimmed meanwhile: the check below says so
		}
		if err := ctx.Err(); err != nil {
			return nil, false, err
		}
	}
	after, epoch2, err := b.streamInfo(ctx, b.channels)
	if err != nil {
		return nil, false, err
	}
	if epoch2 != epoch || !b.reaches(after, epoch, since) {
		return nil, false, nil
	}
	// Complete when every message that followed since was read and they fit in limit.
	complete := uint64(len(msgs)) == cons.CachedInfo().NumPending && len(msgs) <= limit
	if len(msgs) > limit {
		msgs = msgs[:limit]
	}
	return msgs, complete, nil
}

// reaches reports whether the stream (of epoch) still holds everything after since.
func (b *Broker) reaches(info *jetstream.StreamInfo, epoch string, since protocol.Position) bool {
	return since.Epoch == epoch && since.Hi == 0 && since.Lo+1 >= info.State.FirstSeq
}

// Before implements transports.ReverseHistory. It reads the channel's subject backwards by
// windows of stream sequences, from before (or the stream's last sequence) down to the stream's
// first: each window is read forward through an ephemeral pull consumer filtered on the subject
// (the server sends only the channel's messages), and the windows double, so a channel whose
// messages are sparse in a busy stream costs a few round trips per page, not one per message.
func (b *Broker) Before(ctx context.Context, topic string, before protocol.Position, limit int) ([]*message.Message, error) {
	subject, err := b.historyTopic(topic)
	if err != nil {
		return nil, err
	}
	info, epoch, err := b.streamInfo(ctx, b.channels)
	if err != nil {
		return nil, err
	}
	end, first := info.State.LastSeq, max(info.State.FirstSeq, 1)
	if !before.IsZero() {
		if before.Epoch != epoch || before.Hi != 0 || before.Lo == 0 {
			return nil, nil
		}
		end = min(end, before.Lo-1)
	}
	var out []*message.Message // newest first
	window := uint64(max(4*limit, replayChunk))
	for limit > 0 && end >= first && len(out) < limit {
		start := first
		if end-first+1 > window {
			start = end - window + 1
		}
		msgs, err := b.readRange(ctx, subject, start, end)
		if err != nil {
			return nil, err
		}
		for i := len(msgs) - 1; i >= 0 && len(out) < limit; i-- {
			out = append(out, msgs[i])
		}
		if start == first {
			break
		}
		end, window = start-1, 2*window
	}
	return out, nil
}

// readRange returns, oldest first, the messages of subject with stream sequences from start to
// end, read through an ephemeral pull consumer (deleted when done).
func (b *Broker) readRange(ctx context.Context, subject string, start, end uint64) ([]*message.Message, error) {
	cons, done, err := b.readConsumer(ctx, "history", subject, start)
	if err != nil {
		return nil, err
	}
	defer done()
	pending := cons.CachedInfo().NumPending
	var msgs []*message.Message
	for read := uint64(0); read < pending; {
		batch, err := cons.FetchNoWait(int(min(pending-read, replayChunk)))
		if err != nil {
			return nil, unavailable("history", err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			if md.Sequence.Stream > end {
				return msgs, nil // past the window (the rest is newer still)
			}
			msgs = append(msgs, b.codec.fromJetStream(m))
		}
		if err := batch.Error(); err != nil {
			return nil, unavailable("history", err)
		}
		if got == 0 {
			break // trimmed meanwhile
		}
		read += uint64(got)
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
	return msgs, nil
}

// readConsumer creates an ephemeral consumer that reads the channel stream's subject from
// sequence start, for one read (what names it: replay, catch-up); done deletes it. Its inactive
// threshold covers a node that died before calling done.
func (b *Broker) readConsumer(ctx context.Context, what, subject string, start uint64) (jetstream.Consumer, func(), error) {
	cons, err := b.js.CreateConsumer(ctx, b.channels, jetstream.ConsumerConfig{
		Description:       "wsgateway " + what,
		FilterSubject:     subject,
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       start,
		AckPolicy:         jetstream.AckNonePolicy,
		InactiveThreshold: 10 * time.Second,
		MemoryStorage:     true,
		Replicas:          1,
	})
	if err != nil {
		return nil, nil, unavailable(what, err)
	}
	return cons, func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.cfg.PublishTimeout)
		defer cancel()
		_ = b.js.DeleteConsumer(dctx, b.channels, cons.CachedInfo().Name)
	}, nil
}
