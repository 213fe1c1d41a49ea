package configs

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/caarlos0/env/v11"
	"go.yaml.in/yaml/v3"
)

// EnvPrefix starts every environment variable of the gateway.
const EnvPrefix = "GATEWAY_"

// Load reads the YAML file at path (none when path is empty), then the GATEWAY_* variables of
// environ (which win), fills defaults and validates. An error names the key that is wrong.
func Load(path string, environ []string) (*Config, error) {
	cfg := &Config{}
	if path != "" {
		raw, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("config file: %w", err)
		}
		if err := Parse(raw, cfg); err != nil {
			return nil, fmt.Errorf("config file %s: %w", path, err)
		}
	}
	vars := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, EnvPrefix) {
			vars[k] = v
		}
	}
	if err := env.ParseWithOptions(cfg, env.Options{Prefix: EnvPrefix, Environment: vars}); err != nil {
		return nil, envError(err)
	}
	cfg.Development = path == "" && len(vars) == 0
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// Parse decodes YAML into cfg, refusing unknown keys.
func Parse(raw []byte, cfg *Config) error {
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// envError keeps the first of caarlos0/env's aggregated errors, which names the variable.
func envError(err error) error {
	var agg env.AggregateError
	if errors.As(err, &agg) && len(agg.Errors) > 0 {
		return fmt.Errorf("invalid environment: %w", agg.Errors[0])
	}
	return fmt.Errorf("invalid environment: %w", err)
}

func randomSuffix() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
