package transports

import (
	"strings"
)

// SafeName maps any string to a non-empty one made only of [A-Za-z0-9-] and '_', injectively:
// every other byte, and '_' itself, becomes '_' followed by two lower-case hex digits. The result
// is a legal NATS subject token, JetStream stream or consumer name, Kafka topic and Redis key.
func SafeName(s string) string {
	const hex = "0123456789abcdef"
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-':
			b.WriteByte(c)
		default:
			b.WriteByte('_')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xf])
		}
	}
	if b.Len() == 0 {
		return "_"
	}
	return b.String()
}
