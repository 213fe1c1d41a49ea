package gateway_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/goleak"

	"github.com/wsgateway/gateway"
	"github.com/wsgateway/gateway/configs"
	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/memory"
	"github.com/wsgateway/gateway/transports/nats"
)

// natsBroker is a started broker with goroutines of its own (the NATS connection's), so that
// goleak sees it when nobody closes it.
func natsBroker(t *testing.T) transports.Broker {
	t.Helper()
	b, err := nats.New(nats.Config{URL: "nats://127.0.0.1:4222", Prefix: "lifecycle-" + watermill.NewShortUUID()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return b
}

// emptyJWKS serves a JWK Set with no key: a verifier configured with its URL starts a refresh.
func emptyJWKS(t *testing.T) *httptest.Server {
	t.Helper()
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"keys":[]}`))
	}))
}

// TestNewLeavesNothingRunningWhenItFails: New fails at each point where it can, after it opened
// a JWKS refresh, a dedupe store's Redis client, a broker of its own or was given one with
// WithBroker, and no goroutine is left behind.
func TestNewLeavesNothingRunningWhenItFails(t *testing.T) {
	notAKey := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(notAKey, []byte("not a PEM key"), 0o600); err != nil {
		t.Fatal(err)
	}
	nop := func(*message.Message) error { return nil }
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, cfg *configs.Config, idp string) []gateway.Option
	}{
		{"the TLS certificate and key files hold no PEM", func(t *testing.T, cfg *configs.Config, idp string) []gateway.Option {
			cfg.Auth.JWKSURL = idp
			cfg.TLS.CertFile, cfg.TLS.KeyFile = notAKey, notAKey
			return nil
		}},
		{"router.signing_keys are invalid, with a broker of the caller's", func(t *testing.T, cfg *configs.Config, idp string) []gateway.Option {
			cfg.Auth.JWKSURL = idp
			cfg.Router.SigningKeys = []string{"no-secret"}
			return []gateway.Option{gateway.WithBroker(natsBroker(t))}
		}},
		{"the broker cannot be built after the Redis dedupe store", func(t *testing.T, cfg *configs.Config, idp string) []gateway.Option {
			cfg.Auth.JWKSURL = idp
			cfg.Broker, cfg.Router.DedupeStore, cfg.Redis.Addr = configs.BrokerRedis, "redis", "no port"
			return nil
		}},
		{"a WithHandler name is taken", func(t *testing.T, cfg *configs.Config, idp string) []gateway.Option {
			cfg.Auth.JWKSURL = idp
			cfg.WebSocket.LatencyBudget = &cfg.WebSocket.WriteTimeout // the hub's budget clock, were it built
			return []gateway.Option{gateway.WithBroker(natsBroker(t)), gateway.WithHandler("mine", "events", nop),
				gateway.WithHandler("mine", "events", nop)}
		}},
		{"a WithHandler name is a built-in handler's", func(t *testing.T, cfg *configs.Config, idp string) []gateway.Option {
			return []gateway.Option{gateway.WithBroker(natsBroker(t)), gateway.WithHandler(gateway.HandlerInbound, "events", nop)}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			idp := emptyJWKS(t)
			defer idp.Close() // before VerifyNone: its connections' goroutines end with it
			cfg := testConfig(t)
			opts := tc.setup(t, cfg, idp.URL)
			g, err := gateway.New(cfg, opts...)
			if err == nil {
				_ = g.Close()
				t.Fatal("New succeeded")
			}
			t.Log(err)
		})
	}
}

// TestCloseTwiceAndAfterAFailedStart: Close may be called twice, on a node that never started
// and on one whose Start failed (its admin address taken; its broker closed), and leaves no
// goroutine behind.
func TestCloseTwiceAndAfterAFailedStart(t *testing.T) {
	for _, tc := range []struct {
		name  string
		start func(t *testing.T, cfg *configs.Config) []gateway.Option // nil: Start is not called
	}{
		{"never started", nil},
		{"the admin address is taken", func(t *testing.T, cfg *configs.Config) []gateway.Option {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = ln.Close() })
			cfg.Admin.Addr = ln.Addr().String()
			return nil
		}},
		{"the broker is closed", func(t *testing.T, cfg *configs.Config) []gateway.Option {
			b := memory.NewBroker(memory.Config{}).Node("closed")
			_ = b.Close()
			return []gateway.Option{gateway.WithBroker(b)}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			cfg := testConfig(t, "GATEWAY_WS_LATENCY_BUDGET=5ms") // the hub's budget clock runs from Start
			var opts []gateway.Option
			if tc.start != nil {
				opts = tc.start(t, cfg)
			}
			g, err := gateway.New(cfg, opts...)
			if err != nil {
				t.Fatal(err)
			}
			if tc.start != nil {
				if err := g.Start(context.Background()); err == nil {
					t.Fatal("Start succeeded")
				}
			}
			err1, err2 := g.Close(), g.Close()
			if !errors.Is(err2, err1) && err1 != err2 {
				t.Errorf("second Close: %v, first: %v", err2, err1)
			}
		})
	}
}
