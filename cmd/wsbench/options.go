package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"time"
)

// options are the settings of one run (the command-line flags).
type options struct {
	URL           string        // base http(s) URL of the gateway, or several separated by commas (the nodes)
	Nodes         []string      // the base URLs of URL, split (filled by normalize)
	Churn         float64       // connections per second closed and resumed on the next node (0: none)
	Gaps          bool          // check every delivery by its seq: gaps and duplicates per connection
	Conns         int           // WebSocket connections
	Channels      int           // distinct channels; 0 means one per connection
	ChannelPrefix string        // channel names: prefix (one channel) or prefix.<i mod Channels>
	Token         string        // one token for every connection
	Secret        string        // HS256 secret to mint a token per connection
	APIKey        string        // key of POST /api/publish
	Publish       string        // "http" (POST /api/publish) or "broker" (straight to the broker, GATEWAY_* settings)
	Config        string        // with -publish broker: the gateway's YAML configuration file (optional)
	Rate          float64       // messages/s published, over all channels
	Publishers    int           // HTTP publishing goroutines
	Duration      time.Duration // publishing time, or holding time with Idle
	Payload       int           // payload bytes
	PID           int           // server process to sample (0: none)
	BrokerPID     int           // broker server process to sample (0: none)
	SourceIPs     int           // spread source addresses over 127.0.0.2 .. 127.0.0.(1+N); 0: kernel's choice
	Idle          bool          // connect, subscribe and hold; no publishing
	Ramp          float64       // connections opened per second (0: as fast as MaxInflight allows)
	MaxInflight   int           // connections being opened at once
	Grace         time.Duration // wait for late deliveries after publishing stops
	Timeout       time.Duration // hard cap of the whole run (0: derived from the others)
	JSON          string        // write the report here
	Quiet         bool          // no progress lines
	Reader        string        // "epoll" (a few goroutines read every socket) or "goroutine" (one per connection)
	Readers       int           // epoll reader goroutines
	Transport     string        // "websocket" (GET /ws) or "sse" (GET /sse, Server-Sent Events)
	Compression   bool          // offer permessage-deflate (WebSocket)
	Pad           string        // how payloads are padded: "x" or "words"
	Server        string        // "gateway" (this project's protocol) or "centrifugo" (Centrifugo's JSON protocol)
	Progress      io.Writer     // where progress lines go (nil: none)
}

const (
	maxConns     = 1_000_000
	maxPayload   = 60 << 10 // below the gateway's default 64 KiB frame limit
	maxSourceIPs = 65_000
	maxTracked   = 50_000_000 // messages -gaps tracks (8 bytes each)

	publishHTTP   = "http"
	publishBroker = "broker"

	transportWebSocket = "websocket"
	transportSSE       = "sse"

	serverGateway    = "gateway"
	serverCentrifugo = "centrifugo"

	readerEpoll     = "epoll"
	readerGoroutine = "goroutine"
)

// defaults are the flag defaults.
func defaults() options {
	return options{
		URL:           "http://127.0.0.1:8080",
		Conns:         100,
		Channels:      1,
		ChannelPrefix: "bench",
		Publishers:    4,
		Publish:       publishHTTP,
		Readers:       1,
		Transport:     transportWebSocket,
		Server:        serverGateway,
		Duration:      10 * time.Second,
		Payload:       128,
		Pad:           padX,
		MaxInflight:   64,
		Grace:         5 * time.Second,
	}
}

// parseFlags reads the command line into options and validates them.
func parseFlags(args []string, stderr io.Writer) (options, error) {
	o := defaults()
	fs := flag.NewFlagSet("wsbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "wsbench: load tool for the WebSocket gateway; it stops by itself after -duration plus a grace.")
		fmt.Fprintln(stderr, "usage: wsbench -url http://host:port -conns N [-channels N] (-secret S | -token T) [-api-key K -rate R | -idle] [flags]")
		fs.PrintDefaults()
	}
	fs.StringVar(&o.URL, "url", o.URL, "base `URL` of the gateway (http or https); /ws and /api/publish are appended. Several nodes: URLs separated by commas; connection i opens on node i mod n and publishing goes round-robin over them")
	fs.Float64Var(&o.Churn, "churn", 0, "while publishing, close this many `connections per second` (in turn) and resume each on the next node of -url with since=<last position>; implies -gaps and -reader goroutine")
	fs.BoolVar(&o.Gaps, "gaps", false, "check every delivery by its seq: each message published after a connection's first subscribe must reach it once (gaps and duplicates per connection)")
	fs.IntVar(&o.Conns, "conns", o.Conns, "WebSocket connections to open")
	fs.IntVar(&o.Channels, "channels", o.Channels, "distinct `count` of channels: 1 puts every connection on the channel named by -channel-prefix; N>1 puts connection i on <prefix>.<i mod N>; 0 gives each connection its own channel")
	fs.StringVar(&o.ChannelPrefix, "channel-prefix", o.ChannelPrefix, "channel name `prefix`")
	fs.StringVar(&o.Token, "token", "", "one JWT used by every connection")
	fs.StringVar(&o.Secret, "secret", "", "HS256 `secret` (GATEWAY_JWT_SECRET) to mint a token per connection: sub=bench-<i>, channels [\"*\"]")
	fs.StringVar(&o.APIKey, "api-key", "", "API `key` (GATEWAY_API_KEY) for POST /api/publish")
	fs.Float64Var(&o.Rate, "rate", 0, "messages per second published (see -publish), round-robin over the channels")
	fs.StringVar(&o.Publish, "publish", o.Publish, "`how` to publish: http (POST /api/publish, needs -api-key) or broker (straight to the gateway's broker, configured by the same GATEWAY_* environment as the gateway: GATEWAY_BROKER, GATEWAY_NATS_URL, GATEWAY_REDIS_ADDR, GATEWAY_TOPIC_PREFIX, signing keys...; not the embedded memory broker)")
	fs.IntVar(&o.Publishers, "publishers", o.Publishers, "HTTP publishing goroutines")
	fs.DurationVar(&o.Duration, "duration", o.Duration, "how long to publish (or, with -idle, to hold the connections)")
	fs.IntVar(&o.Payload, "payload", o.Payload, "payload size in `bytes` (JSON {\"t\":…,\"seq\":…,\"pad\":\"…\"})")
	fs.IntVar(&o.PID, "pid", 0, "server `PID` to sample (VmRSS, utime+stime from /proc) for memory per connection and CPU per 1,000 deliveries")
	fs.IntVar(&o.BrokerPID, "broker-pid", 0, "broker server `PID` (nats-server, redis-server) to sample like -pid: its CPU per 1,000 deliveries and per message published, beside the server's")
	fs.IntVar(&o.SourceIPs, "source-ips", 0, "spread client source addresses over `N` loopback addresses 127.0.0.2.. (loopback targets only; needed beyond ~28k connections per address); 0 with more than 25,000 connections to loopback picks enough")
	fs.BoolVar(&o.Idle, "idle", false, "connect, subscribe and hold for -duration without publishing (memory measurement)")
	fs.Float64Var(&o.Ramp, "ramp", 0, "connections opened per second (0: as fast as -inflight allows)")
	fs.IntVar(&o.MaxInflight, "inflight", o.MaxInflight, "connections being opened (dial, welcome, subscribe) at once")
	fs.DurationVar(&o.Grace, "grace", o.Grace, "after publishing, how long to wait for deliveries still in flight")
	fs.DurationVar(&o.Timeout, "timeout", 0, "hard cap of the whole run (0: connect budget + duration + grace + 10s)")
	fs.StringVar(&o.JSON, "json", "", "write the final report as JSON to `FILE`")
	fs.BoolVar(&o.Quiet, "quiet", false, "no progress line every second")
	fs.StringVar(&o.Config, "config", "", "with -publish broker: the gateway's YAML configuration `file` (GATEWAY_* variables apply on top, as for the gateway)")
	fs.StringVar(&o.Reader, "reader", "", "`how` to read the connections: epoll (a few goroutines with an epoll set each; Linux, plain http) or goroutine (one per connection, like most clients); default epoll where it works")
	fs.StringVar(&o.Transport, "transport", o.Transport, "`how` clients connect: websocket (GET /ws, a subscribe frame each) or sse (GET /sse?channel=…, Server-Sent Events: the same frames as events)")
	fs.BoolVar(&o.Compression, "compression", false, "offer permessage-deflate (RFC 7692) on every WebSocket connection; compressed messages are inflated to read them (the server compresses only with websocket.compression on)")
	fs.StringVar(&o.Pad, "pad", padX, "`how` payloads are padded to -payload bytes: x (one letter repeated: deflate makes it almost nothing) or words (words drawn from a small vocabulary, different per message: deflate shrinks it 3-4 times, like common JSON)")
	fs.StringVar(&o.Server, "server", o.Server, "the `protocol` of the server measured: gateway (this project's, also spoken by cmd/baremelody) or centrifugo (Centrifugo v6's JSON protocol on /connection/websocket: connect with the token, subscribe; publishing through its HTTP API /api/publish with X-API-Key: -api-key); only -transport websocket, -publish http")
	fs.IntVar(&o.Readers, "readers", o.Readers, "epoll reader goroutines (each reads its share of the connections on one core at most)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if err := o.normalize(); err != nil {
		return o, err
	}
	return o, nil
}

// normalize validates o and fills derived defaults.
func (o *options) normalize() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	o.Nodes = o.Nodes[:0]
	for _, n := range strings.Split(o.URL, ",") {
		if n = strings.TrimSpace(n); n != "" {
			o.Nodes = append(o.Nodes, n)
		}
	}
	if len(o.Nodes) == 0 {
		o.Nodes = []string{""}
	}
	u, err := url.Parse(o.Nodes[0])
	for _, n := range o.Nodes[1:] {
		if v, verr := url.Parse(n); verr != nil {
			err = verr
		} else if v.Scheme != u.Scheme {
			bad("-url: every node needs the same scheme (%q, %q)", u.Scheme, v.Scheme)
		}
	}
	switch {
	case err != nil:
		bad("-url: %v", err)
	case u.Scheme != "http" && u.Scheme != "https":
		bad("-url: scheme must be http or https, not %q", u.Scheme)
	case u.Hostname() == "":
		bad("-url: no host")
	}
	if o.Conns < 1 || o.Conns > maxConns {
		bad("-conns must be 1 to %d", maxConns)
	}
	if o.Channels < 0 || o.Channels > o.Conns {
		bad("-channels must be 0 (one per connection) to -conns (%d)", o.Conns)
	}
	if o.Channels == 0 {
		o.Channels = o.Conns
	}
	if o.ChannelPrefix == "" || len(o.ChannelPrefix) > 100 || !validChannel(o.ChannelPrefix) {
		bad("-channel-prefix must be 1 to 100 of A-Z a-z 0-9 _ : . -")
	}
	if o.Token != "" && o.Secret != "" {
		bad("-token and -secret exclude each other")
	}
	if o.Rate < 0 || o.Rate > 1e6 {
		bad("-rate must be 0 to 1e6 messages/s")
	}
	if o.Idle && o.Rate > 0 {
		bad("-idle publishes nothing: drop -rate")
	}
	if !o.Idle && o.Rate == 0 {
		bad("-rate is required (or -idle)")
	}
	switch o.Publish {
	case publishHTTP:
		if o.Rate > 0 && o.APIKey == "" {
			bad("-rate needs -api-key (or -publish broker)")
		}
	case publishBroker:
	default:
		bad("-publish must be http or broker, not %q", o.Publish)
	}
	if o.Churn < 0 || o.Churn > 10_000 {
		bad("-churn must be 0 to 10000 connections/s")
	}
	if o.Churn > 0 {
		o.Gaps = true
		if o.Idle {
			bad("-churn resumes while publishing: drop -idle")
		}
		if o.Transport == transportSSE {
			bad("-churn is for -transport websocket")
		}
		if o.Reader == readerEpoll {
			bad("-churn needs -reader goroutine (a resumed connection is read by its own goroutine)")
		}
		o.Reader = readerGoroutine
	}
	if o.Gaps && o.Rate*o.Duration.Seconds() > maxTracked {
		bad("-gaps tracks every message: -rate × -duration must stay below %d", maxTracked)
	}
	switch o.Reader {
	case "":
		o.Reader = readerGoroutine
		if epollAvailable && err == nil && u.Scheme == "http" {
			o.Reader = readerEpoll
		}
	case readerGoroutine:
	case readerEpoll:
		if !epollAvailable {
			bad("-reader epoll works only on Linux")
		} else if err == nil && u.Scheme != "http" {
			bad("-reader epoll reads plain sockets: use it with an http -url, or -reader goroutine")
		}
	default:
		bad("-reader must be epoll or goroutine, not %q", o.Reader)
	}
	if o.Transport != transportWebSocket && o.Transport != transportSSE {
		bad("-transport must be websocket or sse, not %q", o.Transport)
	}
	if o.Pad != padX && o.Pad != padWords {
		bad("-pad must be x or words, not %q", o.Pad)
	}
	if o.Compression && o.Transport == transportSSE {
		bad("-compression is for -transport websocket")
	}
	switch o.Server {
	case serverGateway:
	case serverCentrifugo:
		if o.Transport != transportWebSocket {
			bad("-server centrifugo works with -transport websocket only")
		}
		if o.Publish != publishHTTP {
			bad("-server centrifugo publishes through its HTTP API only (-publish http)")
		}
		if o.Compression {
			bad("-server centrifugo: -compression is not supported")
		}
	default:
		bad("-server must be gateway or centrifugo, not %q", o.Server)
	}
	if o.Readers < 1 || o.Readers > 64 {
		bad("-readers must be 1 to 64")
	}
	if o.Publishers < 1 || o.Publishers > 256 {
		bad("-publishers must be 1 to 256")
	}
	if o.Duration <= 0 || o.Duration > 24*time.Hour {
		bad("-duration must be above 0 and at most 24h")
	}
	if o.Payload < 0 || o.Payload > maxPayload {
		bad("-payload must be 0 to %d bytes", maxPayload)
	}
	if o.PID < 0 {
		bad("-pid must be a process id")
	}
	if o.BrokerPID < 0 {
		bad("-broker-pid must be a process id")
	}
	if o.Ramp < 0 {
		bad("-ramp must be 0 or more connections/s")
	}
	if o.MaxInflight < 1 || o.MaxInflight > 10_000 {
		bad("-inflight must be 1 to 10000")
	}
	if o.Grace < 0 || o.Grace > time.Hour {
		bad("-grace must be 0 to 1h")
	}
	if o.Timeout < 0 {
		bad("-timeout must not be negative")
	}
	if o.SourceIPs < 0 || o.SourceIPs > maxSourceIPs {
		bad("-source-ips must be 0 to %d", maxSourceIPs)
	}
	if err == nil && u.Hostname() != "" {
		loop := isLoopback(u.Hostname())
		if o.SourceIPs > 0 && !loop {
			bad("-source-ips works only against a loopback -url (127.0.0.0/8, localhost)")
		}
		if o.SourceIPs == 0 && loop && o.Conns > 25_000 {
			o.SourceIPs = (o.Conns + 19_999) / 20_000
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if o.Timeout == 0 {
		o.Timeout = o.connectBudget() + o.Duration + o.Grace + 10*time.Second
	}
	return nil
}

// connectBudget bounds the phase that opens and subscribes the connections.
func (o *options) connectBudget() time.Duration {
	if o.Ramp > 0 {
		return time.Duration(float64(o.Conns)/o.Ramp*float64(time.Second)) + 30*time.Second
	}
	return 30*time.Second + time.Duration(o.Conns)*5*time.Millisecond // at worst 200 connections/s
}

// channelOf is the channel of connection i.
func (o *options) channelOf(i int) string {
	if o.Channels <= 1 {
		return o.ChannelPrefix
	}
	return fmt.Sprintf("%s.%d", o.ChannelPrefix, i%o.Channels)
}

// channelName is the name of channel index c.
func (o *options) channelName(c int) string { return o.channelOf(c) }

func validChannel(s string) bool {
	for _, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_:.-", r)
		if !ok {
			return false
		}
	}
	return true
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback() && ip.To4() != nil
}
