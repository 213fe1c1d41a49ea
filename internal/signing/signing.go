// Package signing signs and verifies the messages services emit to clients, so that a node can
// refuse what a compromised or mistaken topic writer sends (router.require_signature).
//
// The signature is metadata "signature" = "<key id>:<hex HMAC-SHA256>" over
// topic "\n" target "\n" session "\n" payload, where topic is the logical topic the message was
// published to (ch.<channel> or direct) and target and session are its metadata of those names.
package signing

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/protocol"
)

// Keys are HMAC keys by id; Current signs.
type Keys struct {
	Current string
	byID    map[string][]byte
}

// ParseKeys reads "id:secret" entries; the first is the current key. Nil when there are none.
func ParseKeys(entries []string) (*Keys, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	k := &Keys{byID: map[string][]byte{}}
	for i, e := range entries {
		id, secret, ok := strings.Cut(e, ":")
		if !ok || id == "" || secret == "" {
			return nil, errors.New("signing key entries must be id:secret")
		}
		if i == 0 {
			k.Current = id
		}
		k.byID[id] = []byte(secret)
	}
	return k, nil
}

// Errors of Verify.
var (
	ErrUnsigned     = errors.New("message is not signed")
	ErrUnknownKey   = errors.New("message is signed with an unknown key")
	ErrBadSignature = errors.New("message signature does not match")
)

func mac(key []byte, topic string, msg *message.Message) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(topic))
	h.Write([]byte{'\n'})
	h.Write([]byte(msg.Metadata.Get(protocol.MetaTarget)))
	h.Write([]byte{'\n'})
	h.Write([]byte(msg.Metadata.Get(protocol.MetaSession)))
	h.Write([]byte{'\n'})
	h.Write(msg.Payload)
	return h.Sum(nil)
}

// Sign sets the signature of msg, published to topic, with the current key. Nil keys do nothing.
func (k *Keys) Sign(topic string, msg *message.Message) {
	if k == nil {
		return
	}
	msg.Metadata.Set(protocol.MetaSig, k.Current+":"+hex.EncodeToString(mac(k.byID[k.Current], topic, msg)))
}

// Verify checks the signature of msg as consumed from topic, with any of the keys (rotation:
// old keys keep verifying until they are removed).
func (k *Keys) Verify(topic string, msg *message.Message) error {
	sig := msg.Metadata.Get(protocol.MetaSig)
	if sig == "" {
		return ErrUnsigned
	}
	id, hexSum, _ := strings.Cut(sig, ":")
	key, ok := k.byID[id]
	if !ok {
		return ErrUnknownKey
	}
	got, err := hex.DecodeString(hexSum)
	if err != nil || !hmac.Equal(got, mac(key, topic, msg)) {
		return ErrBadSignature
	}
	return nil
}
