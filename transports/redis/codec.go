package redis

import (
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"

	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
)

// Fields of a stream entry. One entry is one message: its payload, its UUID, each metadata key as
// a field of its own, and on channel streams the channel it belongs to. This is what services
// write with `redis-cli XADD` (docs/brokers/redis.md).
const (
	fieldChannel  = "channel"
	fieldPayload  = "payload"
	fieldUUID     = "uuid"
	fieldMetaPref = "m:"
	// fieldLineage marks the entry Last writes into an empty shard stream (see Last).
	fieldLineage = "lineage"
)

// Shard returns the shard stream of channel among shards: fnv32a(channel) % shards, where
// fnv32a is the 32-bit FNV-1a hash of the channel name's bytes.
func Shard(channel string, shards int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(channel))
	return int(h.Sum32() % uint32(shards))
}

// ShardKey is the key of shard stream n under prefix: "<prefix>:ch:<n>".
func ShardKey(prefix string, n int) string { return prefix + ":ch:" + strconv.Itoa(n) }

// ShardEpoch is the Epoch of the positions on shard stream n under prefix: "<prefix>-ch<n>"
// ("ws-ch6"). A prefix made of other characters than [A-Za-z0-9-] is written in hex after an
// "x", since an Epoch may hold only those (see transports.SafeName).
func ShardEpoch(prefix string, n int) string { return epochBase(prefix) + "-ch" + strconv.Itoa(n) }

func epochBase(prefix string) string {
	if prefix != "" && transports.SafeName(prefix) == prefix {
		return prefix
	}
	return "x" + hex.EncodeToString([]byte(prefix))
}

// TopicKey is the stream key of a logical topic that is not a channel topic:
// "<prefix>:<SafeName(topic)>", so "ws:inbound", "ws:direct", "ws:events".
func TopicKey(prefix, topic string) string { return prefix + ":" + transports.SafeName(topic) }

// encode returns the XADD field/value pairs of m; channel is empty outside channel streams.
func encode(channel string, isChannel bool, m *message.Message) []any {
	values := make([]any, 0, 6+2*len(m.Metadata))
	if isChannel {
		values = append(values, fieldChannel, channel)
	}
	values = append(values, fieldPayload, []byte(m.Payload))
	if m.UUID != "" {
		values = append(values, fieldUUID, m.UUID)
	}
	keys := make([]string, 0, len(m.Metadata))
	for k := range m.Metadata {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		values = append(values, fieldMetaPref+k, m.Metadata[k])
	}
	return values
}

// decode makes the message of an entry's fields. Unknown fields are ignored, so an entry written
// by hand with only a payload is still a message (with an empty UUID, and no metadata).
func decode(values map[string]any) *message.Message {
	m := message.NewMessage(str(values[fieldUUID]), []byte(str(values[fieldPayload])))
	for k, v := range values {
		if key, ok := strings.CutPrefix(k, fieldMetaPref); ok {
			m.Metadata.Set(key, str(v))
		}
	}
	return m
}

// decodeAt decodes an entry of stream epoch at id, adding MetaPosition when position is set.
// An entry without a uuid field gets the stable UUID "<epoch>:<ms>:<seq>" (the String form of
// its position), the same on every node and in a replay.
func decodeAt(values map[string]any, epoch string, id streamID, position bool) *message.Message {
	m := decode(values)
	pos := protocol.Position{Epoch: epoch, Hi: id.ms, Lo: id.seq}.String()
	if m.UUID == "" {
		m.UUID = pos
	}
	if position {
		m.Metadata.Set(protocol.MetaPosition, pos)
		m.Metadata.Set(protocol.MetaStoredAt, strconv.FormatUint(id.ms, 10))
	}
	return m
}

func str(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	case []byte:
		return string(v)
	default:
		return fmt.Sprint(v)
	}
}

// codec is the Watermill unmarshaller of the consumer-group subscriptions: the same fields as
// above. Unlike redisstream's default it never fails (its failure would end the subscription),
// and it cannot see the entry id, so a message written without a uuid field keeps an empty UUID.
type codec struct{}

var _ redisstream.MarshallerUnmarshaller = codec{}

func (codec) Marshal(_ string, m *message.Message) (map[string]any, error) {
	values := encode("", false, m)
	out := make(map[string]any, len(values)/2)
	for i := 0; i+1 < len(values); i += 2 {
		out[values[i].(string)] = values[i+1]
	}
	return out, nil
}

func (codec) Unmarshal(values map[string]any) (*message.Message, error) {
	return decode(values), nil
}

// streamID is a stream entry id, "<ms>-<seq>".
type streamID struct{ ms, seq uint64 }

func parseID(s string) (streamID, error) {
	ms, seq, ok := strings.Cut(s, "-")
	a, err1 := strconv.ParseUint(ms, 10, 64)
	b, err2 := strconv.ParseUint(seq, 10, 64)
	if !ok || err1 != nil || err2 != nil {
		return streamID{}, fmt.Errorf("redis: bad stream id %q", s)
	}
	return streamID{a, b}, nil
}

func idOf(p protocol.Position) streamID { return streamID{p.Hi, p.Lo} }

func (a streamID) less(b streamID) bool {
	if a.ms != b.ms {
		return a.ms < b.ms
	}
	return a.seq < b.seq
}

func (a streamID) String() string {
	return strconv.FormatUint(a.ms, 10) + "-" + strconv.FormatUint(a.seq, 10)
}
