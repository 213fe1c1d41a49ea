package websocket

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	gws "github.com/gorilla/websocket"

	"github.com/wsgateway/gateway/protocol"
)

// Benchmarks of the channel index and of the fan-out path. Run with
//
//	go test -run '^$' -bench . -benchmem ./transports/websocket
//
// The index benchmarks use connections without a socket (Send returns at once), so they measure
// the index and the per-subscriber bookkeeping alone. BenchmarkFanout writes to real loopback
// sockets read by in-process clients, whose reading is part of the time measured.

// BenchmarkJoinLeave joins and leaves one channel among many (10,000 channels with one
// subscriber each): the index insert and delete, and opening/stopping the broker subscription.
func BenchmarkJoinLeave(b *testing.B) {
	h := newTestHub(b, Config{SendBuffer: 256, WriteTimeout: time.Second, PingInterval: time.Minute})
	const channels = 10_000
	for i := range channels {
		c := h.detachedConn("c" + strconv.Itoa(i))
		if err := h.Join(context.Background(), c, "ch."+strconv.Itoa(i)); err != nil {
			b.Fatal(err)
		}
	}
	c := h.detachedConn("joiner")
	names := make([]string, channels)
	for i := range names {
		names[i] = "ch." + strconv.Itoa(i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		ch := names[i%channels]
		i++
		if err := h.Join(context.Background(), c, ch); err != nil {
			b.Fatal(err)
		}
		if !h.Leave(c, ch) {
			b.Fatal("not subscribed")
		}
	}
}

// BenchmarkJoinLeaveNewChannel joins and leaves a channel nobody else is on, so each Join opens
// the broker subscription and each Leave closes it.
func BenchmarkJoinLeaveNewChannel(b *testing.B) {
	h := newTestHub(b, Config{SendBuffer: 256, WriteTimeout: time.Second, PingInterval: time.Minute})
	c := h.detachedConn("joiner")
	b.ReportAllocs()
	for b.Loop() {
		if err := h.Join(context.Background(), c, "fresh"); err != nil {
			b.Fatal(err)
		}
		h.Leave(c, "fresh")
	}
}

// BenchmarkDeliverLookup delivers to one channel among 10,000, each with one live subscriber
// without a socket: the cost of finding the channel's subscribers.
func BenchmarkDeliverLookup(b *testing.B) {
	h := newTestHub(b, Config{SendBuffer: 256, WriteTimeout: time.Second, PingInterval: time.Minute})
	const channels = 10_000
	names := make([]string, channels)
	for i := range channels {
		names[i] = "ch." + strconv.Itoa(i)
		c := h.detachedConn("c" + strconv.Itoa(i))
		if err := h.Join(context.Background(), c, names[i]); err != nil {
			b.Fatal(err)
		}
		c.Activate(names[i], protocol.Position{}, nil)
	}
	frame := []byte(`{"type":"message"}`)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		h.Deliver(names[i%channels], protocol.Position{Lo: uint64(i)}, frame, nil)
		i++
	}
}

// BenchmarkDeliverLoop is the hub's loop over the subscribers of one channel (no sockets), per
// subscriber.
func BenchmarkDeliverLoop(b *testing.B) {
	for _, n := range []int{100, 5000} {
		b.Run("subs="+strconv.Itoa(n), func(b *testing.B) {
			// With the gateway's default latency budget: the node is not busy, so every frame is
			// handed over at once, as without one, through the budget's checks.
			h := newTestHub(b, Config{SendBuffer: 256, WriteTimeout: time.Second, PingInterval: time.Minute, LatencyBudget: 50 * time.Millisecond})
			for i := range n {
				c := h.detachedConn("c" + strconv.Itoa(i))
				if err := h.Join(context.Background(), c, "bench"); err != nil {
					b.Fatal(err)
				}
				c.Activate("bench", protocol.Position{}, nil)
			}
			frame := []byte(`{"type":"message"}`)
			b.ReportAllocs()
			for b.Loop() {
				h.Deliver("bench", protocol.Position{}, frame, nil)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
		})
	}
}

// BenchmarkFanout sends one message frame to N subscribers of one channel over loopback
// WebSockets: the hub's loop, the connections' queues, their write goroutines and the write
// syscalls. Each op is one delivered message; ops go in rounds of `burst` messages: the timed part
// of a round queues them and waits until every connection has handed them to the kernel, then
// (untimed) the clients, blocked until then, read them. It reports per delivery: wall time
// (ns/delivery), the process's CPU time in the timed parts (cpu-ns/delivery: the clients are
// blocked then, so it is the hub's, and far less sensitive than wall time to other load on the
// machine) and write syscalls (syscw/delivery: the process's write(2) calls from /proc/self/io;
// clients write nothing).
//
// The budget= rounds run with the gateway's default latency budget, on a hub the benchmark's own
// load may or may not make busy: their cpu-ns and syscw are what the policy costs or saves here.
func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{1000, 5000} {
		for _, burst := range []int{1, 16} {
			b.Run(fmt.Sprintf("subs=%d/burst=%d", n, burst), func(b *testing.B) { benchFanout(b, n, burst) })
		}
	}
	for _, burst := range []int{1, 16} {
		b.Run(fmt.Sprintf("subs=1000/burst=%d/budget=75ms", burst), func(b *testing.B) {
			benchFanoutWith(b, Config{LatencyBudget: 75 * time.Millisecond}, 1000, burst, nil)
		})
	}
}

// BenchmarkFanoutDeflate is BenchmarkFanout with permessage-deflate off (a hub without it)
// and on (a hub with it, every client offering it), for the frame above and one of 4 KiB of
// words: besides CPU and writes, the bytes written per delivery (wchar of /proc/self/io).
func BenchmarkFanoutDeflate(b *testing.B) {
	for _, size := range []int{128, 4096} {
		for _, on := range []bool{false, true} {
			for _, burst := range []int{1, 16} {
				name := fmt.Sprintf("payload=%d/compression=%v/burst=%d", size, on, burst)
				b.Run(name, func(b *testing.B) { benchFanoutWith(b, Config{Compression: on}, 1000, burst, benchFrame(size)) })
			}
		}
	}
}

// benchFrame is a message frame with a payload of about size bytes: x's for 128 (the frame of
// BenchmarkFanout), words drawn from a small vocabulary otherwise (deflate shrinks them 2-3
// times, like common JSON text).
func benchFrame(size int) []byte {
	head := `{"type":"message","channel":"bench","id":"0f8fad5b-d9cb-469f-a165-70867728950e","position":"17:3fa1c2","data":{"t":1764230400000000000,"seq":123456,"pad":"`
	if size <= 128 {
		return []byte(head + strings.Repeat("x", 82) + `"}}`)
	}
	words := strings.Fields("user order status pending shipped delivered id name email price total currency item quantity created updated session token channel room message text reply like view count score region true false null 0 1 2 3 42 100 2026 ok error retry")
	var sb strings.Builder
	r := uint64(88172645463325252)
	for sb.Len() < size-70 {
		r ^= r << 13
		r ^= r >> 7
		r ^= r << 17
		sb.WriteString(words[r%uint64(len(words))])
		sb.WriteByte(' ')
	}
	return []byte(head + sb.String() + `"}}`)
}

func benchFanout(b *testing.B, n, burst int) {
	benchFanoutWith(b, Config{}, n, burst, nil)
}

// benchFanoutWith runs a fan-out benchmark on a hub of cfg (compression and latency budget; the
// rest is set here).
func benchFanoutWith(b *testing.B, cfg Config, n, burst int, frame []byte) {
	deflate := cfg.Compression
	cfg.MaxFrameSize, cfg.SendBuffer, cfg.WriteTimeout, cfg.PingInterval = 64<<10, 256, 10*time.Second, time.Minute
	h := newTestHub(b, cfg)
	srv := h.serve(b)
	clients := make([]*countingClient, n)
	dialer := gws.DefaultDialer
	if deflate {
		dialer = &gws.Dialer{EnableCompression: true}
	}
	for i := range clients {
		clients[i] = dialCountingWith(b, srv, dialer)
	}
	h.waitConns(b, n)
	conns := h.conns()
	for _, c := range conns {
		if err := h.Join(context.Background(), c, "bench"); err != nil {
			b.Fatal(err)
		}
		c.Activate("bench", protocol.Position{}, nil)
	}
	if frame == nil {
		frame = benchFrame(128)
	}
	for _, c := range conns {
		if c.deflate != deflate {
			b.Fatalf("compression negotiated: %v, want %v", c.deflate, deflate)
		}
	}
	deadline := time.Now().Add(5 * time.Minute)
	poll := func(what string, done func() bool) {
		for !done() {
			if time.Now().After(deadline) {
				b.Fatal("timed out waiting for " + what)
			}
			time.Sleep(100 * time.Microsecond) // polling counters, not synchronising
		}
	}
	want := int64(0)
	var cpu time.Duration // the process's CPU time in the timed parts
	b.ReportAllocs()
	b.ResetTimer()
	w0, wb0 := writeSyscalls(b), writtenBytes(b)
	for i := 0; i < b.N; i += burst {
		c0 := processCPU(b)
		k := min(burst, b.N-i)
		for j := range k {
			if got := h.Deliver("bench", protocol.Position{Lo: uint64(i + j)}, frame, nil); got != n {
				b.Fatalf("delivered to %d of %d", got, n)
			}
		}
		want += int64(k)
		poll("the connections to write", func() bool {
			for _, c := range conns {
				if !c.idle() {
					return false
				}
			}
			return true
		})
		cpu += processCPU(b) - c0
		b.StopTimer()
		for _, c := range clients {
			c.readUntil(want)
		}
		poll("the clients to read", func() bool {
			for _, c := range clients {
				if c.frames.Load() < want {
					return false
				}
			}
			return true
		})
		b.StartTimer()
	}
	b.StopTimer()
	deliveries := float64(b.N) * float64(n)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/deliveries, "ns/delivery")
	b.ReportMetric(float64(writeSyscalls(b)-w0)/deliveries, "syscw/delivery")
	b.ReportMetric(float64(writtenBytes(b)-wb0)/deliveries, "wbytes/delivery")
	b.ReportMetric(float64(cpu.Nanoseconds())/deliveries, "cpu-ns/delivery")
	for _, c := range clients {
		c.close()
	}
}
