package gateway

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/wsgateway/gateway/configs"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
)

// Backoff between two pings of a broker that does not answer at start.
const (
	connectRetryMin = 100 * time.Millisecond
	connectRetryMax = 5 * time.Second
)

// ErrBrokerUnreachable is wrapped by the error of Start (and Run) when the broker did not answer
// within broker_connect_timeout.
var ErrBrokerUnreachable = errors.New("broker unreachable")

// awaitBroker starts the broker (a broker given with WithBroker may have been started already:
// Start then does nothing), then pings it until it answers, waiting between pings with
// exponential backoff and jitter (connectRetryMin to connectRetryMax). It logs once that the
// broker is unreachable (when a retry failed too), and once that it is reached. With
// broker_connect_timeout set it gives up after that long, with an error naming the broker and its
// address; it also returns when ctx ends. A broker that cannot start at all fails at once.
func (g *Gateway) awaitBroker(ctx context.Context) error {
	broker, addr := g.cfg.Broker, brokerAddr(g.cfg)
	start := time.Now()
	if err := g.broker.Start(ctx); err != nil {
		return fmt.Errorf("start broker %s at %s: %w", broker, addr, err)
	}
	delay, failures := connectRetryMin, 0
	for {
		err := g.ping(ctx, start)
		if err == nil {
			g.log.Info("broker reachable", "broker", broker, "addr", addr, "waited", time.Since(start).Round(time.Millisecond))
			return nil
		}
		if errors.Is(err, transports.ErrClosed) || ctx.Err() != nil {
			return errors.Join(ctx.Err(), err)
		}
		timeout := g.cfg.BrokerConnectTimeout
		// The first failure may be a broker still setting up (JetStream provisions its streams
		// in the background): say it when the first retry fails too.
		if failures++; failures == 2 {
			g.log.Warn("broker unreachable; retrying with backoff, /readyz answers 503 until it answers",
				"broker", broker, "addr", addr, "error", err, "broker_connect_timeout", timeout)
		}
		wait := jitter(delay)
		if timeout > 0 {
			left := timeout - time.Since(start)
			if left <= 0 {
				return fmt.Errorf("%w: %s at %s did not answer within broker_connect_timeout %s: %v", ErrBrokerUnreachable, broker, addr, timeout, err)
			}
			wait = min(wait, left)
		}
		if !sleep(ctx, wait) {
			return ctx.Err()
		}
		delay = min(2*delay, connectRetryMax)
	}
}

// ping pings the broker once, for at most the time broker_connect_timeout leaves (a broker
// library's own timeouts may be longer).
func (g *Gateway) ping(ctx context.Context, start time.Time) error {
	if timeout := g.cfg.BrokerConnectTimeout; timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, max(timeout-time.Since(start), time.Millisecond))
		defer cancel()
	}
	return g.broker.Ping(ctx)
}

// sleep waits d, or until ctx ends (false).
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// jitter is d plus or minus up to a fifth, so nodes restarted together do not ping in step.
func jitter(d time.Duration) time.Duration {
	return d + time.Duration(rand.Int64N(int64(d)*2/5+1)) - d/5
}

// brokerAddr is where the configured broker is, for log lines and errors.
func brokerAddr(cfg *configs.Config) string {
	switch cfg.Broker {
	case configs.BrokerNATS, configs.BrokerJetStream:
		return redactURLs(cfg.NATS.URL)
	case configs.BrokerRedis:
		if cfg.Redis.Mode == configs.RedisModeSentinel {
			return "sentinels " + strings.Join(cfg.Redis.SentinelAddrs, ",") + " master " + cfg.Redis.MasterName
		}
		if cfg.Redis.Mode == configs.RedisModeCluster {
			return "cluster " + strings.Join(cfg.Redis.ClusterAddrs, ",")
		}
		return cfg.Redis.Addr
	case configs.BrokerKafka:
		return strings.Join(cfg.Kafka.Brokers, ",")
	}
	return "in process"
}

// redactURLs hides the credentials of comma-separated URLs (nats://user:pass@host), for logs.
func redactURLs(list string) string {
	urls := strings.Split(list, ",")
	for i, u := range urls {
		u = strings.TrimSpace(u)
		if at := strings.LastIndex(u, "@"); at >= 0 {
			start := 0
			if scheme := strings.Index(u, "://"); scheme >= 0 && scheme < at {
				start = scheme + 3
			}
			u = u[:start] + "xxxxx" + u[at:]
		}
		urls[i] = u
	}
	return strings.Join(urls, ",")
}

// ready is /readyz's check: the node has started (the broker answered and the router runs) and
// the broker answers now.
func (g *Gateway) ready(ctx context.Context) error {
	if !g.started.Load() {
		return errors.New("starting: waiting for the broker")
	}
	return g.broker.Ping(ctx)
}

// untilStarted serves h once the node has started. Before, /healthz, /readyz and /metrics are
// served at once, and any other request waits for the start up to websocket.publish_timeout (a
// start with the broker up takes milliseconds), then gets 503 `unavailable`: no client connects
// to a node that cannot reach its broker yet.
func (g *Gateway) untilStarted(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz", "/readyz", "/metrics":
			h.ServeHTTP(w, r)
			return
		}
		t := time.NewTimer(g.cfg.WebSocket.PublishTimeout)
		defer t.Stop()
		select {
		case <-g.startedc:
			h.ServeHTTP(w, r)
		case <-r.Context().Done():
		case <-t.C:
			g.metrics.UpgradesRefused.WithLabelValues(strconv.Itoa(http.StatusServiceUnavailable)).Inc()
			protocol.WriteHTTPError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "node is starting: waiting for the broker")
		}
	})
}

// markStarted records that Start succeeded (once).
func (g *Gateway) markStarted() {
	if g.started.CompareAndSwap(false, true) {
		close(g.startedc)
	}
}
