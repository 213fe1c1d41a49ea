package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync"
	"time"
)

// The churn (-churn) and the gap check (-gaps). While publishing, the churn closes connections
// in turn, and each one's reader resumes it on the next node: a new WebSocket, the subscribe
// again with since=<the position of the last message it got>, the replay, "subscribed" with
// recovered. A connection lost by itself (not closed by wsbench) resumes the same way. The gap
// check then asks, for every connection, whether each message published after its first
// subscribe reached it, once: the replay of a resume must fill exactly what it missed.

var (
	keyPosition  = []byte(`"position":"`)
	keySeq       = []byte(`"seq":`)
	keyRecovered = []byte(`"recovered":true`)
)

// deliver handles a message frame of connection c, received at now: live ones go to the latency
// histogram, a resume's replay does not (its latency is the downtime).
func (b *bench) deliver(c *conn, p []byte, now int64, live bool) {
	t, ok := payloadTime(p)
	if !ok {
		c.sh.other.Add(1)
		return
	}
	if b.o.Gaps {
		if pos := stringField(p, keyPosition); pos != nil {
			c.lastPos = append(c.lastPos[:0], pos...)
		}
		if seq, ok := payloadSeq(p); ok {
			c.mark(seq, uint64(b.o.Channels))
		}
	}
	if b.measuring.Load() {
		c.sh.received.Add(1)
		if live {
			c.sh.hist.Record(time.Duration(now - t))
		}
	}
}

// mark records message seq (of a channel with n channels in all) as received by c.
func (c *conn) mark(seq, n uint64) {
	k := seq / n
	w := int(k / 64)
	if w >= len(c.got) {
		c.got = append(c.got, make([]uint64, w+1-len(c.got)+len(c.got)/4)...)
	}
	bit := uint64(1) << (k % 64)
	if c.got[w]&bit != 0 {
		c.dups++
		return
	}
	c.got[w] |= bit
}

func (c *conn) has(seq, n uint64) bool {
	k := seq / n
	w := int(k / 64)
	return w < len(c.got) && c.got[w]&(uint64(1)<<(k%64)) != 0
}

// payloadSeq finds "seq" inside the data of a message frame, as payloadTime finds "t".
func payloadSeq(frame []byte) (uint64, bool) {
	i := bytes.Index(frame, keyData)
	if i < 0 {
		return 0, false
	}
	rest := frame[i+len(keyData):]
	j := bytes.Index(rest, keySeq)
	if j < 0 {
		return 0, false
	}
	rest = rest[j+len(keySeq):]
	var v uint64
	n := 0
	for n < len(rest) && n < 19 && rest[n] >= '0' && rest[n] <= '9' {
		v = v*10 + uint64(rest[n]-'0')
		n++
	}
	return v, n > 0
}

// startChurn closes o.Churn connections a second, in turn, until the returned stop is called.
func (b *bench) startChurn(ctx context.Context) (stop func()) {
	if b.o.Churn <= 0 {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Duration(float64(time.Second) / b.o.Churn))
		defer tick.Stop()
		next := 0
		for {
			select {
			case <-tick.C:
			case <-done:
				return
			case <-ctx.Done():
				return
			}
			b.connsMu.Lock()
			var c *conn
			if len(b.conns) > 0 {
				c = b.conns[next%len(b.conns)]
				next++
			}
			b.connsMu.Unlock()
			if c == nil || !c.churned.CompareAndSwap(false, true) {
				continue // resuming already (or gone)
			}
			c.mu.Lock()
			if !c.closed && c.nc != nil {
				_ = c.nc.Close() // its reader sees the error and resumes it
			}
			c.mu.Unlock()
		}
	}()
	return func() { close(done); wg.Wait() }
}

// resume reconnects connection c, closed by the churn or lost (cause), on the next node and
// subscribes it again from its last position. It runs on c's reader and reports whether c is
// live again.
func (b *bench) resume(c *conn, cause error) bool {
	if b.closing.Load() || b.runCtx.Err() != nil {
		return false
	}
	if c.churned.CompareAndSwap(false, true) { // lost by itself, not churned
		if b.measuring.Load() {
			b.closedEarly.Add(1)
		}
		b.countErr(b.connErrors, "lost (then resumed): "+shorten(cause.Error()))
	}
	defer c.churned.Store(false)
	b.resumes.Add(1)
	fail := func(kind string) bool {
		if b.closing.Load() { // closeAll closed it: the run is over, not a failure
			return false
		}
		b.resumeFailed.Add(1)
		b.countErr(b.connErrors, "resume: "+shorten(kind))
		return false
	}
	node := (c.node + 1) % len(b.wsURLs)
	var local *net.TCPAddr
	if b.o.SourceIPs > 0 {
		local = sourceAddr(c.i, b.o.SourceIPs)
	}
	nc, rest, deflate, err := dialWS(b.runCtx, b.wsURLs[node], c.token, local, 15*time.Second, b.o.Compression)
	if err != nil {
		return fail(err.Error())
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		nc.Close()
		return false
	}
	_ = c.nc.Close()
	c.nc, c.node = nc, node
	c.mu.Unlock()
	c.p = frameParser{}
	if deflate {
		c.p.inflate = &inflater{}
	}
	c.state, c.seen, c.resuming = stateWelcome, 0, true
	err = b.handshake(b.runCtx, c, rest)
	c.resuming = false
	if err != errOpened {
		var oe *openError
		if errors.As(err, &oe) {
			return fail(oe.kind)
		}
		return fail(err.Error())
	}
	return true
}

// resumed counts the "subscribed" reply p that ends a resume of c.
func (b *bench) resumed(c *conn, p []byte) {
	if bytes.Contains(p, keyRecovered) {
		b.resumesRecovered.Add(1)
	} else {
		b.resumesNotRecovered.Add(1)
	}
	if pos := stringField(p, keyPosition); len(pos) > 0 {
		c.lastPos = append(c.lastPos[:0], pos...)
	}
}

// gapReport checks every connection's deliveries against what was published after its first
// subscribe (conns: every connection of the run, readers stopped).
func (b *bench) gapReport(conns []*conn) *GapReport {
	if !b.o.Gaps || b.pubT == nil {
		return nil
	}
	g := &GapReport{}
	n := uint64(b.o.Channels)
	for _, c := range conns {
		if c.subAt == 0 {
			continue
		}
		g.Duplicates += c.dups
		missing := int64(0)
		for seq := uint64(c.i) % n; seq < uint64(len(b.pubT)); seq += n {
			t := b.pubT[seq].Load()
			if t == 0 || t <= c.subAt {
				continue
			}
			g.Checked++
			if !c.has(seq, n) {
				missing++
			}
		}
		if missing > 0 {
			g.Missing += missing
			g.ConnsWithGaps++
		}
	}
	return g
}
