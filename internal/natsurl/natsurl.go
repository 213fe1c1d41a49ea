// Package natsurl checks NATS server lists the way nats.go reads them, for the nats and jetstream
// brokers (neither links the other).
package natsurl

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Default is the NATS server list of the nats and jetstream brokers, and of the gateway's
// nats.url, when none is given.
const Default = "nats://127.0.0.1:4222"

// Check parses a comma-separated server list as nats.go's Connect does ("nats://" is
// implied), without connecting, so that New rejects what Start could not use. The error does
// not repeat the URL, which may hold credentials.
func Check(list string) error {
	for _, u := range strings.Split(list, ",") {
		u = strings.TrimSpace(u)
		if u == "" {
			continue
		}
		if !strings.Contains(u, "://") {
			u = "nats://" + u
		}
		if _, err := url.Parse(u); err != nil {
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err
			}
			return fmt.Errorf("a server address cannot be parsed: %w", err)
		}
	}
	return nil
}
