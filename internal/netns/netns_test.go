package netns

import (
	"bufio"
	"context"
	"net"
	"testing"
	"time"
)

// A connection from inside the namespace survives a cut: nothing passes while the link is down,
// no side is closed or reset, and what was written during the cut arrives after the heal.
func TestCutKeepsConnections(t *testing.T) {
	ns := New(t)
	l := ns.Link()
	ln, err := net.Listen("tcp", l.HostIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := ns.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srv := <-accepted
	if srv == nil {
		t.Fatal("no connection accepted")
	}
	defer srv.Close()
	if srv.RemoteAddr().(*net.TCPAddr).IP.String() != l.NSIP {
		t.Fatalf("the connection comes from %v, not the namespace's %s", srv.RemoteAddr(), l.NSIP)
	}

	l.Cut()
	if _, err := c.Write([]byte("during the cut\n")); err != nil {
		t.Fatalf("a write in the cut failed at once: %v", err)
	}
	_ = srv.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := bufio.NewReader(srv).ReadString('\n'); err == nil {
		t.Fatal("a line passed the cut")
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("the connection broke in the cut: %v", err)
	}
	l.Heal()
	_ = srv.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(srv).ReadString('\n')
	if err != nil || line != "during the cut\n" {
		t.Fatalf("after the heal: %q, %v", line, err)
	}
}
