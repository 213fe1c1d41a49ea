package kafka

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"strings"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
)

// partitionFor is the partition of <prefix>.channels that holds channel: what sarama's default
// hash partitioner (NewHashPartitioner) picks for key = channel, and what librdkafka's "fnv1a"
// partitioner picks (kcat -X topic.partitioner=fnv1a): FNV-1a 32 of the key, as an int32,
// modulo the partition count, made non-negative.
func partitionFor(channel string, partitions int) int32 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(channel))
	p := int32(h.Sum32()) % int32(partitions)
	if p < 0 {
		p = -p
	}
	return p
}

// epochOf names the history lineage of one partition: the topic (each byte outside [A-Za-z0-9-]
// as '-'), the partition and the first 8 bytes of the topic id in hex (none when the broker is
// older than Kafka 2.8), so a re-created topic is a new epoch. ParsePosition takes only epochs
// that SafeName leaves as they are, hence no '_' and no '.'.
func epochOf(topic string, partition int32, id string) string {
	tag := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, topic)
	e := fmt.Sprintf("%s-%d", tag, partition)
	if id != "" {
		e += "-" + id
	}
	return e
}

func (b *Broker) topicID(topic string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.topicIDs[topic]
}

// refreshTopicID asks the cluster for the id of topic (one metadata round trip) and remembers it.
func (b *Broker) refreshTopicID(c *conn, topic string) (string, error) {
	ids, err := b.refreshTopicIDs(c, topic)
	if err != nil {
		return "", err
	}
	return ids[topic], nil
}

// refreshTopicIDs asks the cluster for the ids of topics in one metadata round trip, remembers
// them and tells the readers of topics whose id changed (the topic was re-created).
func (b *Broker) refreshTopicIDs(c *conn, topics ...string) (map[string]string, error) {
	md, err := c.admin.DescribeTopics(topics)
	if err != nil {
		return nil, err
	}
	ids := make(map[string]string, len(md))
	for _, t := range md {
		if !errors.Is(t.Err, sarama.ErrNoError) {
			if errors.Is(t.Err, sarama.ErrUnknownTopicOrPartition) {
				b.kickTopics()
			}
			return nil, fmt.Errorf("metadata of %s: %w", t.Name, t.Err)
		}
		id := ""
		if t.Uuid != (sarama.Uuid{}) {
			id = hex.EncodeToString(t.Uuid[:8])
		}
		ids[t.Name] = id
	}
	var changed []*reader
	presenceChanged := false
	b.mu.Lock()
	for _, topic := range topics {
		id, ok := ids[topic]
		if !ok {
			b.mu.Unlock()
			return nil, fmt.Errorf("metadata of %s: missing from the answer", topic)
		}
		if old, known := b.topicIDs[topic]; known && old != id {
			if r := b.readers[topic]; r != nil {
				changed = append(changed, r)
			}
			if topic == b.names.presence {
				presenceChanged = true
			}
		}
		b.topicIDs[topic] = id
	}
	b.mu.Unlock()
	for _, r := range changed {
		b.log.Warn("kafka topic was re-created: a new history epoch", "topic", r.topic)
		r.lineageChanged()
	}
	if presenceChanged {
		b.log.Warn("kafka presence topic was re-created: the nodes record their members again", "topic", b.names.presence)
		b.pr.lineageChanged()
	}
	return ids, nil
}

// locate returns the partition of channel and the current epoch of that partition.
func (b *Broker) locate(c *conn, channel string) (int32, string, error) {
	kt := b.names.channels
	id, err := b.refreshTopicID(c, kt)
	if err != nil {
		return 0, "", err
	}
	parts, err := c.client.Partitions(kt)
	if err != nil {
		return 0, "", err
	}
	if len(parts) == 0 {
		return 0, "", fmt.Errorf("topic %s has no partitions", kt)
	}
	p := partitionFor(channel, len(parts))
	return p, epochOf(kt, p, id), nil
}

// Last implements transports.History: the high watermark of the channel's partition (a metadata
// and a list-offsets round trip). It may be the position of a message of another channel of the
// same partition; Replay from it returns what comes next all the same.
func (b *Broker) Last(ctx context.Context, topic string) (protocol.Position, error) {
	channel, ok := protocol.ChannelOf(topic)
	if !ok {
		return protocol.Position{}, fmt.Errorf("kafka: %q is not a channel topic", topic)
	}
	c, err := b.ready(ctx, b.cfg.OperationTimeout)
	if err != nil {
		return protocol.Position{}, err
	}
	p, epoch, err := b.locate(c, channel)
	if err != nil {
		return protocol.Position{}, fmt.Errorf("%w: kafka last of %s: %w", transports.ErrUnavailable, topic, err)
	}
	newest, err := c.client.GetOffset(b.names.channels, p, sarama.OffsetNewest)
	if err != nil {
		return protocol.Position{}, fmt.Errorf("%w: kafka last of %s: %w", transports.ErrUnavailable, topic, err)
	}
	return protocol.Position{Epoch: epoch, Lo: uint64(newest)}, nil
}

// Replay implements transports.History. It reads the channel's partition from since up to its
// high watermark as of the call and keeps the records of this channel: the cost is the traffic
// of the whole partition since that position, bounded by OperationTimeout.
func (b *Broker) Replay(ctx context.Context, topic string, since protocol.Position, limit int) ([]*message.Message, bool, error) {
	channel, ok := protocol.ChannelOf(topic)
	if !ok {
		return nil, false, fmt.Errorf("kafka: %q is not a channel topic", topic)
	}
	ctx, cancel := context.WithTimeout(ctx, b.cfg.OperationTimeout)
	defer cancel()
	c, err := b.ready(ctx, b.cfg.OperationTimeout)
	if err != nil {
		return nil, false, err
	}
	unavailable := func(err error) error {
		return fmt.Errorf("%w: kafka replay of %s: %w", transports.ErrUnavailable, topic, err)
	}
	p, epoch, err := b.locate(c, channel)
	if err != nil {
		return nil, false, unavailable(err)
	}
	if since.Epoch != epoch || since.Hi != 0 || since.Lo > 1<<62 {
		return nil, false, nil // another lineage (or another partition count): no wrong replay
	}
	msgs, complete, err := b.fetchReplay(ctx, c, p, int64(since.Lo), -1, channel, epoch, limit, fetchVersion(c.client.Config().Version))
	if err != nil {
		return nil, false, unavailable(err)
	}
	return msgs, complete, nil
}

// fetchReplay reads partition p from since with plain Fetch requests to its leader, up to the
// high watermark of the first answer (or upTo, exclusive, when that is lower and not negative),
// and keeps the records of channel. A partition consumer
// would cost a list-offsets round trip and sarama's 100 ms wait for more subscriptions before its
// first fetch (partitionConsumersBatchTimeout), on every resume.
func (b *Broker) fetchReplay(ctx context.Context, c *conn, p int32, since, upTo int64, channel, epoch string, limit int, version int16) ([]*message.Message, bool, error) {
	topic := b.names.channels
	broker, err := c.client.Leader(topic, p)
	if err != nil {
		return nil, false, err
	}
	cfg := c.client.Config()
	size := cfg.Consumer.Fetch.Default
	offset, end := since, int64(-1)
	var msgs []*message.Message
	for {
		if err := ctx.Err(); err != nil {
			return nil, false, err
		}
		req := &sarama.FetchRequest{MinBytes: 1, MaxWaitTime: 0, Version: version,
			MaxBytes: cfg.Consumer.Fetch.MaxBytes, Isolation: sarama.ReadUncommitted, SessionEpoch: -1}
		req.AddBlock(topic, p, offset, size, -1)
		resp, err := broker.Fetch(req)
		if err != nil {
			return nil, false, err
		}
		block := resp.GetBlock(topic, p)
		switch {
		case block == nil:
			return nil, false, sarama.ErrIncompleteResponse
		case errors.Is(block.Err, sarama.ErrOffsetOutOfRange):
			// Retention deleted records after since (or since is from the future).
			return nil, false, nil
		case !errors.Is(block.Err, sarama.ErrNoError):
			if errors.Is(block.Err, sarama.ErrNotLeaderForPartition) {
				_ = c.client.RefreshMetadata(topic)
			}
			return nil, false, block.Err
		}
		if end < 0 {
			end = block.HighWaterMarkOffset // as of the first answer
			if upTo >= 0 {
				end = min(end, upTo)
			}
		}
		if offset >= end {
			return msgs, true, nil
		}
		moved := false
		for _, records := range block.RecordsSet {
			batch := records.RecordBatch
			if batch == nil {
				return nil, false, errors.New("kafka: a legacy message set in a record-batch fetch")
			}
			if batch.Control { // transaction markers: skipped, as the consumer does
				if next := batch.FirstOffset + int64(batch.LastOffsetDelta) + 1; next > offset {
					offset, moved = next, true
				}
				continue
			}
			for _, rec := range batch.Records {
				at := batch.FirstOffset + rec.OffsetDelta
				if at < offset {
					continue
				}
				if at >= end {
					return msgs, true, nil
				}
				ts := batch.FirstTimestamp.Add(rec.TimestampDelta)
				if batch.LogAppendTime {
					ts = batch.MaxTimestamp
				}
				km := &sarama.ConsumerMessage{Topic: topic, Partition: p, Key: rec.Key, Value: rec.Value,
					Offset: at, Timestamp: ts, Headers: rec.Headers}
				if channelOf(km) == channel {
					if len(msgs) >= limit {
						return msgs, false, nil
					}
					msgs = append(msgs, toMessage(km, epoch, channel))
				}
				offset, moved = at+1, true
			}
		}
		if offset >= end {
			return msgs, true, nil
		}
		if !moved { // a batch larger than the fetch size: ask for more, as the consumer does
			if size >= 1<<30 {
				return nil, false, fmt.Errorf("kafka: cannot read %s/%d at offset %d", topic, p, offset)
			}
			size *= 2
		}
	}
}

// Before implements transports.ReverseHistory. It reads the channel's partition backwards by
// windows of offsets, from before (or the high watermark) down to the partition's oldest kept
// offset, each window forward with plain Fetch requests, keeping the records of this channel;
// the windows double, so the cost is the partition's traffic back to the oldest message returned.
func (b *Broker) Before(ctx context.Context, topic string, before protocol.Position, limit int) ([]*message.Message, error) {
	channel, ok := protocol.ChannelOf(topic)
	if !ok {
		return nil, fmt.Errorf("kafka: %q is not a channel topic", topic)
	}
	ctx, cancel := context.WithTimeout(ctx, b.cfg.OperationTimeout)
	defer cancel()
	c, err := b.ready(ctx, b.cfg.OperationTimeout)
	if err != nil {
		return nil, err
	}
	unavailable := func(err error) error {
		return fmt.Errorf("%w: kafka history of %s: %w", transports.ErrUnavailable, topic, err)
	}
	p, epoch, err := b.locate(c, channel)
	if err != nil {
		return nil, unavailable(err)
	}
	kt := b.names.channels
	end, err := c.client.GetOffset(kt, p, sarama.OffsetNewest)
	if err != nil {
		return nil, unavailable(err)
	}
	first, err := c.client.GetOffset(kt, p, sarama.OffsetOldest)
	if err != nil {
		return nil, unavailable(err)
	}
	if !before.IsZero() {
		if before.Epoch != epoch || before.Hi != 0 || before.Lo == 0 || before.Lo > 1<<62 {
			return nil, nil
		}
		end = min(end, int64(before.Lo)-1)
	}
	version := fetchVersion(c.client.Config().Version)
	var out []*message.Message // newest first
	window := int64(max(4*limit, 256))
	for limit > 0 && end > first && len(out) < limit {
		start := max(first, end-window)
		msgs, _, err := b.fetchReplay(ctx, c, p, start, end, channel, epoch, math.MaxInt, version)
		if err != nil {
			return nil, unavailable(err)
		}
		for i := len(msgs) - 1; i >= 0 && len(out) < limit; i-- {
			out = append(out, msgs[i])
		}
		end, window = start, 2*window
	}
	return out, nil
}

// fetchVersion is the Fetch request version for a Kafka version (0.11 or later: Config.Validate),
// as sarama's consumer picks it.
func fetchVersion(v sarama.KafkaVersion) int16 {
	switch {
	case v.IsAtLeast(sarama.V2_1_0_0):
		return 10
	case v.IsAtLeast(sarama.V2_0_0_0):
		return 8
	case v.IsAtLeast(sarama.V1_1_0_0):
		return 7
	case v.IsAtLeast(sarama.V1_0_0_0):
		return 6
	}
	return 5
}
