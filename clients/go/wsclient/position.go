package wsclient

import (
	"strconv"
	"strings"
)

// Positions are opaque to applications. This gateway writes them "epoch:hi:lo:check": positions
// with the same epoch and check (the channel's checksum) are ordered by (hi, lo). The client
// only uses that to drop duplicates; anything it cannot parse is never treated as a duplicate.

type position struct {
	epoch, check string
	hi, lo       uint64
}

func parsePosition(s string) (position, bool) {
	parts := strings.Split(s, ":")
	if len(parts) != 4 || parts[0] == "" || parts[3] == "" {
		return position{}, false
	}
	hi, err := strconv.ParseUint(parts[1], 10, 64)
	if err != nil {
		return position{}, false
	}
	lo, err := strconv.ParseUint(parts[2], 10, 64)
	if err != nil {
		return position{}, false
	}
	return position{epoch: parts[0], check: parts[3], hi: hi, lo: lo}, true
}

// comparePositions returns -1, 0 or +1 when a is before, at or after b, and ok false when they
// cannot be compared (unparsable, another epoch or another channel).
func comparePositions(a, b string) (cmp int, ok bool) {
	pa, okA := parsePosition(a)
	pb, okB := parsePosition(b)
	if !okA || !okB || pa.epoch != pb.epoch || pa.check != pb.check {
		return 0, false
	}
	switch {
	case pa.hi != pb.hi:
		if pa.hi < pb.hi {
			return -1, true
		}
		return 1, true
	case pa.lo < pb.lo:
		return -1, true
	case pa.lo > pb.lo:
		return 1, true
	}
	return 0, true
}

// seen reports whether a message at pos was already delivered when last is the last delivered.
func seen(pos, last string) bool {
	cmp, ok := comparePositions(pos, last)
	return ok && cmp <= 0
}
