package middleware_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/router/middleware"
)

func keyOfMetadata(m *message.Message) string { return m.Metadata.Get("key") }

// dedupe is Dedupe with store, an hour's window and hold, and the key in metadata "key".
func dedupe(store middleware.DedupeStore) message.HandlerMiddleware {
	return middleware.Dedupe(middleware.DedupeConfig{Store: store, Window: time.Hour, Hold: time.Hour, KeyOf: keyOfMetadata})
}

func keyed(key string) *message.Message {
	m := newMsg("x")
	m.Metadata.Set("key", key)
	return m
}

func TestDedupeForgetsAKeyWhenTheHandlerFails(t *testing.T) {
	h := &counting{err: errors.New("broker down")}
	mw := dedupe(middleware.NewMemoryDedupe())(h.handle)
	for i := 1; i <= 2; i++ {
		if _, err := mw(keyed("alice/1")); !errors.Is(err, h.err) {
			t.Fatalf("attempt %d: error %v, want the handler's", i, err)
		}
		if h.calls != i {
			t.Fatalf("attempt %d ran the handler %d times: a failed attempt kept its key", i, h.calls)
		}
	}
}

func TestDedupeKeepsAKeyAfterSuccess(t *testing.T) {
	h := &counting{}
	mw := dedupe(middleware.NewMemoryDedupe())(h.handle)
	for i := 0; i < 3; i++ {
		if _, err := mw(keyed("alice/1")); err != nil {
			t.Fatalf("copy %d: error %v, want acked", i, err)
		}
	}
	if h.calls != 1 {
		t.Fatalf("handler ran %d times for one key, want once", h.calls)
	}
	if _, err := mw(keyed("alice/2")); err != nil || h.calls != 2 {
		t.Fatalf("another key: error %v, calls %d", err, h.calls)
	}
	if _, err := mw(keyed("")); err != nil || h.calls != 3 {
		t.Fatalf("no key: error %v, calls %d", err, h.calls)
	}
	if _, err := mw(keyed("")); err != nil || h.calls != 4 {
		t.Fatalf("no key is never a duplicate: error %v, calls %d", err, h.calls)
	}
}

func TestDedupeAnswersUnavailableWhileAnAttemptHoldsTheKey(t *testing.T) {
	var mw message.HandlerFunc
	var inner error
	mw = dedupe(middleware.NewMemoryDedupe())(
		func(m *message.Message) ([]*message.Message, error) {
			if inner == nil { // a second copy arrives while the first attempt runs
				_, inner = mw(keyed("alice/1"))
			}
			return nil, nil
		})
	if _, err := mw(keyed("alice/1")); err != nil {
		t.Fatal(err)
	}
	wantCode(t, inner, protocol.CodeUnavailable)
}

// brokenStore fails every call.
type brokenStore struct{}

func (brokenStore) Begin(context.Context, string, time.Duration) (middleware.Claim, error) {
	return 0, errors.New("store down")
}
func (brokenStore) Commit(context.Context, string, time.Duration) error {
	return errors.New("store down")
}
func (brokenStore) Abort(context.Context, string) error { return errors.New("store down") }

func TestDedupeAnswersUnavailableWhenTheStoreFails(t *testing.T) {
	h := &counting{}
	_, err := dedupe(brokenStore{})(h.handle)(keyed("alice/1"))
	wantCode(t, err, protocol.CodeUnavailable)
	if h.calls != 0 {
		t.Fatal("published without knowing whether it was a duplicate")
	}
}
