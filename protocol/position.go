package protocol

import (
	"errors"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"
)

// Position is where a message stands in a channel's history. Positions of one Epoch are totally
// ordered by (Hi, Lo); positions of different epochs are not comparable (the history was lost or
// comes from another broker).
//
// Each broker fills it from what the broker assigns: the memory broker's counter (Lo), a
// JetStream stream sequence (Lo), a Redis stream entry id (Hi = milliseconds, Lo = sequence), a
// Kafka partition offset (Epoch names the topic and partition, Lo = offset).
type Position struct {
	Epoch string // [A-Za-z0-9_-]*
	Hi    uint64
	Lo    uint64
}

// Less reports whether p comes before q. Both must have the same epoch.
func (p Position) Less(q Position) bool {
	if p.Hi != q.Hi {
		return p.Hi < q.Hi
	}
	return p.Lo < q.Lo
}

// IsZero reports whether p is the zero value.
func (p Position) IsZero() bool { return p == Position{} }

// String is the form kept in MetaPosition: "epoch:hi:lo".
func (p Position) String() string {
	return string(p.appendTo(make([]byte, 0, len(p.Epoch)+2+2*20)))
}

// appendTo appends the String form to b.
func (p Position) appendTo(b []byte) []byte {
	b = append(b, p.Epoch...)
	b = append(b, ':')
	b = strconv.AppendUint(b, p.Hi, 10)
	b = append(b, ':')
	return strconv.AppendUint(b, p.Lo, 10)
}

// ErrBadPosition is returned for a position that cannot be parsed or belongs to another channel.
var ErrBadPosition = errors.New("malformed position")

// ParsePosition parses the String form.
func ParsePosition(s string) (Position, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return Position{}, ErrBadPosition
	}
	return parsePositionParts(parts)
}

func parsePositionParts(parts []string) (Position, error) {
	if !validEpoch(parts[0]) {
		return Position{}, ErrBadPosition
	}
	hi, err := strconv.ParseUint(parts[1], 10, 64)
	if err != nil {
		return Position{}, ErrBadPosition
	}
	lo, err := strconv.ParseUint(parts[2], 10, 64)
	if err != nil {
		return Position{}, ErrBadPosition
	}
	return Position{Epoch: parts[0], Hi: hi, Lo: lo}, nil
}

// validEpoch reports whether s is made only of [A-Za-z0-9_-] (empty is valid).
func validEpoch(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// ForChannel is the opaque form given to clients: the String form plus a checksum of the channel
// name, so that a position sent back for another channel is refused.
func (p Position) ForChannel(channel string) string {
	b := p.appendTo(make([]byte, 0, len(p.Epoch)+3+2*20+8))
	b = append(b, ':')
	return string(appendChannelCheck(b, channel))
}

// ParseClientPosition parses what ForChannel made for channel.
func ParseClientPosition(channel, s string) (Position, error) {
	if len(s) > MaxPositionLen {
		return Position{}, ErrBadPosition
	}
	parts := strings.Split(s, ":")
	if len(parts) != 4 {
		return Position{}, ErrBadPosition
	}
	if parts[3] != channelCheck(channel) {
		return Position{}, fmt.Errorf("%w: position belongs to another channel", ErrBadPosition)
	}
	return parsePositionParts(parts[:3])
}

func channelCheck(channel string) string {
	var b [8]byte
	return string(appendChannelCheck(b[:0], channel))
}

// appendChannelCheck appends the checksum of channel's name to b: 8 hex digits.
func appendChannelCheck(b []byte, channel string) []byte {
	const digits = "0123456789abcdef"
	c := crc32.ChecksumIEEE([]byte(channel))
	for shift := 28; shift >= 0; shift -= 4 {
		b = append(b, digits[c>>shift&0xf])
	}
	return b
}
