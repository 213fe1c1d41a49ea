package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/wsgateway/gateway/internal/signing"
	"github.com/wsgateway/gateway/transports"
)

// Errors of the SDK. Broker failures are returned wrapped, as the broker reports them
// (transports.ErrUnavailable, transports.ErrClosed).
var (
	// ErrClosed is returned after Close. It is transports.ErrClosed.
	ErrClosed = transports.ErrClosed
	// ErrInvalid is wrapped by every error about an argument: a bad channel, user, session,
	// msg_id, data or metadata key. Nothing was published.
	ErrInvalid = errors.New("service: invalid argument")
	// ErrNoSession is returned by Reply for a message that has no sender session (published by
	// the HTTP API or a service).
	ErrNoSession = errors.New("service: the message has no sender session to reply to")
)

// Service is a connection of one service to the gateway's broker. Safe for concurrent use.
type Service struct {
	broker transports.Broker
	log    *slog.Logger
	keys   *signing.Keys // nil: emits are not signed

	mu     sync.Mutex
	closed bool
	done   chan struct{}
	wg     sync.WaitGroup // relay goroutines

	closeOnce sync.Once
	closeErr  error
}

// Option changes how New makes a Service.
type Option func(*options)

type options struct {
	signingKeys []string
}

// WithSigningKeys signs every emitted message with HMAC keys given as "id:secret" entries, the
// first one signing, like the gateway's router.signing_keys (GATEWAY_ROUTER_SIGNING_KEYS); nodes
// with router.require_signature drop unsigned service messages. Without it (or with no keys)
// emits are unsigned. A service configured like the gateway passes cfg.Router.SigningKeys...
func WithSigningKeys(entries ...string) Option {
	return func(o *options) { o.signingKeys = entries }
}

// New makes a Service over b, the broker the service chooses, which it owns: Close closes b.
//
// Build the broker of your choice with its package's New and ConfigFrom, which translate the
// gateway's own settings (configs.Load, GATEWAY_* variables) exactly as a gateway node does, so
// the same settings and topic prefix reach the same topics, and the service links only that
// broker:
//
//	b, err := nats.New(nats.ConfigFrom(cfg), logger) // transports/nats
//	svc, err := service.New(b, logger, service.WithSigningKeys(cfg.Router.SigningKeys...))
//	err = svc.Start(ctx)
//
// A memory broker node (memory.Broker.Node(prefix)) shares an in-process broker with a gateway
// node of the same process. logger may be nil (discard). New starts nothing (Start does) and
// fails only on a nil broker or malformed signing keys.
func New(b transports.Broker, logger *slog.Logger, opts ...Option) (*Service, error) {
	if b == nil {
		return nil, fmt.Errorf("%w: nil broker", ErrInvalid)
	}
	keys, err := signing.ParseKeys(collect(opts).signingKeys)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return &Service{broker: b, log: orDiscard(logger), keys: keys, done: make(chan struct{})}, nil
}

// Start starts the Service's broker (its Start: the connection and the broker's background
// work; it does not wait for the broker server to answer). Call it once before the Service is
// used; a second call, or a broker started already, does nothing. Close stops what it started.
func (s *Service) Start(ctx context.Context) error {
	if err := s.broker.Start(ctx); err != nil {
		return fmt.Errorf("service: start broker: %w", err)
	}
	return nil
}

func collect(opts []Option) options {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

func orDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}

// Broker is the broker the Service uses, for what the SDK does not cover.
func (s *Service) Broker() transports.Broker { return s.broker }

// Close ends every subscription (their channels close; a message handed to no one is nacked) and
// closes the broker. Safe to call more than once; later calls return the first result.
func (s *Service) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		close(s.done)
		s.mu.Unlock()
		s.closeErr = s.broker.Close()
		s.wg.Wait()
	})
	return s.closeErr
}

// track registers a relay goroutine; false once the Service is closed.
func (s *Service) track() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

func (s *Service) isClosed() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}
