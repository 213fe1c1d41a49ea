package gateway

import (
	"crypto/tls"
	"log/slog"

	"github.com/wsgateway/gateway/configs"
	"github.com/wsgateway/gateway/internal/auth"
	"github.com/wsgateway/gateway/internal/metrics"
	"github.com/wsgateway/gateway/internal/signing"
)

// Check runs every check New makes of the configuration short of connecting to the broker: the
// JWT keys (a public key that is PEM and public, a secret that is not the public key), the
// router's signing keys, the TLS certificate and key, and the broker package's own checks of its
// settings (jetstream.replicas, kafka.retention, ...). -check-config calls it; New runs the
// same code, so a configuration Check accepts is one New accepts. The error is a
// *configs.KeyError naming the key.
func Check(cfg *configs.Config) error {
	p, err := prepare(cfg, slog.New(slog.DiscardHandler))
	p.verifier.Close() // a JWKS URL's refresh: Check serves nothing
	if err != nil {
		return err
	}
	if _, err := newHooks(cfg, nil, metrics.New(), slog.New(slog.DiscardHandler)); err != nil {
		return err
	}
	return checkBroker(cfg)
}

// prepared is what New builds from the configuration alone, before it connects to anything.
type prepared struct {
	verifier *auth.Verifier // nil: no tokens accepted (anonymous only)
	keys     *signing.Keys
	tls      *tls.Config // nil: plain HTTP
}

// prepare builds, from the configuration alone, what New needs before it connects: the checks
// of Check.
func prepare(cfg *configs.Config, log *slog.Logger) (p prepared, err error) {
	if p.verifier, err = newVerifier(cfg, log); err != nil {
		return p, err
	}
	defer func() {
		if err != nil {
			p.verifier.Close() // a JWKS URL's refresh, of a node that will not be built
			p.verifier = nil
		}
	}()
	if p.keys, err = signing.ParseKeys(cfg.Router.SigningKeys); err != nil {
		return p, &configs.KeyError{Key: "router.signing_keys", Env: "GATEWAY_ROUTER_SIGNING_KEYS", Reason: err.Error()}
	}
	if p.tls, err = newServerTLS(cfg.TLS, log); err != nil {
		return p, err
	}
	return p, nil
}
