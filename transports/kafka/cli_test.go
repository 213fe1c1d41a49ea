package kafka

import (
	"context"
	"fmt"
	"hash/fnv"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports/transporttest"
)

// The documented CLI example (docs/brokers/kafka.md, see kcatExample) sends one record:
// key = channel, header channel = channel, value = the raw JSON payload, in the partition
// librdkafka's fnv1a partitioner picks. cliRecord is that record, for franz-go's client.
func cliRecord(topic, channel, payload string, partitions int) *kgo.Record {
	return &kgo.Record{
		Topic:     topic,
		Partition: librdkafkaFNV1a(channel, partitions),
		Key:       []byte(channel),
		Value:     []byte(payload),
		Headers:   []kgo.RecordHeader{{Key: protocol.MetaChannel, Value: []byte(channel)}},
	}
}

// librdkafkaFNV1a is librdkafka's "fnv1a" partitioner (rd_kafka_msg_partitioner_fnv1a): the
// FNV-1a hash as int32, absolute value, modulo the partition count.
func librdkafkaFNV1a(key string, partitions int) int32 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	v := int32(h.Sum32())
	if v < 0 {
		v = -v
	}
	return int32(uint32(v) % uint32(partitions))
}

func TestPartitionerMatchesSaramaAndLibrdkafka(t *testing.T) {
	// The table in docs/brokers/kafka.md.
	for channel, want := range map[string]int32{"news": 6, "$user:alice": 6, "room:1": 13, "$user:bob": 9} {
		if got := partitionFor(channel, 16); got != want {
			t.Errorf("partitionFor(%q, 16) = %d, the doc says %d", channel, got, want)
		}
	}
	p := sarama.NewHashPartitioner("t")
	for _, n := range []int{1, 3, 16, 100} {
		for i := range 2000 {
			key := fmt.Sprintf("room:%d", i)
			if i%7 == 0 {
				key = protocol.UserChannelFor(fmt.Sprint(i))
			}
			got, err := p.Partition(&sarama.ProducerMessage{Key: sarama.StringEncoder(key)}, int32(n))
			if err != nil {
				t.Fatal(err)
			}
			if want := partitionFor(key, n); got != want {
				t.Fatalf("key %q, %d partitions: sarama %d, partitionFor %d", key, n, got, want)
			}
			if lib := librdkafkaFNV1a(key, n); lib != got {
				t.Fatalf("key %q, %d partitions: librdkafka fnv1a %d, sarama %d", key, n, lib, got)
			}
		}
	}
}

// TestCLIRecord sends, through franz-go's client, exactly the record the documented kcat
// command sends, to a channel and to a user's channel, and checks delivery and replay.
func TestCLIRecord(t *testing.T) {
	cl := newCluster(t)
	prefix := transporttest.Prefix(t)
	b := newBroker(t, Config{Brokers: cl.addrs(), Prefix: prefix})
	client, err := kgo.NewClient(kgo.SeedBrokers(cl.addrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	for _, channel := range []string{"news", protocol.UserChannelFor("alice")} {
		topic := protocol.ChannelTopic(channel)
		before, err := b.Last(t.Context(), topic)
		if err != nil {
			t.Fatal(err)
		}
		ch := subscribe(t, b, topic)
		payload := `{"text":"hello ` + channel + `"}`
		rec := cliRecord(b.names.channels, channel, payload, DefaultPartitions)
		if err := client.ProduceSync(t.Context(), rec).FirstErr(); err != nil {
			t.Fatal(err)
		}
		checkCLIMessage(t, b, transporttest.Receive(t, ch, 1, 10*time.Second)[0], channel, payload, rec.Partition, rec.Offset)
		msgs, complete, err := b.Replay(t.Context(), topic, before, 10)
		if err != nil || !complete || len(msgs) != 1 {
			t.Fatalf("replay: %d msgs, complete %v, err %v", len(msgs), complete, err)
		}
		checkCLIMessage(t, b, msgs[0], channel, payload, rec.Partition, rec.Offset)
	}
	// A record on a partition that is not its channel's (another partitioner) is dropped.
	ch := subscribe(t, b, protocol.ChannelTopic("news"))
	stray := cliRecord(b.names.channels, "news", `"stray"`, DefaultPartitions)
	stray.Partition = (stray.Partition + 1) % DefaultPartitions
	right := cliRecord(b.names.channels, "news", `"right"`, DefaultPartitions)
	if err := client.ProduceSync(t.Context(), stray, right).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if m := transporttest.Receive(t, ch, 1, 10*time.Second)[0]; string(m.Payload) != `"right"` {
		t.Fatalf("got %s, want the record on the channel's partition", m.Payload)
	}
}

func checkCLIMessage(t *testing.T, b *Broker, m *message.Message, channel, payload string, partition int32, offset int64) {
	t.Helper()
	if string(m.Payload) != payload || m.Metadata.Get(protocol.MetaChannel) != channel {
		t.Fatalf("got payload %q channel %q", m.Payload, m.Metadata.Get(protocol.MetaChannel))
	}
	pos, err := protocol.ParsePosition(m.Metadata.Get(protocol.MetaPosition))
	if err != nil {
		t.Fatal(err)
	}
	if pos.Lo != uint64(offset)+1 || !strings.Contains(pos.Epoch, fmt.Sprintf("-channels-%d-", partition)) {
		t.Fatalf("position %v, want partition %d offset %d (Lo = offset+1)", pos, partition, offset)
	}
	if want := fmt.Sprintf("kafka-%s-%d-%d", b.names.channels, partition, offset); m.UUID != want {
		t.Fatalf("uuid %q, want %q (derived from topic, partition and offset)", m.UUID, want)
	}
}

// kcatExample is the documented command (docs/brokers/kafka.md) for a broker address, the
// channels topic, a channel and a JSON payload; run by sh as a user would paste it.
func kcatExample(broker, topic, channel, payload string) string {
	return fmt.Sprintf(`echo '%s|%s' | kcat -P -b %s -t %s -K '|' -H 'channel=%s' -X topic.partitioner=fnv1a`,
		channel, payload, broker, topic, channel)
}

// TestKcat runs the documented kcat commands when kcat is installed (Debian: apt-get install kcat).
func TestKcat(t *testing.T) {
	if _, err := exec.LookPath("kcat"); err != nil {
		t.Skip("kcat is not installed")
	}
	cl := newCluster(t)
	b := newBroker(t, Config{Brokers: cl.addrs(), Prefix: transporttest.Prefix(t)})
	for _, channel := range []string{"news", protocol.UserChannelFor("alice")} {
		topic := protocol.ChannelTopic(channel)
		before, err := b.Last(t.Context(), topic)
		if err != nil {
			t.Fatal(err)
		}
		ch := subscribe(t, b, topic)
		payload := `{"text":"hello"}`
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		out, err := exec.CommandContext(ctx, "sh", "-c", kcatExample(cl.addrs()[0], b.names.channels, channel, payload)).CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("kcat: %v: %s", err, out)
		}
		m := transporttest.Receive(t, ch, 1, 10*time.Second)[0]
		checkCLIMessage(t, b, m, channel, payload, partitionFor(channel, DefaultPartitions), int64(before.Lo))
	}
}

func subscribe(t *testing.T, b *Broker, topic string) <-chan *message.Message {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := b.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}
