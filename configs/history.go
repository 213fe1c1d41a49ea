package configs

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// HistoryRule bounds the history of the channels that match Pattern: a client can resume a
// channel only while what it missed is among the channel's last Size messages and younger than
// TTL; otherwise its subscribe answers recovered:false. Zero leaves that bound to the broker.
//
// In YAML a rule is a mapping ({pattern: "chat:*", size: 5000, ttl: 168h}) or the short form
// "chat:*=5000/168h" that GATEWAY_HISTORY_CHANNELS uses (comma-separated; "chat:*=5000" and
// "ticker:*=/1m" leave one bound out).
type HistoryRule struct {
	Pattern string        `yaml:"pattern"` // a channel name, a prefix ending in '*', "*", or "$user"
	Size    int           `yaml:"size"`    // messages a resume may reach back; 0: no bound of its own
	TTL     time.Duration `yaml:"ttl"`     // how old they may be; 0: no bound of its own
}

var rulePattern = regexp.MustCompile(`^(\$user|[A-Za-z0-9_:.\-]{0,128}\*|[A-Za-z0-9_:.\-]{1,128})$`)

// UnmarshalText parses the short form "pattern=size/ttl".
func (r *HistoryRule) UnmarshalText(b []byte) error {
	pattern, bounds, ok := strings.Cut(strings.TrimSpace(string(b)), "=")
	if !ok {
		return fmt.Errorf("%q: want pattern=size/ttl, e.g. chat:*=5000/24h", b)
	}
	size, ttl, _ := strings.Cut(bounds, "/")
	rule := HistoryRule{Pattern: pattern}
	if size = strings.TrimSpace(size); size != "" {
		n, err := strconv.Atoi(size)
		if err != nil {
			return fmt.Errorf("%q: size %q is not a number", b, size)
		}
		rule.Size = n
	}
	if ttl = strings.TrimSpace(ttl); ttl != "" {
		d, err := time.ParseDuration(ttl)
		if err != nil {
			return fmt.Errorf("%q: ttl %q is not a duration (e.g. 90s, 24h)", b, ttl)
		}
		rule.TTL = d
	}
	*r = rule
	return nil
}

// Matches reports whether the rule applies to channel. The personal channel of a user (internal
// name "$user:<id>") matches the pattern "$user".
func (r HistoryRule) Matches(channel string) bool {
	switch {
	case r.Pattern == "$user":
		return strings.HasPrefix(channel, "$user:")
	case strings.HasPrefix(channel, "$user:"):
		return false // "*" and prefixes are for named channels
	case strings.HasSuffix(r.Pattern, "*"):
		return strings.HasPrefix(channel, strings.TrimSuffix(r.Pattern, "*"))
	default:
		return channel == r.Pattern
	}
}

// Bounds returns the history bounds of channel from the first rule that matches it; zero for
// what no rule bounds (every rule sets at least one of the two).
func (h HistoryConfig) Bounds(channel string) (size int, ttl time.Duration) {
	for _, r := range h.Channels {
		if r.Matches(channel) {
			return r.Size, r.TTL
		}
	}
	return 0, 0
}

// problem says what is wrong with the rule, "" when nothing is.
func (r HistoryRule) problem() string {
	switch {
	case !rulePattern.MatchString(r.Pattern):
		return "pattern is not a channel name, a prefix ending in '*' or $user"
	case r.Size < 0:
		return "size must not be negative"
	case r.TTL < 0:
		return "ttl must not be negative"
	case r.Size == 0 && r.TTL == 0:
		return "sets neither size nor ttl"
	}
	return ""
}
