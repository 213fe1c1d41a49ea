package wsclient

import (
	"strings"

	"github.com/wsgateway/gateway/protocol"
)

// Positions are opaque to applications. This gateway writes them as protocol.Position.ForChannel
// does, "epoch:hi:lo:check", where check is a checksum of the node's name of the channel (which
// for "$user" the client does not know, so it compares checks instead of computing one with
// protocol.ParseClientPosition). Positions with the same epoch and check are ordered by
// Position.Less. The client only uses that to drop duplicates; anything it cannot parse is never
// treated as a duplicate, nor is a position of another epoch or check, nor one without an epoch
// (a broker that keeps no history gives every message the epoch "").

// parsePosition splits a client position into its Position and its channel check.
func parsePosition(s string) (p protocol.Position, check string, ok bool) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 || i == len(s)-1 {
		return protocol.Position{}, "", false
	}
	p, err := protocol.ParsePosition(s[:i])
	if err != nil || p.Epoch == "" {
		return protocol.Position{}, "", false
	}
	return p, s[i+1:], true
}

// comparePositions returns -1, 0 or +1 when a is before, at or after b, and ok false when they
// cannot be compared (unparsable, another epoch or another channel).
func comparePositions(a, b string) (cmp int, ok bool) {
	pa, checkA, okA := parsePosition(a)
	pb, checkB, okB := parsePosition(b)
	if !okA || !okB || pa.Epoch != pb.Epoch || checkA != checkB {
		return 0, false
	}
	switch {
	case pa.Less(pb):
		return -1, true
	case pb.Less(pa):
		return 1, true
	}
	return 0, true
}

// seen reports whether a message at pos was already delivered when last is the last delivered.
func seen(pos, last string) bool {
	cmp, ok := comparePositions(pos, last)
	return ok && cmp <= 0
}
