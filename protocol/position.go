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
	var buf [formBuf]byte // on the stack while the form fits: the string is the one allocation
	return string(p.append(buf[:0]))
}

// formBuf fits the String form of an epoch of up to 40 bytes with two 20-digit numbers, and
// the checksum of ForChannel.
const formBuf = 40 + 2*20 + 3 + 8

// append adds the String form to b. String and ForChannel build their text with it in one
// allocation (they run for every message delivered and every API publish answered).
func (p Position) append(b []byte) []byte {
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
	// Cut rather than Split: no slice of parts for a form read off every message delivered.
	epoch, rest, ok1 := strings.Cut(s, ":")
	hi, lo, ok2 := strings.Cut(rest, ":")
	if !ok1 || !ok2 || strings.Contains(lo, ":") {
		return Position{}, ErrBadPosition
	}
	return parsePositionParts(epoch, hi, lo)
}

func parsePositionParts(epoch, hiText, loText string) (Position, error) {
	if !validEpoch(epoch) {
		return Position{}, ErrBadPosition
	}
	hi, err := strconv.ParseUint(hiText, 10, 64)
	if err != nil {
		return Position{}, ErrBadPosition
	}
	lo, err := strconv.ParseUint(loText, 10, 64)
	if err != nil {
		return Position{}, ErrBadPosition
	}
	return Position{Epoch: epoch, Hi: hi, Lo: lo}, nil
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
	var buf [formBuf]byte
	b := p.append(buf[:0])
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
	return parsePositionParts(parts[0], parts[1], parts[2])
}

// channelCheck is the channel's checksum in a client position: its CRC-32 (IEEE) in 8 lower-case
// hex digits.
func channelCheck(channel string) string {
	var b [8]byte
	return string(appendChannelCheck(b[:0], channel))
}

// appendChannelCheck adds channelCheck(channel) to b, without fmt.
func appendChannelCheck(b []byte, channel string) []byte {
	const hex = "0123456789abcdef"
	sum := crc32.ChecksumIEEE([]byte(channel))
	for shift := 28; shift >= 0; shift -= 4 {
		b = append(b, hex[sum>>uint(shift)&0xf])
	}
	return b
}
