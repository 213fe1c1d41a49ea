// Package natscluster is a test helper: a cluster of in-process nats-servers on loopback ports,
// joined by routes, with JetStream if asked, whose servers can be killed and restarted on the same
// ports and store directories (the cluster tests of the nats and jetstream brokers).
//
// A Cluster is safe for use by several goroutines.
package natscluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsgateway/gateway/internal/poll"
)

// wait bounds a server's start and the cluster's first JetStream leader election.
const wait = 30 * time.Second

// Cluster is n nats-servers joined by routes; Start starts it and the test's cleanup stops it.
type Cluster struct {
	t         testing.TB
	jetStream bool
	name      string
	ports     []int // client ports
	routes    []int // cluster ports
	dirs      []string

	mu   sync.Mutex
	srvs []*server.Server // nil: down
}

// Start starts n servers (with JetStream if jetStream) and waits until each sees the others (and,
// with JetStream, until the cluster has a meta leader and answers account info).
func Start(t testing.TB, n int, jetStream bool) *Cluster {
	t.Helper()
	c := &Cluster{t: t, jetStream: jetStream, name: "c" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36), srvs: make([]*server.Server, n)}
	for range n {
		c.ports = append(c.ports, freePort(t))
		c.routes = append(c.routes, freePort(t))
		c.dirs = append(c.dirs, t.TempDir())
	}
	t.Cleanup(func() {
		for i := range n {
			c.Kill(i)
		}
	})
	for i := range n {
		c.Restart(i)
	}
	poll.Until(t, wait, func() error {
		for i := range n {
			if got := c.server(i).NumRoutes(); got < n-1 {
				return fmt.Errorf("server %d has %d routes", i, got)
			}
		}
		return nil
	})
	if jetStream {
		poll.Until(t, wait, func() error {
			nc, err := nats.Connect(c.URL(0))
			if err != nil {
				return err
			}
			defer nc.Close()
			js, _ := jetstream.New(nc)
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_, err = js.AccountInfo(ctx)
			return err
		})
	}
	return c
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Len is the number of servers, up or down.
func (c *Cluster) Len() int { return len(c.ports) }

// Name is server i's name, as JetStream reports it (stream info's Cluster.Leader).
func (c *Cluster) Name(i int) string { return c.name + "-" + strconv.Itoa(i) }

// Index is the index of the server named name, or -1.
func (c *Cluster) Index(name string) int {
	for i := range c.ports {
		if c.Name(i) == name {
			return i
		}
	}
	return -1
}

// URL is server i's client URL.
func (c *Cluster) URL(i int) string { return "nats://127.0.0.1:" + strconv.Itoa(c.ports[i]) }

// URLs is every server's client URL, comma-separated, starting at server from: the list a node
// is given (nats.url), in an order that makes nodes given different from start on different
// servers (nats.go shuffles it anyway unless told not to).
func (c *Cluster) URLs(from int) string {
	var us []string
	for i := range c.ports {
		us = append(us, c.URL((from+i)%len(c.ports)))
	}
	return strings.Join(us, ",")
}

func (c *Cluster) server(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.srvs[i]
}

// Up reports whether server i runs.
func (c *Cluster) Up(i int) bool { return c.server(i) != nil }

// Kill shuts server i down (its clients are disconnected, its routes cut); a no-op if it is down.
func (c *Cluster) Kill(i int) {
	c.mu.Lock()
	s := c.srvs[i]
	c.srvs[i] = nil
	c.mu.Unlock()
	if s != nil {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

// Restart starts server i again on its ports and store directory (a no-op if it runs).
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	if c.Up(i) {
		return
	}
	var routes []*url.URL
	for j, p := range c.routes {
		if j != i {
			routes = append(routes, &url.URL{Scheme: "nats", Host: "127.0.0.1:" + strconv.Itoa(p)})
		}
	}
	s, err := server.NewServer(&server.Options{
		ServerName: c.Name(i), Host: "127.0.0.1", Port: c.ports[i], NoLog: true, NoSigs: true,
		JetStream: c.jetStream, StoreDir: c.dirs[i],
		Cluster: server.ClusterOpts{Name: c.name, Host: "127.0.0.1", Port: c.routes[i]},
		Routes:  routes,
	})
	if err != nil {
		c.t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(wait) {
		c.t.Fatalf("nats-server %d did not start", i)
	}
	c.mu.Lock()
	c.srvs[i] = s
	c.mu.Unlock()
}

// ClientServer is the index of the server where a client connection named name is, or -1.
func (c *Cluster) ClientServer(name string) int {
	for i := range c.ports {
		s := c.server(i)
		if s == nil {
			continue
		}
		cz, err := s.Connz(&server.ConnzOptions{})
		if err != nil {
			continue
		}
		for _, ci := range cz.Conns {
			if ci.Name == name {
				return i
			}
		}
	}
	return -1
}

// StreamLeader is the index of the server leading stream (of the global account), asked through
// a client of a running server, or an error if there is none now.
func (c *Cluster) StreamLeader(stream string) (int, error) {
	info, err := c.StreamInfo(stream)
	if err != nil {
		return -1, err
	}
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return -1, errors.New("the stream has no leader")
	}
	i := c.Index(info.Cluster.Leader)
	if i < 0 || !c.Up(i) {
		return -1, fmt.Errorf("the stream's leader %q is not a running server", info.Cluster.Leader)
	}
	return i, nil
}

// StreamInfo is stream's info, asked through the first running server.
func (c *Cluster) StreamInfo(stream string) (*jetstream.StreamInfo, error) {
	for i := range c.ports {
		if !c.Up(i) {
			continue
		}
		nc, err := nats.Connect(c.URL(i), nats.Timeout(time.Second))
		if err != nil {
			continue
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, stream)
		if err != nil {
			return nil, err
		}
		return s.Info(ctx)
	}
	return nil, errors.New("no server runs")
}

// MetaLeader is the index of the server leading the JetStream meta group (where streams are
// created and updated), or -1 if no running server does now.
func (c *Cluster) MetaLeader() int {
	for i := range c.ports {
		if s := c.server(i); s != nil && s.JetStreamIsLeader() {
			return i
		}
	}
	return -1
}
