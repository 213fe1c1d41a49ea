package configs

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"sort"
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
		return nil, envError(err, vars)
	}
	cfg.trimLists()
	cfg.SetDefaults()
	cfg.Development = cfg.Broker == BrokerMemory && !cfg.Auth.Configured()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// Parse decodes YAML into cfg, refusing unknown keys. The error is one line and names the key
// at fault (see yamlError).
func Parse(raw []byte, cfg *Config) error {
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return yamlError(raw, err)
	}
	return nil
}

// envError turns a failure of caarlos0/env into a *KeyError naming the variable and its key.
// caarlos0/env's parse errors name only the Go field (several fields are called Addr or
// Replicas), so the variable at fault is found by parsing each one alone, in name order.
func envError(err error, vars map[string]string) error {
	names := make([]string, 0, len(vars))
	for k := range vars {
		names = append(names, k)
	}
	sort.Strings(names)
	keys := map[string]string{}
	envKeys(reflect.TypeOf(Config{}), EnvPrefix, "", keys)
	for _, name := range names {
		e := env.ParseWithOptions(&Config{}, env.Options{Prefix: EnvPrefix, Environment: map[string]string{name: vars[name]}})
		if e == nil {
			continue
		}
		key := keys[name]
		if key == "" {
			key = name
		}
		reason := firstEnvError(e).Error()
		var pe env.ParseError
		if errors.As(e, &pe) {
			reason = fmt.Sprintf("cannot parse %q as %s", vars[name], pe.Type)
			if pe.Err != nil {
				reason += ": " + pe.Err.Error()
			}
		}
		return &KeyError{Key: key, Env: name, Reason: reason}
	}
	return fmt.Errorf("invalid environment: %w", firstEnvError(err))
}

// firstEnvError keeps the first of caarlos0/env's aggregated errors.
func firstEnvError(err error) error {
	var agg env.AggregateError
	if errors.As(err, &agg) && len(agg.Errors) > 0 {
		return agg.Errors[0]
	}
	return err
}

// envKeys maps every environment variable of the struct type t to its YAML key (see
// walkSettings).
func envKeys(t reflect.Type, envPrefix, yamlPrefix string, out map[string]string) {
	walkSettings(t, nil, envPrefix, yamlPrefix, func(_ reflect.StructField, _ []int, s setting) {
		if s.env != "" {
			out[s.env] = s.key
		}
	})
}

// trimLists drops the spaces around the entries of list settings, so that
// "https://a.example, https://b.example" means two origins rather than one with a leading space.
func (c *Config) trimLists() {
	for _, l := range [][]string{c.Kafka.Brokers, c.Auth.PublicChannels, c.Auth.AnonymousPublish, c.Auth.Audience, c.WebSocket.AllowedOrigins, c.Router.SigningKeys, c.Webhooks.Events,
		c.Hooks.Subscribe.Channels, c.Hooks.Publish.Channels, c.Hooks.RPC.Methods, c.Hooks.Connect.Headers} {
		for i := range l {
			l[i] = strings.TrimSpace(l[i])
		}
	}
}

func randomSuffix() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
