package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
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
	wsURL   string
	pubURL  string
	dialer  websocket.Dialer
	pool    sync.Pool // read buffers
	shards  [shards]shard
	subsPer []atomic.Int64 // subscribed connections per channel index

	opened, failed, subscribed, subFailed, closedEarly atomic.Int64
	published, pubErrors, pubSkipped, expected         atomic.Int64

	measuring atomic.Bool // deliveries count only while measuring

	mu          sync.Mutex
	connErrors  map[string]int64
	disconnects map[string]int64
	pubErrKinds map[string]int64

	connsMu sync.Mutex
	conns   []*websocket.Conn

	rateMu sync.Mutex
	last   rateState // of the previous progress line
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

	// Phase 1: connect and subscribe.
	progressDone := b.startProgress(ctx, rep.Started)
	readers := &sync.WaitGroup{}
	t0 := time.Now()
	b.connectAll(ctx, readers)
	rep.ConnectSeconds = time.Since(t0).Seconds()
	b.progressLine("connected", rep.Started)
	sample(&s1)

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
			b.publish(ctx)
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
	if ctx.Err() != nil && !errors.Is(ctx.Err(), context.Canceled) {
		rep.Notes = append(rep.Notes, fmt.Sprintf("hard cap %v reached before the run completed", o.Timeout))
	}
	if err := context.Cause(ctx); errors.Is(err, context.Canceled) {
		rep.Notes = append(rep.Notes, "interrupted")
	}
	return rep, nil
}

func newBench(o options) (*bench, error) {
	u, _ := url.Parse(o.URL)
	base := strings.TrimRight(u.String(), "/")
	ws := *u
	ws.Scheme = map[string]string{"http": "ws", "https": "wss"}[u.Scheme]
	ws.Path = strings.TrimRight(ws.Path, "/") + "/ws"
	b := &bench{
		o:           o,
		wsURL:       ws.String(),
		pubURL:      base + "/api/publish",
		subsPer:     make([]atomic.Int64, o.Channels),
		connErrors:  map[string]int64{},
		disconnects: map[string]int64{},
		pubErrKinds: map[string]int64{},
		conns:       make([]*websocket.Conn, 0, o.Conns),
	}
	b.pool.New = func() any { s := make([]byte, 0, 1024); return &s }
	b.dialer = websocket.Dialer{
		HandshakeTimeout: 15 * time.Second,
		ReadBufferSize:   1024,
		WriteBufferSize:  512,
		WriteBufferPool:  &sync.Pool{},
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
			token, err = mintToken(o.Secret, i, now, exp)
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
			<-sem
			pending.Done()
			if ok {
				b.read(c, i)
			}
		}(i, token)
	}
	if tokenErr != nil {
		b.countErr(b.connErrors, "token: "+tokenErr.Error())
	}
	pending.Wait() // each open is bounded by cctx and the handshake timeout
}

// mintToken signs the HS256 token of connection i.
func mintToken(secret string, i int, now, exp time.Time) (string, error) {
	claims := jwt.MapClaims{
		"sub":      "bench-" + strconv.Itoa(i),
		"channels": []string{"*"},
		"iat":      jwt.NewNumericDate(now),
		"exp":      jwt.NewNumericDate(exp),
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
}

// sourceAddr is the local address of connection i with o.SourceIPs: 127.0.0.2 + i mod N.
func sourceAddr(i, n int) *net.TCPAddr {
	ip := make(net.IP, 4)
	binary.BigEndian.PutUint32(ip, 0x7f000002+uint32(i%n))
	return &net.TCPAddr{IP: ip}
}

// open dials connection i, reads the welcome and subscribes. On success the connection is
// registered for closeAll and counted as subscribed.
func (b *bench) open(ctx context.Context, i int, token string) (*websocket.Conn, bool) {
	d := b.dialer
	nd := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: -1}
	if b.o.SourceIPs > 0 {
		nd.LocalAddr = sourceAddr(i, b.o.SourceIPs)
	}
	d.NetDialContext = nd.DialContext
	var h http.Header
	if token != "" {
		h = http.Header{"Authorization": {"Bearer " + token}}
	}
	c, resp, err := d.DialContext(ctx, b.wsURL, h)
	if err != nil {
		b.failed.Add(1)
		kind := err.Error()
		if resp != nil {
			kind = "http " + strconv.Itoa(resp.StatusCode)
		}
		b.countErr(b.connErrors, shorten(kind))
		return nil, false
	}
	b.opened.Add(1)
	if !b.register(c) {
		c.Close()
		return nil, false
	}
	fail := func(kind string) (*websocket.Conn, bool) {
		b.subFailed.Add(1)
		b.countErr(b.connErrors, shorten(kind))
		c.Close()
		return nil, false
	}
	deadline := time.Now().Add(15 * time.Second)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = c.SetReadDeadline(deadline)
	_, msg, err := c.ReadMessage()
	if err != nil {
		return fail("welcome: " + err.Error())
	}
	if t := frameType(msg); string(t) != "welcome" {
		return fail("first frame " + string(t))
	}
	ch := b.o.channelOf(i)
	sub := `{"type":"subscribe","id":"s","channel":` + strconv.Quote(ch) + `}`
	if err := c.WriteMessage(websocket.TextMessage, []byte(sub)); err != nil {
		return fail("subscribe: " + err.Error())
	}
	for n := 0; n < 1000; n++ { // frames before "subscribed": other traffic on the channel
		_, msg, err := c.ReadMessage()
		if err != nil {
			return fail("subscribe: " + err.Error())
		}
		switch string(frameType(msg)) {
		case "subscribed":
			_ = c.SetReadDeadline(time.Time{})
			b.subscribed.Add(1)
			b.subsPer[i%b.o.Channels].Add(1)
			return c, true
		case "error":
			return fail("subscribe refused: " + string(stringField(msg, keyCode)))
		case "disconnect":
			return fail("disconnect: " + string(stringField(msg, keyCode)))
		}
	}
	return fail("no subscribed reply")
}

// read consumes connection i's frames until it is closed, counting deliveries and latencies.
func (b *bench) read(c *websocket.Conn, i int) {
	sh := &b.shards[i%shards]
	bufp := b.pool.Get().(*[]byte)
	defer b.pool.Put(bufp)
	for {
		_, r, err := c.NextReader()
		if err != nil {
			if b.measuring.Load() {
				b.closedEarly.Add(1)
			}
			return
		}
		buf, err := readAll(r, (*bufp)[:0])
		*bufp = buf
		if err != nil {
			continue // the next NextReader reports the broken connection
		}
		now := time.Now().UnixNano()
		typ := frameType(buf)
		switch {
		case bytes.Equal(typ, []byte("message")):
			t, ok := payloadTime(buf)
			if !ok {
				sh.other.Add(1)
				continue
			}
			if b.measuring.Load() {
				sh.received.Add(1)
				sh.hist.Record(time.Duration(now - t))
			}
		case bytes.Equal(typ, []byte("disconnect")):
			b.countErr(b.disconnects, string(stringField(buf, keyCode)))
		default:
			sh.other.Add(1)
		}
	}
}

// readAll reads r into buf, growing it as needed.
func readAll(r io.Reader, buf []byte) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

func (b *bench) register(c *websocket.Conn) bool {
	b.connsMu.Lock()
	defer b.connsMu.Unlock()
	if b.conns == nil { // closeAll ran
		return false
	}
	b.conns = append(b.conns, c)
	return true
}

func (b *bench) closeAll() {
	b.connsMu.Lock()
	conns := b.conns
	b.conns = nil
	b.connsMu.Unlock()
	for _, c := range conns {
		_ = c.Close()
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
	client := &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConns:        o.Publishers,
			MaxIdleConnsPerHost: o.Publishers,
			IdleConnTimeout:     30 * time.Second,
			DisableCompression:  true,
		},
	}
	defer client.CloseIdleConnections()
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
			var body []byte
			for seq := range tokens {
				c := int(seq % uint64(len(names)))
				body = appendPublishBody(body[:0], names[c], time.Now().UnixNano(), seq, o.Payload)
				if err := b.post(ctx, client, body); err != nil {
					b.pubErrors.Add(1)
					b.countErr(b.pubErrKinds, shorten(err.Error()))
					continue
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

// post sends one publish request.
func (b *bench) post(ctx context.Context, client *http.Client, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.pubURL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+b.o.APIKey)
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
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
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
