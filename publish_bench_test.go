package gateway_test

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"sync"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/wsgateway/gateway"
	"github.com/wsgateway/gateway/internal/nodetest"
	"github.com/wsgateway/gateway/internal/wstest"
)

// BenchmarkPublishPath is the client publish path end to end in one process: one node, K
// WebSocket clients each subscribed to a channel of its own, each publishing a 128-byte JSON
// payload (with a msg_id of its own) to its channel and reading back both the ack and the
// message before the next. One op is one message: its frame read and decoded, the inbound
// router trip (rate limit, authorization, dedupe, breaker, retry, timeout), the broker's
// publish, the channel trip, the encoded frame written to the subscriber, the ack. ns/op,
// cpu-ns/op (the process's CPU time: server and clients), B/op and allocs/op are per message
// and include the in-process clients' own work (gorilla's
// frame write and read into reused buffers: see docs/performance.md, *Publish path
// allocations*). The publish rate limit is on, set far above what the benchmark reaches.
//
//	go test -run '^$' -bench BenchmarkPublishPath -benchmem .
//	go test -run '^$' -bench 'BenchmarkPublishPath/memory' -benchmem -memprofile mem.out .
func BenchmarkPublishPath(b *testing.B) {
	for _, name := range []string{"memory", "redis"} {
		var broker nodetest.Broker
		for _, nb := range nodetest.Brokers {
			if nb.Name == name {
				broker = nb
			}
		}
		for _, k := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/clients=%d", name, k), func(b *testing.B) {
				benchPublishPath(b, broker, k)
			})
		}
	}
}

func benchPublishPath(b *testing.B, broker nodetest.Broker, k int) {
	cl := broker.Setup(b)
	n := startNode(b, testConfig(b, "GATEWAY_LIMITS_PUBLISH_RATE=1000000000"), gateway.WithBroker(cl.New(b, cl.Prefix(b))))
	data := bytes.Repeat([]byte("x"), 128-2) // a JSON string of 128 bytes with its quotes
	clients := make([]*publishClient, k)
	for i := range clients {
		c, _ := wstest.Dial(b, n.URL, allowAll(b, "bench"+strconv.Itoa(i)))
		channel := "bench:" + strconv.Itoa(i)
		c.Subscribe(channel)
		clients[i] = newPublishClient(c.Conn, channel, data)
		// One round trip untimed: the channel's broker subscription and the node's first paths.
		if err := clients[i].roundTrip(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	cpu0 := processCPU()
	b.ResetTimer()
	var wg sync.WaitGroup
	errs := make(chan error, k)
	for i, c := range clients {
		count := b.N / k
		if i < b.N%k {
			count++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range count {
				if err := c.roundTrip(); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

// publishClient publishes to its channel and reads the ack and the message back, reusing its
// buffers so that what it allocates per message is gorilla's own.
type publishClient struct {
	conn   *websocket.Conn
	prefix []byte // the publish frame up to the msg_id's number
	suffix []byte // after it
	frame  []byte
	seq    int
	in     bytes.Buffer
}

func newPublishClient(conn *websocket.Conn, channel string, data []byte) *publishClient {
	return &publishClient{
		conn:   conn,
		prefix: []byte(`{"type":"publish","id":"p","channel":"` + channel + `","msg_id":"m`),
		suffix: []byte(`","data":"` + string(data) + `"}`),
	}
}

var (
	ackType     = []byte(`"type":"ack"`)
	messageType = []byte(`"type":"message"`)
)

func (c *publishClient) roundTrip() error {
	c.seq++
	c.frame = append(strconv.AppendInt(append(c.frame[:0], c.prefix...), int64(c.seq), 10), c.suffix...)
	if err := c.conn.WriteMessage(websocket.TextMessage, c.frame); err != nil {
		return err
	}
	var acked, delivered bool
	for !acked || !delivered {
		_, r, err := c.conn.NextReader()
		if err != nil {
			return err
		}
		c.in.Reset()
		if _, err := c.in.ReadFrom(r); err != nil && err != io.EOF {
			return err
		}
		switch f := c.in.Bytes(); {
		case bytes.Contains(f, ackType):
			acked = true
		case bytes.Contains(f, messageType):
			delivered = true
		default:
			return fmt.Errorf("unexpected frame %s", f)
		}
	}
	return nil
}
