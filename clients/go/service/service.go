package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/wsgateway/gateway"
	"github.com/wsgateway/gateway/configs"
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

// Option changes how New and NewWithBroker make a Service.
type Option func(*options)

type options struct {
	signingKeys []string
}

// WithSigningKeys signs every emitted message with HMAC keys given as "id:secret" entries, the
// first one signing, like the gateway's router.signing_keys (GATEWAY_ROUTER_SIGNING_KEYS); nodes
// with router.require_signature drop unsigned service messages. New uses the configuration's keys
// unless this option is given; none (no option, no keys) means unsigned.
func WithSigningKeys(entries ...string) Option {
	return func(o *options) { o.signingKeys = entries }
}

// New connects to the broker that cfg names, building the broker exactly as a gateway node does
// (gateway.NewBroker), so the same GATEWAY_* settings and topic prefix reach the same topics, and
// signs what it emits with cfg's router.signing_keys. logger may be nil (discard). With the memory
// broker the Service owns a broker of its own, which reaches no gateway: see NewWithBroker.
func New(cfg *configs.Config, logger *slog.Logger, opts ...Option) (*Service, error) {
	if cfg == nil {
		return nil, fmt.Errorf("%w: nil config", ErrInvalid)
	}
	opts = append([]Option{WithSigningKeys(cfg.Router.SigningKeys...)}, opts...)
	o := collect(opts)
	keys, err := signing.ParseKeys(o.signingKeys)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	logger = orDiscard(logger)
	b, err := gateway.NewBroker(cfg, logger)
	if err != nil {
		return nil, fmt.Errorf("service: broker %s: %w", cfg.Broker, err)
	}
	if err := b.Start(context.Background()); err != nil {
		_ = b.Close()
		return nil, fmt.Errorf("service: start broker %s: %w", cfg.Broker, err)
	}
	return &Service{broker: b, log: logger, keys: keys, done: make(chan struct{})}, nil
}

// NewWithBroker makes a Service over b, which it owns: Close closes b. Use it to share an
// in-process memory broker with a gateway node (broker.Node(prefix) for each). It starts b
// (nothing when b was started already), and fails only on malformed signing keys or when b
// cannot start at all.
func NewWithBroker(b transports.Broker, logger *slog.Logger, opts ...Option) (*Service, error) {
	if b == nil {
		return nil, fmt.Errorf("%w: nil broker", ErrInvalid)
	}
	keys, err := signing.ParseKeys(collect(opts).signingKeys)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := b.Start(context.Background()); err != nil { // nothing when b was started already
		return nil, fmt.Errorf("service: start broker: %w", err)
	}
	return &Service{broker: b, log: orDiscard(logger), keys: keys, done: make(chan struct{})}, nil
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

// Broker is the broker broker the Service uses, for what the SDK does not cover.
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
