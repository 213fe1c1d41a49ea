package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/wsgateway/gateway"
	"github.com/wsgateway/gateway/clients/go/service"
	"github.com/wsgateway/gateway/configs"
)

const shards = 16

// shard holds counters of the connections i with i%shards == its index, so that readers on
// different cores rarely write the same cache line.
type shard struct {
	received atomic.Int64 // bench messages (with a payload time)
	other    atomic.Int64 // other frames after subscribing
	hist     Histogram
	_        [64]byte
}

// bench is the state of one run.
type bench struct {
	o       options
	wsURLs  []*url.URL // /ws of each node
	sseURLs []*url.URL // -transport sse: the http(s) URL of /sse of each node
	pubURLs []string   // /api/publish of each node
	shards  [shards]shard
	subsPer []atomic.Int64 // subscribed connections per channel index

	opened, failed, subscribed, subFailed, closedEarly atomic.Int64
	compressed                                         atomic.Int64 // connections that negotiated permessage-deflate
	published, pubErrors, pubSkipped, expected         atomic.Int64
	pubHist                                            Histogram // each successful publish, from send to answer

	measuring atomic.Bool // deliveries count only while measuring

	mu          sync.Mutex
	connErrors  map[string]int64
	disconnects map[string]int64
	pubErrKinds map[string]int64

	connsMu sync.Mutex
	conns   []*conn // open connections, for closeAll; nil once it ran
	closed  []*conn // the connections closeAll closed, for the gap check
	epoll   *epollReaders
	svc     *service.Service // -publish broker

	rateMu sync.Mutex
	last   rateState // of the previous progress line

	// With -gaps: the publish time of each message by seq (0: not published or failed), read
	// against each connection's first subscribe.
	pubT []atomic.Int64
	// With -churn: the run's context (a resume dials within it) and the resume counters.
	runCtx                                                       context.Context
	closing                                                      atomic.Bool // closeAll started: no more resumes
	resumes, resumesRecovered, resumesNotRecovered, resumeFailed atomic.Int64
}

// run performs one benchmark: open and subscribe o.Conns connections, then either hold them
// (o.Idle) or publish at o.Rate for o.Duration, wait up to o.Grace for late deliveries, close
// everything and report. It returns when done or when ctx ends (with a partial report), and
// never later than o.Timeout.
func run(ctx context.Context, o options) (*Report, error) {
	if err := o.normalize(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()

	b, err := newBench(o)
	if err != nil {
		return nil, err
	}
	b.runCtx = ctx
	if b.svc != nil {
		defer b.svc.Close()
	}
	rep := &Report{Options: reportOptions(o), Started: time.Now()}
	var s0, s1, s2, s3 procSample
	sample := func(s *procSample) {
		if o.PID == 0 {
			return
		}
		v, err := sampleProc(o.PID)
		if err != nil {
			rep.Notes = append(rep.Notes, "sampling pid: "+err.Error())
			return
		}
		*s = v
	}
	sample(&s0)
	var bs1, bs2 procSample // the broker's, around the measured phase
	sampleBroker := func(s *procSample) {
		if o.BrokerPID == 0 {
			return
		}
		v, err := sampleProc(o.BrokerPID)
		if err != nil {
			rep.Notes = append(rep.Notes, "sampling broker pid: "+err.Error())
			return
		}
		*s = v
	}

	// Phase 1: connect and subscribe.
	progressDone := b.startProgress(ctx, rep.Started)
	readers := &sync.WaitGroup{}
	t0 := time.Now()
	b.connectAll(ctx, readers)
	rep.ConnectSeconds = time.Since(t0).Seconds()
	b.progressLine("connected", rep.Started)
	sample(&s1)
	sampleBroker(&bs1)

	// Phase 2: publish, or hold.
	var tPub time.Time
	var pubDur time.Duration
	var cpu0, host0 time.Duration
	var hostOK bool
	if ctx.Err() == nil && b.subscribed.Load() > 0 {
		b.measuring.Store(true)
		tPub = time.Now()
		cpu0 = selfCPU()
		host0, hostOK = hostCPU()
		if o.Idle {
			sleepCtx(ctx, o.Duration)
		} else {
			stopChurn := b.startChurn(ctx)
			b.publish(ctx)
			stopChurn()
			pubDur = time.Since(tPub)
			b.awaitDeliveries(ctx)
		}
	}
	var holdDur, clientCPU, hostBusy time.Duration
	if !tPub.IsZero() {
		holdDur = time.Since(tPub)
		clientCPU = selfCPU() - cpu0
		if host1, ok := hostCPU(); ok && hostOK {
			hostBusy = host1 - host0
		}
	}
	sample(&s2)
	sampleBroker(&bs2)
	b.measuring.Store(false)
	progressDone()

	// Phase 3: close.
	b.closeAll()
	waitTimeout(readers, 5*time.Second)
	if o.PID > 0 {
		sleepCtx(ctx, time.Second) // let the server notice the closes
	}
	sample(&s3)
	b.fill(rep, pubDur, holdDur, clientCPU, s0, s1, s2, s3)
	rep.fillHost(hostBusy, holdDur)
	rep.fillBroker(o.BrokerPID, bs1, bs2)
	if ctx.Err() != nil && !errors.Is(ctx.Err(), context.Canceled) {
		rep.Notes = append(rep.Notes, fmt.Sprintf("hard cap %v reached before the run completed", o.Timeout))
	}
	if err := context.Cause(ctx); errors.Is(err, context.Canceled) {
		rep.Notes = append(rep.Notes, "interrupted")
	}
	return rep, nil
}

func newBench(o options) (*bench, error) {
	b := &bench{
		o:           o,
		subsPer:     make([]atomic.Int64, o.Channels),
		connErrors:  map[string]int64{},
		disconnects: map[string]int64{},
		pubErrKinds: map[string]int64{},
		conns:       make([]*conn, 0, o.Conns),
	}
	for _, n := range o.Nodes {
		u, _ := url.Parse(n)
		ws := *u
		ws.Scheme = map[string]string{"http": "ws", "https": "wss"}[u.Scheme]
		ws.Path = strings.TrimRight(ws.Path, "/") + "/ws"
		if o.Server == serverCentrifugo {
			ws.Path = strings.TrimRight(u.Path, "/") + "/connection/websocket"
		}
		sse := *u
		sse.Path = strings.TrimRight(sse.Path, "/") + "/sse"
		b.wsURLs = append(b.wsURLs, &ws)
		b.sseURLs = append(b.sseURLs, &sse)
		b.pubURLs = append(b.pubURLs, strings.TrimRight(u.String(), "/")+"/api/publish")
	}
	if o.Gaps && !o.Idle {
		b.pubT = make([]atomic.Int64, uint64(o.Rate*o.Duration.Seconds()+0.5))
	}
	if o.Publish == publishBroker && !o.Idle {
		cfg, err := configs.Load(o.Config, brokerEnviron(os.Environ()))
		if err != nil {
			return nil, fmt.Errorf("-publish broker: gateway configuration: %w", err)
		}
		if cfg.Broker == configs.BrokerMemory {
			return nil, errors.New("-publish broker: the gateway's broker is memory, inside the gateway process; set GATEWAY_BROKER (nats, jetstream, redis, kafka) and its address as for the gateway, or publish with -publish http")
		}
		// Any broker the gateway supports, built as a node builds it (a service on one broker
		// would build just that one with its package's New and ConfigFrom).
		broker, err := gateway.NewBroker(cfg, nil)
		if err != nil {
			return nil, fmt.Errorf("-publish broker: broker %s: %w", cfg.Broker, err)
		}
		svc, err := service.New(broker, nil, service.WithSigningKeys(cfg.Router.SigningKeys...))
		if err != nil {
			_ = broker.Close()
			return nil, fmt.Errorf("-publish broker: %w", err)
		}
		if err := svc.Start(context.Background()); err != nil {
			_ = svc.Close()
			return nil, fmt.Errorf("-publish broker: %w", err)
		}
		b.svc = svc
	}
	if o.Reader == readerEpoll {
		e, err := newEpollReaders(b, o.Readers)
		if err != nil {
			return nil, fmt.Errorf("-reader epoll: %w", err)
		}
		b.epoll = e
	}
	return b, nil
}

// connectAll opens the connections, at most o.MaxInflight at once and at o.Ramp per second,
// and returns when each is subscribed or failed, or the connect budget is spent. Each
// subscribed connection keeps a reader goroutine (counted in readers) until closeAll.
func (b *bench) connectAll(ctx context.Context, readers *sync.WaitGroup) {
	o := b.o
	cctx, cancel := context.WithTimeout(ctx, o.connectBudget())
	defer cancel()
	sem := make(chan struct{}, o.MaxInflight)
	var pending sync.WaitGroup
	var tick *time.Ticker
	perTick := 1
	if o.Ramp > 0 {
		interval := time.Duration(float64(time.Second) / o.Ramp)
		if interval < time.Millisecond {
			perTick = int(o.Ramp/1000 + 0.5)
			interval = time.Millisecond
		}
		tick = time.NewTicker(interval)
		defer tick.Stop()
	}
	now := time.Now()
	exp := now.Add(o.Timeout + time.Hour)
	var tokenErr error
loop:
	for i := 0; i < o.Conns; i++ {
		if tick != nil && i%perTick == 0 && i > 0 {
			select {
			case <-tick.C:
			case <-cctx.Done():
				break loop
			}
		}
		select {
		case sem <- struct{}{}:
		case <-cctx.Done():
			break loop
		}
		token := o.Token
		if o.Secret != "" {
			var err error
			token, err = mintToken(o.Secret, i, now, exp, o.Server)
			if err != nil {
				tokenErr = err
				<-sem
				break
			}
		}
		pending.Add(1)
		readers.Add(1)
		go func(i int, token string) {
			defer readers.Done()
			c, ok := b.open(cctx, i, token)
			if ok {
				b.startReader(c, readers)
			}
			<-sem
			pending.Done()
		}(i, token)
	}
	if tokenErr != nil {
		b.countErr(b.connErrors, "token: "+tokenErr.Error())
	}
	pending.Wait() // each open is bounded by cctx and the handshake timeout
}

// mintToken signs the HS256 token of connection i. Centrifugo's token has no "channels" claim:
// there it would subscribe the connection to those channels on the server's side.
func mintToken(secret string, i int, now, exp time.Time, server string) (string, error) {
	claims := jwt.MapClaims{
		"sub":      "bench-" + strconv.Itoa(i),
		"channels": []string{"*"},
		"iat":      jwt.NewNumericDate(now),
		"exp":      jwt.NewNumericDate(exp),
	}
	if server == serverCentrifugo {
		delete(claims, "channels")
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
}

// sourceAddr is the local address of connection i with o.SourceIPs: 127.0.0.2 + i mod N.
func sourceAddr(i, n int) *net.TCPAddr {
	ip := make(net.IP, 4)
	binary.BigEndian.PutUint32(ip, 0x7f000002+uint32(i%n))
	return &net.TCPAddr{IP: ip}
}

// conn is one connection of the run. Its parser and state belong to whoever reads it: the
// goroutine that opens it, then its reader (its own goroutine, or an epoll worker).
type conn struct {
	i     int
	nc    net.Conn // nil once an epoll worker owns the socket
	fd    int      // the socket, with the epoll reader
	sh    *shard
	p     frameParser
	sse   *sseParser // -transport sse: the event stream's parser instead of p
	state connState
	seen  int  // frames read while subscribing
	dead  bool // the epoll worker closed it (read by closeAll once the workers stopped)
	wbuf  []byte

	node  int    // index of the node (-url) it is on
	token string // to resume with
	// With -gaps (owned by its reader): the time of its first subscribe, the position of the last
	// message (or of that subscribe), and which messages of its channel arrived: bit k is seq
	// channel+k*channels. With -churn, resuming is set while it subscribes again with since.
	subAt    int64
	lastPos  []byte
	got      []uint64
	dups     int64
	resuming bool
	// mu guards nc against closeAll and the churn (which close it from other goroutines) while
	// its reader replaces it on a resume; closed is set by closeAll.
	mu      sync.Mutex
	closed  bool
	churned atomic.Bool // closed by the churn: resume it
}

type connState uint8

const (
	stateWelcome connState = iota
	stateSubscribing
	stateLive
)

// feed parses what the server sent: WebSocket frames, or an event stream's events.
func (c *conn) feed(p []byte, fn func(op byte, payload []byte) error) error {
	if c.sse != nil {
		return c.sse.feed(p, fn)
	}
	return c.p.feed(p, fn)
}

// errOpened is what handshake returns once the connection is subscribed.
var errOpened = errors.New("subscribed")

// openError is why opening a connection failed, as counted in the report.
type openError struct {
	kind       string
	subscribed bool // the upgrade succeeded (counts as "subscribe failed", not "failed")
}

func (e *openError) Error() string { return e.kind }

// open dials connection i, reads the welcome and subscribes. On success the connection is
// registered for closeAll and counted as subscribed; its reader is not started yet.
func (b *bench) open(ctx context.Context, i int, token string) (*conn, bool) {
	var local *net.TCPAddr
	if b.o.SourceIPs > 0 {
		local = sourceAddr(i, b.o.SourceIPs)
	}
	var nc net.Conn
	var rest []byte
	var err error
	var sse *sseParser
	var zr bool // permessage-deflate was negotiated
	node := i % len(b.wsURLs)
	if b.o.Transport == transportSSE {
		var chunked bool
		nc, rest, chunked, err = dialSSE(ctx, b.sseURLs[node], b.o.channelOf(i), token, local, 15*time.Second)
		sse = &sseParser{chunked: chunked}
	} else {
		var deflate bool
		header := token // Centrifugo takes the token in its connect command, not a header
		if b.o.Server == serverCentrifugo {
			header = ""
		}
		nc, rest, deflate, err = dialWS(ctx, b.wsURLs[node], header, local, 15*time.Second, b.o.Compression)
		if deflate {
			b.compressed.Add(1)
		}
		zr = deflate
	}
	if err != nil {
		b.failed.Add(1)
		b.countErr(b.connErrors, shorten(err.Error()))
		return nil, false
	}
	b.opened.Add(1)
	c := &conn{i: i, nc: nc, fd: -1, sh: &b.shards[i%shards], sse: sse, node: node, token: token}
	if zr {
		c.p.inflate = &inflater{}
	}
	if !b.register(c) {
		nc.Close()
		return nil, false
	}
	err = b.handshake(ctx, c, rest)
	if err != errOpened && c.state != stateLive {
		kind := err.Error()
		var oe *openError
		if errors.As(err, &oe) {
			kind = oe.kind
		} else if c.state == stateWelcome {
			kind = "welcome: " + kind
		} else {
			kind = "subscribe: " + kind
		}
		b.subFailed.Add(1)
		b.countErr(b.connErrors, shorten(kind))
		nc.Close()
		return nil, false
	}
	_ = nc.SetReadDeadline(time.Time{})
	return c, true
}

// handshake reads connection c's frames from what followed the upgrade (rest) on until it is
// subscribed (errOpened) or fails, within 15 s and ctx's deadline.
func (b *bench) handshake(ctx context.Context, c *conn, rest []byte) error {
	nc := c.nc
	deadline := time.Now().Add(15 * time.Second)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = nc.SetReadDeadline(deadline)
	if b.o.Server == serverCentrifugo { // no welcome there: the client speaks first
		_ = nc.SetWriteDeadline(deadline)
		if err := c.write(opText, centrifugoConnect(c.token)); err != nil {
			return &openError{kind: "connect: " + err.Error()}
		}
	}
	buf := make([]byte, 4096)
	fn := func(op byte, p []byte) error { return b.frame(c, op, p) }
	// The frames that follow "subscribed" in the same read are live ones: the whole buffer is
	// fed before the handshake ends, so none is dropped.
	err := c.feed(rest, fn)
	for err == nil && c.state != stateLive {
		var n int
		n, err = nc.Read(buf)
		if n > 0 {
			if ferr := c.feed(buf[:n], fn); ferr != nil {
				err = ferr
			}
		}
	}
	if err == nil {
		_ = nc.SetReadDeadline(time.Time{})
		return errOpened
	}
	return err
}

// frame handles one frame of connection c: the welcome and the subscribe reply while it opens,
// then deliveries, disconnects and pings.
func (b *bench) frame(c *conn, op byte, p []byte) error {
	switch op {
	case opPing:
		return c.write(opPong, p)
	case opClose:
		_ = c.write(opClose, p) // answer the close; the server closes the socket
		return errServerClosed
	case opText, opBinary:
	default:
		return nil
	}
	if b.o.Server == serverCentrifugo {
		return b.centrifugoFrame(c, p)
	}
	switch c.state {
	case stateWelcome:
		if t := frameType(p); string(t) != "welcome" {
			return &openError{kind: "first frame " + string(t)}
		}
		if c.sse != nil { // the stream's URL named the channel: the server subscribes it
			c.state = stateSubscribing
			return nil
		}
		ch := b.o.channelOf(c.i)
		sub := `{"type":"subscribe","id":"s","channel":` + strconv.Quote(ch) + `}`
		if c.resuming && len(c.lastPos) > 0 {
			sub = `{"type":"subscribe","id":"s","channel":` + strconv.Quote(ch) + `,"since":` + strconv.Quote(string(c.lastPos)) + `}`
		}
		if err := c.write(opText, []byte(sub)); err != nil {
			return &openError{kind: "subscribe: " + err.Error()}
		}
		c.state = stateSubscribing
		return nil
	case stateSubscribing:
		switch string(frameType(p)) {
		case "subscribed":
			c.state = stateLive
			if c.resuming {
				b.resumed(c, p)
				return nil
			}
			if b.o.Gaps {
				c.subAt = time.Now().UnixNano()
				c.lastPos = append(c.lastPos[:0], stringField(p, keyPosition)...)
			}
			b.subscribed.Add(1)
			b.subsPer[c.i%b.o.Channels].Add(1)
			return nil
		case "message":
			if c.resuming { // the replay of a resume
				b.deliver(c, p, time.Now().UnixNano(), false)
				return nil
			}
		case "error":
			return &openError{kind: "subscribe refused: " + string(stringField(p, keyCode))}
		case "disconnect":
			return &openError{kind: "disconnect: " + string(stringField(p, keyCode))}
		}
		if c.seen++; c.seen > 1000 { // frames before "subscribed": other traffic on the channel
			return &openError{kind: "no subscribed reply"}
		}
		return nil
	}
	now := time.Now().UnixNano()
	typ := frameType(p)
	switch {
	case bytes.Equal(typ, []byte("message")):
		b.deliver(c, p, now, true)
	case bytes.Equal(typ, []byte("disconnect")):
		b.countErr(b.disconnects, string(stringField(p, keyCode)))
	default:
		c.sh.other.Add(1)
	}
	return nil
}

var errServerClosed = errors.New("closed by the server")

// write sends one client frame: from the opening goroutine or the connection's reader, never
// both at once.
func (c *conn) write(op byte, p []byte) error {
	c.wbuf = appendClientFrame(c.wbuf[:0], op, p)
	if c.nc != nil {
		_ = c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_, err := c.nc.Write(c.wbuf)
		return err
	}
	return writeFD(c.fd, c.wbuf)
}

// startReader hands a subscribed connection to its reader.
func (b *bench) startReader(c *conn, readers *sync.WaitGroup) {
	if b.epoll != nil {
		if err := b.epoll.add(c); err != nil {
			b.countErr(b.connErrors, "epoll: "+shorten(err.Error()))
		}
		return
	}
	readers.Add(1)
	go func() {
		defer readers.Done()
		b.read(c)
	}()
}

// read consumes connection c's frames on its own goroutine until it is closed.
func (b *bench) read(c *conn) {
	buf := make([]byte, 4096)
	fn := func(op byte, p []byte) error { return b.frame(c, op, p) }
	for {
		n, err := c.nc.Read(buf)
		if n > 0 {
			if ferr := c.feed(buf[:n], fn); ferr != nil {
				err = ferr
			}
		}
		if err != nil {
			if b.o.Churn > 0 { // counted by resume
				if b.resume(c, err) {
					continue
				}
				if errors.Is(err, errFrame) {
					b.countErr(b.connErrors, "malformed frame from the server")
				}
				return
			}
			b.ended(c, err)
			return
		}
	}
}

// ended records a connection that closed before closeAll.
func (b *bench) ended(c *conn, err error) {
	if b.measuring.Load() {
		b.closedEarly.Add(1)
	}
	if errors.Is(err, errFrame) {
		b.countErr(b.connErrors, "malformed frame from the server")
	}
}

func (b *bench) register(c *conn) bool {
	b.connsMu.Lock()
	defer b.connsMu.Unlock()
	if b.conns == nil { // closeAll ran
		return false
	}
	b.conns = append(b.conns, c)
	return true
}

// closeAll stops the readers and closes every connection.
func (b *bench) closeAll() {
	b.closing.Store(true)
	b.connsMu.Lock()
	conns := b.conns
	b.conns = nil
	b.closed = conns
	b.connsMu.Unlock()
	if b.epoll != nil {
		b.epoll.stop() // the workers own the sockets until they have stopped
	}
	for _, c := range conns {
		c.mu.Lock()
		c.closed = true
		switch {
		case c.nc != nil:
			_ = c.nc.Close()
		case c.fd >= 0 && !c.dead:
			closeFD(c.fd)
		}
		c.mu.Unlock()
	}
}

func (b *bench) countErr(m map[string]int64, kind string) {
	if kind == "" {
		kind = "unknown"
	}
	b.mu.Lock()
	if len(m) < 100 || m[kind] > 0 {
		m[kind]++
	} else {
		m["other"]++
	}
	b.mu.Unlock()
}

func shorten(s string) string {
	if len(s) > 120 {
		return s[:120]
	}
	return s
}

// publish sends o.Rate messages/s through the HTTP API for o.Duration, channel by channel in
// turn. A ticker hands out sequence numbers; publisher goroutines send them. When every
// publisher is busy, the tokens due are skipped and counted (the offered rate was not reached).
func (b *bench) publish(ctx context.Context) {
	o := b.o
	pctx, cancel := context.WithTimeout(ctx, o.Duration)
	defer cancel()
	send := b.httpPublisher()
	if b.svc != nil {
		send = b.brokerPublisher()
	}
	names := make([]string, o.Channels)
	for c := range names {
		names[c] = o.channelName(c)
	}
	tokens := make(chan uint64, min(max(64, int(o.Rate)), 1<<16)) // up to a second behind, then skip
	var wg sync.WaitGroup
	for range o.Publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			for seq := range tokens {
				c := int(seq % uint64(len(names)))
				t := time.Now().UnixNano()
				var err error
				if buf, err = send(ctx, buf[:0], names[c], seq, t); err != nil {
					b.pubErrors.Add(1)
					b.countErr(b.pubErrKinds, shorten(err.Error()))
					continue
				}
				b.pubHist.Record(time.Duration(time.Now().UnixNano() - t))
				if b.pubT != nil && seq < uint64(len(b.pubT)) {
					b.pubT[seq].Store(t)
				}
				b.published.Add(1)
				b.expected.Add(b.subsPer[c].Load())
			}
		}()
	}
	interval := time.Duration(float64(time.Second) / o.Rate)
	interval = min(max(interval, time.Millisecond), 100*time.Millisecond)
	tick := time.NewTicker(interval)
	start := time.Now()
	var issued uint64
	total := uint64(o.Rate*o.Duration.Seconds() + 0.5)
issue:
	for issued < total {
		due := min(uint64(o.Rate*time.Since(start).Seconds())+1, total)
		for ; issued < due; issued++ {
			select {
			case tokens <- issued:
			default:
				b.pubSkipped.Add(1)
			}
		}
		select {
		case <-tick.C:
		case <-pctx.Done():
			break issue
		}
	}
	tick.Stop()
	close(tokens)
	wg.Wait() // each post is bounded by the client timeout
}

// brokerEnviron is the environment the gateway's configuration is read from for -publish
// broker. Only the broker settings matter to a publisher, so when no way to authenticate clients
// is set (which the configuration insists on for a node), anonymous clients are allowed.
func brokerEnviron(env []string) []string {
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "GATEWAY_JWT_SECRET", "GATEWAY_JWT_PUBLIC_KEY", "GATEWAY_ALLOW_ANONYMOUS":
			return env
		}
	}
	return append(env[:len(env):len(env)], "GATEWAY_ALLOW_ANONYMOUS=true")
}

// publishFunc publishes message seq, stamped t (unix nanos), to channel, using buf for its bytes
// (returned for reuse).
type publishFunc func(ctx context.Context, buf []byte, channel string, seq uint64, t int64) ([]byte, error)

// httpPublisher publishes through POST /api/publish on keep-alive connections.
func (b *bench) httpPublisher() publishFunc {
	client := &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConns:        b.o.Publishers,
			MaxIdleConnsPerHost: b.o.Publishers,
			IdleConnTimeout:     30 * time.Second,
			DisableCompression:  true,
		},
	}
	return func(ctx context.Context, buf []byte, channel string, seq uint64, t int64) ([]byte, error) {
		buf = appendPublishBody(buf, channel, t, seq, b.o.Payload, b.o.Pad)
		return buf, b.post(ctx, client, b.pubURLs[seq%uint64(len(b.pubURLs))], buf)
	}
}

// brokerPublisher publishes straight to the gateway's broker with the service SDK: the message
// the gateway's HTTP API would publish (same topic, metadata and signature), without the node's
// HTTP server, router and inbound path.
func (b *bench) brokerPublisher() publishFunc {
	return func(ctx context.Context, buf []byte, channel string, seq uint64, t int64) ([]byte, error) {
		buf = appendPayload(buf, t, seq, b.o.Payload, b.o.Pad)
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, err := b.svc.ToChannel(pctx, channel, json.RawMessage(buf))
		return buf, err
	}
}

// post sends one publish request.
func (b *bench) post(ctx context.Context, client *http.Client, target string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if b.o.Server == serverCentrifugo {
		req.Header.Set("X-API-Key", b.o.APIKey)
	} else {
		req.Header.Set("Authorization", "Bearer "+b.o.APIKey)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return err
	}
	defer resp.Body.Close()
	if b.o.Server == serverCentrifugo { // its API answers 200 with {"error":{…}} when it refuses
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if resp.StatusCode == http.StatusOK && bytes.Contains(body, []byte(`"error":`)) {
			return fmt.Errorf("api error %s", shorten(string(body)))
		}
	} else {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("http %d", resp.StatusCode)
	}
	return nil
}

// awaitDeliveries waits up to o.Grace until every expected delivery arrived.
func (b *bench) awaitDeliveries(ctx context.Context) {
	gctx, cancel := context.WithTimeout(ctx, b.o.Grace)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for b.receivedTotal() < b.expected.Load() {
		select {
		case <-tick.C:
		case <-gctx.Done():
			return
		}
	}
}

func (b *bench) receivedTotal() int64 {
	var n int64
	for i := range b.shards {
		n += b.shards[i].received.Load()
	}
	return n
}

func (b *bench) mergedHist() *Histogram {
	h := &Histogram{}
	for i := range b.shards {
		h.Merge(&b.shards[i].hist)
	}
	return h
}

// startProgress prints a line to o.Progress every second until the returned stop is called.
func (b *bench) startProgress(ctx context.Context, start time.Time) (stop func()) {
	if b.o.Progress == nil {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				b.progressLine("", start)
			case <-done:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return func() { close(done); <-finished }
}

type rateState struct {
	at        time.Time
	received  int64
	published int64
}

func (b *bench) progressLine(label string, start time.Time) {
	if b.o.Progress == nil {
		return
	}
	now := time.Now()
	recv, pub := b.receivedTotal(), b.published.Load()
	b.rateMu.Lock()
	prev := b.last
	b.last = rateState{at: now, received: recv, published: pub}
	b.rateMu.Unlock()
	var recvRate, pubRate float64
	if dt := now.Sub(prev.at).Seconds(); !prev.at.IsZero() && dt > 0 {
		recvRate = float64(recv-prev.received) / dt
		pubRate = float64(pub-prev.published) / dt
	}
	h := b.mergedHist()
	line := fmt.Sprintf("[%5.1fs] conns %d/%d failed %d subscribed %d closed %d",
		now.Sub(start).Seconds(), b.opened.Load(), b.o.Conns, b.failed.Load()+b.subFailed.Load(), b.subscribed.Load(), b.closedEarly.Load())
	if !b.o.Idle {
		line += fmt.Sprintf(" | pub %d (%.0f/s) err %d skipped %d | recv %d (%.0f/s) expected %d | p50 %s p99 %s max %s",
			pub, pubRate, b.pubErrors.Load(), b.pubSkipped.Load(), recv, recvRate, b.expected.Load(),
			fmtMS(h.Quantile(0.5)), fmtMS(h.Quantile(0.99)), fmtMS(h.Max()))
	}
	if b.o.PID > 0 {
		if s, err := sampleProc(b.o.PID); err == nil {
			line += fmt.Sprintf(" | server rss %.1f MiB cpu %v", float64(s.RSSKiB)/1024, s.CPU)
		}
	}
	if label != "" {
		line += " (" + label + ")"
	}
	fmt.Fprintln(b.o.Progress, line)
}

func fmtMS(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e6, 'f', 2, 64) + "ms" }

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// waitTimeout waits for wg at most d.
func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}
