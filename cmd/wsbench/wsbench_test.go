package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/flate"

	"github.com/wsgateway/gateway/configs"
	"github.com/wsgateway/gateway/internal/nodetest"
)

func TestHistogramBuckets(t *testing.T) {
	prev := -1
	for v := uint64(0); v < 1<<22; v += 1 + v/97 {
		i := bucketOf(v)
		if i < prev {
			t.Fatalf("bucketOf(%d) = %d after %d: not monotonic", v, i, prev)
		}
		prev = i
		lo, hi := bucketBounds(i)
		if v < lo || v > hi {
			t.Fatalf("value %d in bucket %d [%d, %d]", v, i, lo, hi)
		}
		if v >= 64 && float64(hi-lo+1) > float64(v)/64+1 {
			t.Fatalf("bucket %d [%d, %d] is coarser than 1/64 of %d", i, lo, hi, v)
		}
	}
	if i := bucketOf(1 << 50); i != histBuckets-1 {
		t.Fatalf("huge value in bucket %d, want the last (%d)", i, histBuckets-1)
	}
}

func TestHistogramQuantiles(t *testing.T) {
	var h Histogram
	if h.Quantile(0.99) != 0 || h.Max() != 0 || h.Mean() != 0 {
		t.Fatal("empty histogram reports values")
	}
	// 1 ms .. 1000 ms, one each.
	for v := 1; v <= 1000; v++ {
		h.Record(time.Duration(v) * time.Millisecond)
	}
	h.Record(-time.Second) // clock step: counts as 0
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Millisecond}, {0.9, 900 * time.Millisecond}, {0.99, 990 * time.Millisecond}, {1, time.Second}} {
		got := h.Quantile(c.q)
		if diff := float64(got-c.want) / float64(c.want); diff < -0.02 || diff > 0.02 {
			t.Errorf("q%.2f = %v, want %v ± 2%%", c.q, got, c.want)
		}
	}
	if h.Max() != time.Second {
		t.Errorf("max %v", h.Max())
	}
	if h.Count() != 1001 {
		t.Errorf("count %d", h.Count())
	}
	// Sub-millisecond values stay fine-grained.
	var small Histogram
	for range 99 {
		small.Record(300 * time.Microsecond)
	}
	small.Record(5 * time.Millisecond)
	if q := small.Quantile(0.5); q < 295*time.Microsecond || q > 305*time.Microsecond {
		t.Errorf("p50 of 300µs values = %v", q)
	}
	if q := small.Quantile(1); q != 5*time.Millisecond {
		t.Errorf("p100 = %v, want the max", q)
	}
	var merged Histogram
	merged.Merge(&h)
	merged.Merge(&small)
	if merged.Count() != 1101 || merged.Max() != time.Second {
		t.Errorf("merged count %d max %v", merged.Count(), merged.Max())
	}
}

func TestPayload(t *testing.T) {
	const ts = int64(1767225600123456789)
	for _, c := range []struct {
		size int
		pad  string
	}{{0, padX}, {10, padX}, {64, padX}, {128, padX}, {1000, padX}, {0, padWords}, {64, padWords}, {128, padWords}, {4096, padWords}} {
		size := c.size
		p := appendPayload(nil, ts, 42, size, c.pad)
		var v struct {
			T   int64  `json:"t"`
			Seq uint64 `json:"seq"`
			Pad string `json:"pad"`
		}
		if err := json.Unmarshal(p, &v); err != nil {
			t.Fatalf("size %d: %s is not JSON: %v", size, p, err)
		}
		if v.T != ts || v.Seq != 42 {
			t.Fatalf("size %d: decoded %+v", size, v)
		}
		if size >= 64 && len(p) != size {
			t.Fatalf("size %d: payload is %d bytes", size, len(p))
		}
	}
	// Words differ per message and deflate shrinks them about as much as common JSON text.
	w1, w2 := appendPayload(nil, ts, 1, 4096, padWords), appendPayload(nil, ts, 2, 4096, padWords)
	if bytes.Equal(w1[40:], w2[40:]) {
		t.Fatal("two messages have the same words")
	}
	var z bytes.Buffer
	fw, _ := flate.NewWriter(&z, 1)
	_, _ = fw.Write(w1)
	_ = fw.Close()
	if r := float64(len(w1)) / float64(z.Len()); r < 2 || r > 6 {
		t.Fatalf("deflate shrinks the words %.1f times", r)
	} else {
		t.Logf("deflate (level 1) shrinks 4 KiB of words %.1f times", r)
	}
	body := appendPublishBody(nil, "bench.3", ts, 7, 128, padX)
	var req struct {
		Channel string          `json:"channel"`
		Data    json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &req); err != nil || req.Channel != "bench.3" || len(req.Data) != 128 {
		t.Fatalf("publish body %s: %v %+v", body, err, req)
	}
}

func TestPayloadTime(t *testing.T) {
	const ts = int64(1767225600123456789)
	p := string(appendPayload(nil, ts, 1, 128, padX))
	for _, c := range []struct {
		frame string
		want  int64
		ok    bool
	}{
		{`{"type":"message","channel":"bench","id":"x","position":"1","data":` + p + `}`, ts, true},
		{`{"type":"message","channel":"bench","id":"x","data":{"seq":1,"t":123}}`, 123, true},
		{`{"type":"message","channel":"bench","id":"x","data":{"t": 5}}`, 5, true},
		// a "t" outside data does not count
		{`{"type":"message","t":9,"id":"x","data":{"other":1}}`, 0, false},
		{`{"type":"message","channel":"c","id":"x","data":"aGVsbG8=","encoding":"base64"}`, 0, false},
		{`{"type":"message","data":{"t":"str"}}`, 0, false},
		{`{"type":"message","data":{"t":12345678901234567890}}`, 0, false}, // 20 digits
		{`{"type":"welcome","session":"s"}`, 0, false},
		{``, 0, false},
	} {
		got, ok := payloadTime([]byte(c.frame))
		if got != c.want || ok != c.ok {
			t.Errorf("payloadTime(%s) = %d, %v; want %d, %v", c.frame, got, ok, c.want, c.ok)
		}
	}
	if typ := frameType([]byte(`{"type":"disconnect","code":"slow_consumer","reason":"x","reconnect":true}`)); string(typ) != "disconnect" {
		t.Errorf("type %q", typ)
	}
	if code := stringField([]byte(`{"type":"disconnect","code":"slow_consumer"}`), keyCode); string(code) != "slow_consumer" {
		t.Errorf("code %q", code)
	}
	if typ := frameType([]byte(`{"typ":"x"}`)); typ != nil {
		t.Errorf("type of a frame without one: %q", typ)
	}
}

func TestProcParsing(t *testing.T) {
	rss, err := parseVmRSS([]byte("Name:\tgw\nVmPeak:\t  9000 kB\nVmRSS:\t   12345 kB\nThreads:\t5\n"))
	if err != nil || rss != 12345 {
		t.Fatalf("rss %d %v", rss, err)
	}
	if _, err := parseVmRSS([]byte("Name:\tzombie\n")); err == nil {
		t.Fatal("no error without VmRSS")
	}
	// The command name may hold spaces and parentheses.
	stat := "4242 (my (gw) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 8 0 100 1000 200"
	cpu, err := parseStatCPU([]byte(stat))
	if err != nil || cpu != 3250*time.Millisecond {
		t.Fatalf("cpu %v %v", cpu, err)
	}
	if _, err := parseStatCPU([]byte("1 (x) S 1")); err == nil {
		t.Fatal("no error for a short stat")
	}
	if w, err := parseSyscW([]byte("rchar: 1\nwchar: 2\nsyscr: 3\nsyscw: 4567\nread_bytes: 0\n")); err != nil || w != 4567 {
		t.Fatalf("syscw %d %v", w, err)
	}
	if _, err := parseSyscW([]byte("rchar: 1\n")); err == nil {
		t.Fatal("no error without syscw")
	}
	if n := countCPULines([]byte("cpu  1 2 3\ncpu0 1 2 3\ncpu1 4 5 6\nintr 7\n")); n != 2 {
		t.Fatalf("%d cpu lines, want 2", n)
	}
	busy, err := parseHostCPU([]byte("cpu  100 5 50 9000 7 3 2 1 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n"))
	if err != nil || busy != 161*clockTick {
		t.Fatalf("host busy %v %v", busy, err)
	}
	if _, err := parseHostCPU([]byte("intr 1 2 3\n")); err == nil {
		t.Fatal("no error without a cpu line")
	}
	// This process, for real.
	s, err := sampleProc(syscallGetpid())
	if err != nil || s.RSSKiB <= 0 {
		t.Fatalf("sampling self: %+v %v", s, err)
	}
}

func TestFlags(t *testing.T) {
	ok := func(args ...string) options {
		t.Helper()
		o, err := parseFlags(args, io.Discard)
		if err != nil {
			t.Fatalf("%q: %v", args, err)
		}
		return o
	}
	bad := func(want string, args ...string) {
		t.Helper()
		_, err := parseFlags(args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%q: error %v, want one mentioning %q", args, err, want)
		}
	}
	o := ok("-idle", "-conns", "10")
	if o.URL != "http://127.0.0.1:8080" || o.Payload != 128 || o.Channels != 1 || o.Timeout <= o.Duration {
		t.Fatalf("defaults %+v", o)
	}
	if o.channelOf(7) != "bench" {
		t.Fatalf("one channel: %s", o.channelOf(7))
	}
	o = ok("-conns", "10", "-channels", "3", "-rate", "5", "-api-key", "k", "-secret", "s")
	if o.channelOf(7) != "bench.1" || o.channelName(2) != "bench.2" {
		t.Fatalf("channels: %s %s", o.channelOf(7), o.channelName(2))
	}
	o = ok("-conns", "10", "-channels", "0", "-idle")
	if o.Channels != 10 || o.channelOf(9) != "bench.9" {
		t.Fatalf("one per connection: %d %s", o.Channels, o.channelOf(9))
	}
	o = ok("-conns", "60000", "-channels", "0", "-idle")
	if o.SourceIPs != 3 {
		t.Fatalf("source ips for 60k loopback connections: %d", o.SourceIPs)
	}
	if a := sourceAddr(5, 3).IP.String(); a != "127.0.0.4" {
		t.Fatalf("source address %s", a)
	}
	ok("-url", "https://gw.example.com/base", "-idle", "-conns", "1")
	bad("-rate is required", "-conns", "1")
	bad("-rate needs -api-key", "-rate", "10")
	bad("-idle publishes nothing", "-idle", "-rate", "10", "-api-key", "k")
	bad("exclude each other", "-idle", "-token", "t", "-secret", "s")
	bad("-conns", "-idle", "-conns", "0")
	bad("-channels", "-idle", "-conns", "5", "-channels", "6")
	bad("-duration", "-idle", "-duration", "0s")
	bad("-payload", "-idle", "-payload", "100000")
	bad("scheme", "-idle", "-url", "ws://127.0.0.1:8080")
	bad("loopback", "-idle", "-url", "http://gw.example.com", "-source-ips", "2")
	bad("-channel-prefix", "-idle", "-channel-prefix", "a b")
	bad("unexpected arguments", "-idle", "extra")
	o = ok("-url", "http://127.0.0.1:1, http://127.0.0.1:2", "-rate", "5", "-api-key", "k", "-churn", "2")
	if len(o.Nodes) != 2 || o.Nodes[1] != "http://127.0.0.1:2" || !o.Gaps || o.Reader != readerGoroutine {
		t.Fatalf("nodes and churn: %+v", o)
	}
	bad("same scheme", "-idle", "-url", "http://127.0.0.1:1,https://127.0.0.1:2")
	bad("-churn resumes while publishing", "-idle", "-churn", "1")
	bad("-churn needs -reader goroutine", "-rate", "5", "-api-key", "k", "-churn", "1", "-reader", "epoll")
	bad("-churn is for -transport websocket", "-rate", "5", "-api-key", "k", "-churn", "1", "-transport", "sse")
}

// testSecret and testAPIKey are the JWT secret and API key of startGateway's node.
const testSecret, testAPIKey = "wsbench-test-secret-0123456789abcdef", "wsbench-api-key-0123456789"

// startGateway starts an in-process gateway on the embedded broker with testSecret, testAPIKey, a
// free port, a 200 ms drain and the extra settings (GATEWAY_*=value), and returns its URL.
func startGateway(t *testing.T, extra ...string) string {
	t.Helper()
	cfg, err := configs.Load("", append([]string{
		"GATEWAY_JWT_SECRET=" + testSecret,
		"GATEWAY_API_KEY=" + testAPIKey,
		"GATEWAY_ADDR=127.0.0.1:0",
		"GATEWAY_DRAIN_PERIOD=200ms",
	}, extra...))
	if err != nil {
		t.Fatal(err)
	}
	_, url := nodetest.InProcess(t, cfg)
	return url
}

// TestEndToEnd runs the tool's core against an in-process gateway on the embedded broker.
func TestEndToEnd(t *testing.T) {
	url := startGateway(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	t.Run("OneChannel", func(t *testing.T) {
		o := defaults()
		o.URL, o.Secret, o.APIKey = url, testSecret, testAPIKey
		o.Conns, o.Channels, o.Rate, o.Duration = 20, 1, 50, 2*time.Second
		o.PID = syscallGetpid() // the gateway runs in this process
		rep, err := run(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Subscribed != 20 || rep.Failed != 0 || rep.PublishErrors != 0 {
			t.Fatalf("report %+v", rep)
		}
		if rep.Published == 0 || rep.Lost != 0 || rep.Extra != 0 {
			t.Fatalf("published %d, lost %d, extra %d", rep.Published, rep.Lost, rep.Extra)
		}
		if rep.Expected != 20*rep.Published || rep.Received != 20*rep.Published {
			t.Fatalf("expected %d, received %d, want 20 × %d", rep.Expected, rep.Received, rep.Published)
		}
		if rep.Latency.Count != uint64(rep.Received) || rep.Latency.P50 <= 0 || rep.Latency.Max < rep.Latency.P99 {
			t.Fatalf("latency %+v", rep.Latency)
		}
		if rep.Server == nil || rep.Server.RSSStartKiB <= 0 {
			t.Fatalf("server %+v", rep.Server)
		}
		var sb strings.Builder
		printTable(&sb, rep)
		if !strings.Contains(sb.String(), "lost 0") {
			t.Fatalf("table:\n%s", sb.String())
		}
		path := t.TempDir() + "/r.json"
		if err := writeJSON(path, rep); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("ChannelsAndToken", func(t *testing.T) {
		tok, err := mintToken(testSecret, 0, time.Now(), time.Now().Add(time.Hour), serverGateway)
		if err != nil {
			t.Fatal(err)
		}
		var progress strings.Builder
		o := defaults()
		o.URL, o.Token, o.APIKey = url, tok, testAPIKey
		o.Conns, o.Channels, o.Rate, o.Duration, o.Ramp = 12, 4, 40, time.Second, 100
		o.Progress = &lockedWriter{w: &progress}
		rep, err := run(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		// Each of the 4 channels has 3 subscribers.
		if rep.Subscribed != 12 || rep.Published == 0 || rep.Lost != 0 || rep.Received != 3*rep.Published {
			t.Fatalf("subscribed %d published %d received %d lost %d", rep.Subscribed, rep.Published, rep.Received, rep.Lost)
		}
		if !strings.Contains(o.Progress.(*lockedWriter).String(), "subscribed 12") {
			t.Fatalf("progress:\n%s", o.Progress.(*lockedWriter).String())
		}
	})

	t.Run("IdleAndRefused", func(t *testing.T) {
		o := defaults()
		o.URL, o.Secret = url, "wrong-secret"
		o.Conns, o.Idle, o.Duration = 3, true, 100*time.Millisecond
		rep, err := run(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Failed != 3 || rep.Subscribed != 0 || rep.ConnectErrors["http 401"] != 3 {
			t.Fatalf("report %+v", rep)
		}
	})
}

func syscallGetpid() int { return os.Getpid() }

// lockedWriter serializes writes (progress lines come from two goroutines).
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.(*strings.Builder).String()
}

// TestEndToEndCompression: against a node with websocket.compression on, a run with
// -compression negotiates permessage-deflate on every connection, reads every message (large
// ones compressed, inflated) and the server writes fewer bytes per delivery than to a run without.
func TestEndToEndCompression(t *testing.T) {
	url := startGateway(t, "GATEWAY_WS_COMPRESSION=true")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bytesPer := map[bool]float64{}
	for _, offer := range []bool{true, false} {
		for _, reader := range []string{readerEpoll, readerGoroutine} {
			o := defaults()
			o.URL, o.Secret, o.APIKey = url, testSecret, testAPIKey
			o.Conns, o.Channels, o.Rate, o.Duration, o.Payload = 10, 1, 40, time.Second, 4096
			o.Compression, o.Reader = offer, reader
			o.PID = syscallGetpid()
			rep, err := run(ctx, o)
			if err != nil {
				t.Fatal(err)
			}
			want := int64(0)
			if offer {
				want = 10
			}
			if rep.Subscribed != 10 || rep.Compressed != want {
				t.Fatalf("offer %v, %s: subscribed %d, compressed %d", offer, reader, rep.Subscribed, rep.Compressed)
			}
			if rep.Published == 0 || rep.Lost != 0 || rep.Received != 10*rep.Published || rep.ClosedEarly != 0 {
				t.Fatalf("offer %v, %s: published %d received %d lost %d closed %d", offer, reader, rep.Published, rep.Received, rep.Lost, rep.ClosedEarly)
			}
			if rep.Server == nil || rep.Server.BytesPerDelivery <= 0 {
				t.Fatalf("offer %v: no bytes per delivery: %+v", offer, rep.Server)
			}
			bytesPer[offer] = rep.Server.BytesPerDelivery
		}
	}
	if bytesPer[true] >= bytesPer[false]/2 {
		t.Fatalf("bytes per delivery compressed %.0f, plain %.0f", bytesPer[true], bytesPer[false])
	}
	t.Logf("bytes per delivery of a 4 KiB payload: compressed %.0f, plain %.0f", bytesPer[true], bytesPer[false])
}
