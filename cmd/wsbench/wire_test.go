package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/flate"

	"github.com/wsgateway/gateway/configs"
	"github.com/wsgateway/gateway/internal/nodetest"
)

// serverFrame is an unmasked frame as the gateway writes them.
func serverFrame(op byte, fin bool, payload []byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	var h []byte
	switch n := len(payload); {
	case n < 126:
		h = []byte{b0, byte(n)}
	case n < 1<<16:
		h = []byte{b0, 126, byte(n >> 8), byte(n)}
	default:
		h = []byte{b0, 127, 0, 0, 0, 0, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
	}
	return append(h, payload...)
}

type gotFrame struct {
	op      byte
	payload string
}

// TestFrameParser feeds a stream of frames cut at every possible place (and in one piece):
// every frame comes out whole and in order, a fragmented message once, a ping between its
// fragments on its own.
func TestFrameParser(t *testing.T) {
	big := strings.Repeat("b", 70_000)
	var stream []byte
	var want []gotFrame
	add := func(op byte, p string) {
		stream = append(stream, serverFrame(op, true, []byte(p))...)
		want = append(want, gotFrame{op, p})
	}
	add(opText, `{"type":"welcome"}`)
	add(opText, "")
	add(opText, strings.Repeat("m", 300))
	add(opPing, "hi")
	add(opBinary, big)
	// A fragmented text message with a ping in the middle.
	stream = append(stream, serverFrame(opText, false, []byte("frag-1,"))...)
	stream = append(stream, serverFrame(opPing, true, []byte("p2"))...)
	stream = append(stream, serverFrame(opContinuation, false, []byte("frag-2,"))...)
	stream = append(stream, serverFrame(opContinuation, true, []byte("frag-3"))...)
	want = append(want, gotFrame{opPing, "p2"}, gotFrame{opText, "frag-1,frag-2,frag-3"})
	add(opClose, "\x03\xe8bye")

	check := func(name string, pieces [][]byte) {
		t.Helper()
		var p frameParser
		var got []gotFrame
		for _, piece := range pieces {
			if err := p.feed(piece, func(op byte, b []byte) error {
				got = append(got, gotFrame{op, string(b)})
				return nil
			}); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}
		if len(got) != len(want) {
			t.Fatalf("%s: %d frames, want %d", name, len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%s: frame %d is op %d with %d bytes, want op %d with %d bytes", name, i, got[i].op, len(got[i].payload), want[i].op, len(want[i].payload))
			}
		}
		if p.acc != nil || p.inPayload || p.hn != 0 {
			t.Fatalf("%s: parser holds state after whole frames", name)
		}
	}
	check("whole", [][]byte{stream})
	for cut := 1; cut < len(stream); cut += 1 + cut/50 {
		check(fmt.Sprintf("cut at %d", cut), [][]byte{stream[:cut], stream[cut:]})
	}
	var bytewise [][]byte
	for i := range stream[:2000] {
		bytewise = append(bytewise, stream[i:i+1])
	}
	check("byte by byte", append(bytewise, stream[2000:]))

	// Errors: a masked server frame, an oversized one, a continuation out of the blue, a fn error.
	for name, in := range map[string][]byte{
		"masked":       {0x81, 0x82, 1, 2, 3, 4, 'a', 'b'},
		"oversized":    {0x82, 127, 0, 0, 0, 0, 0x10, 0, 0, 0},
		"continuation": serverFrame(opContinuation, true, []byte("x")),
		"long control": serverFrame(opPing, true, bytes.Repeat([]byte("x"), 126)),
	} {
		var p frameParser
		if err := p.feed(in, func(byte, []byte) error { return nil }); !errors.Is(err, errFrame) {
			t.Errorf("%s: error %v, want errFrame", name, err)
		}
	}
	stop := errors.New("stop")
	var p frameParser
	if err := p.feed(stream, func(byte, []byte) error { return stop }); err != stop {
		t.Errorf("fn's error: got %v", err)
	}
}

func TestClientFrameIsMasked(t *testing.T) {
	for _, n := range []int{0, 5, 125, 126, 300, 70_000} {
		payload := bytes.Repeat([]byte("z"), n)
		f := appendClientFrame(nil, opText, payload)
		if f[0] != 0x81 || f[1]&0x80 == 0 {
			t.Fatalf("%d bytes: header % x", n, f[:2])
		}
		hl := headerLen(f)
		key := f[hl : hl+4]
		body := f[hl+4:]
		if len(body) != n {
			t.Fatalf("%d bytes: body of %d", n, len(body))
		}
		for i := range body {
			body[i] ^= key[i&3]
		}
		if !bytes.Equal(body, payload) {
			t.Fatalf("%d bytes: unmasked payload differs", n)
		}
	}
}

// TestReadersAndPings runs both readers against a node that pings every 200 ms and drops a
// connection that does not answer within 2 × ping + write timeout (1.4 s): the run outlives that
// twice over, so a reader that did not answer pings would lose its connections. (A 400 ms window
// once dropped a connection whose reader was starved of CPU under CI's parallel race runs.)
func TestReadersAndPings(t *testing.T) {
	url := startGateway(t, "GATEWAY_WS_PING_INTERVAL=200ms", "GATEWAY_WS_WRITE_TIMEOUT=1s")
	for _, reader := range []string{readerEpoll, readerGoroutine} {
		t.Run(reader, func(t *testing.T) {
			o := defaults()
			o.URL, o.Secret, o.APIKey, o.Reader, o.Readers = url, testSecret, testAPIKey, reader, 2
			o.Conns, o.Channels, o.Rate, o.Duration = 30, 3, 40, 3*time.Second
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			rep, err := run(ctx, o)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Subscribed != 30 || rep.ClosedEarly != 0 || len(rep.Disconnects) != 0 {
				t.Fatalf("subscribed %d, closed during the run %d, disconnects %v", rep.Subscribed, rep.ClosedEarly, rep.Disconnects)
			}
			if rep.Published == 0 || rep.Lost != 0 || rep.Received != 10*rep.Published {
				t.Fatalf("published %d received %d lost %d", rep.Published, rep.Received, rep.Lost)
			}
			if rep.Options.Reader != reader {
				t.Fatalf("report says reader %q", rep.Options.Reader)
			}
		})
	}
}

// TestPublishThroughTheBroker publishes straight to NATS, with the gateway's own settings,
// to a node on NATS (skipped without a NATS server on 127.0.0.1:4222).
func TestPublishThroughTheBroker(t *testing.T) {
	nodetest.SkipUnreachable(t, "NATS", nodetest.NATSAddr)
	const secret = "wsbench-test-secret-0123456789abcdef"
	prefix := fmt.Sprintf("wsbench%d", time.Now().UnixNano())
	env := map[string]string{"GATEWAY_BROKER": "nats", "GATEWAY_NATS_URL": "nats://127.0.0.1:4222", "GATEWAY_TOPIC_PREFIX": prefix}
	var environ []string
	for k, v := range env {
		t.Setenv(k, v) // -publish broker reads the gateway's settings from the environment
		environ = append(environ, k+"="+v)
	}
	cfg, err := configs.Load("", append(environ, "GATEWAY_JWT_SECRET="+secret, "GATEWAY_ADDR=127.0.0.1:0", "GATEWAY_DRAIN_PERIOD=200ms"))
	if err != nil {
		t.Fatal(err)
	}
	_, url := nodetest.InProcess(t, cfg)
	o := defaults()
	o.URL, o.Secret, o.Publish = url, secret, publishBroker
	o.Conns, o.Channels, o.Rate, o.Duration = 10, 2, 40, time.Second
	if err := o.normalize(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Subscribed != 10 || rep.Published == 0 || rep.PublishErrors != 0 || rep.Lost != 0 || rep.Received != 5*rep.Published {
		t.Fatalf("subscribed %d published %d (errors %v) received %d lost %d", rep.Subscribed, rep.Published, rep.PublishErrKinds, rep.Received, rep.Lost)
	}

	// The embedded memory broker cannot be reached from outside the gateway.
	t.Setenv("GATEWAY_BROKER", "memory")
	if _, err := newBench(o); err == nil || !strings.Contains(err.Error(), "memory") {
		t.Fatalf("broker publishing with the memory broker: %v", err)
	}
}

// TestFrameParserInflates: with permessage-deflate negotiated, a compressed message (RSV1) is
// inflated, whole in one read or split over reads (one byte at a time), beside plain ones;
// without it, RSV1 is a malformed frame.
func TestFrameParserInflates(t *testing.T) {
	msg := bytes.Repeat([]byte(`{"type":"message","data":{"t":1,"pad":"abc"}}`), 100)
	var z bytes.Buffer
	fw, _ := flate.NewWriter(&z, 1)
	_, _ = fw.Write(msg)
	_ = fw.Flush()
	payload := bytes.TrimSuffix(z.Bytes(), []byte{0, 0, 0xff, 0xff})
	compressed := append([]byte{0xc1, 126, byte(len(payload) >> 8), byte(len(payload))}, payload...)
	plain := []byte{0x81, 2, 'h', 'i'}
	stream := slices.Concat(compressed, plain, compressed)
	for _, step := range []int{len(stream), 1, 7} {
		p := frameParser{inflate: &inflater{}}
		var got [][]byte
		for i := 0; i < len(stream); i += step {
			if err := p.feed(stream[i:min(i+step, len(stream))], func(op byte, b []byte) error {
				got = append(got, bytes.Clone(b))
				return nil
			}); err != nil {
				t.Fatalf("step %d: %v", step, err)
			}
		}
		if len(got) != 3 || !bytes.Equal(got[0], msg) || string(got[1]) != "hi" || !bytes.Equal(got[2], msg) {
			t.Fatalf("step %d: got %d messages", step, len(got))
		}
	}
	var p frameParser // not negotiated
	if err := p.feed(compressed, func(byte, []byte) error { return nil }); !errors.Is(err, errFrame) {
		t.Fatalf("RSV1 without negotiation: %v", err)
	}
}
