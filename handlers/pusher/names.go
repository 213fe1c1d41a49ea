package pusher

import (
	"errors"
	"strings"

	"github.com/wsgateway/gateway/handlers"
	"github.com/wsgateway/gateway/protocol"
)

// The channel-name rule (docs/pusher.md, "Channel names"). An app's Pusher channel NAME is the
// native channel
//
//	pusher:<app id>:<NAME with each of = @ , ; written as :e :a :c :s>
//
// (and the # of a user's #server-to-user-<id> channel as :h).
// Pusher names are [A-Za-z0-9_\-=@,.;]; native names [A-Za-z0-9_:.\-]. The four characters only
// Pusher allows are written as ':' and a letter, and ':' never occurs in a Pusher name, so the
// rule is reversible and apps are apart (no app id holds ':'). A mapped name must fit the
// native 128 characters: NAME may take 128 - len("pusher:<app id>:") characters, each of = @ , ;
// counting two.

// NativePrefix starts every native channel that is a Pusher app's.
const NativePrefix = handlers.PusherPrefix

// MaxNameLen is the longest Pusher channel name (Pusher's own limit).
const MaxNameLen = 164

// Errors of the channel-name rule.
var (
	errBadName = errors.New("a channel name is 1 to 164 of [A-Za-z0-9_-=@,.;]")
	errTooLong = errors.New("the channel name is too long for this gateway (docs/pusher.md, Channel names)")
)

var escapes = map[byte]byte{'=': 'e', '@': 'a', ',': 'c', ';': 's', '#': 'h'}
var unescapes = map[byte]byte{'e': '=', 'a': '@', 'c': ',', 's': ';', 'h': '#'}

// validName reports whether name is a Pusher channel name: [A-Za-z0-9_\-=@,.;], or a user's
// #server-to-user-<id>.
func validName(name string) bool {
	if name == "" || len(name) > MaxNameLen {
		return false
	}
	start := 0
	if strings.HasPrefix(name, prefixServerToUser) {
		start = len(prefixServerToUser)
		if start == len(name) {
			return false
		}
	}
	for i := start; i < len(name); i++ {
		b := name[i]
		switch {
		case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9':
		case b == '_', b == '-', b == '=', b == '@', b == ',', b == '.', b == ';':
		default:
			return false
		}
	}
	return true
}

// NativeChannel is the native channel of app's Pusher channel name.
func NativeChannel(app, name string) (string, error) {
	if !validName(name) {
		return "", errBadName
	}
	var b strings.Builder
	b.Grow(len(NativePrefix) + len(app) + 1 + len(name) + 8)
	b.WriteString(NativePrefix)
	b.WriteString(app)
	b.WriteByte(':')
	for i := 0; i < len(name); i++ {
		if e, ok := escapes[name[i]]; ok {
			b.WriteByte(':')
			b.WriteByte(e)
			continue
		}
		b.WriteByte(name[i])
	}
	native := b.String()
	if !protocol.ValidChannel(native) {
		return "", errTooLong
	}
	return native, nil
}

// AppPrefix is the prefix of every native channel of app.
func AppPrefix(app string) string { return NativePrefix + app + ":" }

// PusherChannel is the app and Pusher name of a native channel; false when the channel is no
// Pusher app's (or is not written by the rule).
func PusherChannel(native string) (app, name string, ok bool) {
	rest, ok := strings.CutPrefix(native, NativePrefix)
	if !ok {
		return "", "", false
	}
	app, escaped, ok := strings.Cut(rest, ":")
	if !ok || app == "" {
		return "", "", false
	}
	name, ok = unescape(escaped)
	return app, name, ok
}

// unescape reverses the escapes of a mapped name.
func unescape(s string) (string, bool) {
	if !strings.Contains(s, ":") {
		return s, s != ""
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != ':' {
			b = append(b, s[i])
			continue
		}
		if i+1 == len(s) {
			return "", false
		}
		u, ok := unescapes[s[i+1]]
		if !ok {
			return "", false
		}
		b = append(b, u)
		i++
	}
	return string(b), len(b) > 0
}

// Kinds of Pusher channels, by their prefix.
const (
	prefixPrivate   = "private-"
	prefixPresence  = "presence-"
	prefixEncrypted = "private-encrypted-"
)

func isPrivate(name string) bool  { return strings.HasPrefix(name, prefixPrivate) }
func isPresence(name string) bool { return strings.HasPrefix(name, prefixPresence) }
