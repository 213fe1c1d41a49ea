package router

import (
	"errors"
	"testing"

	"github.com/wsgateway/gateway/protocol"
)

// TestBrokerSucceeded: the breaker counts only broker failures, and a success (every message's
// case) costs no allocation.
func TestBrokerSucceeded(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{nil, true},
		{protocol.Errorf(protocol.CodeForbidden, "no"), true},
		{protocol.Errorf(protocol.CodeUnavailable, "down"), false},
		{errors.New("broker down"), false},
	} {
		if got := brokerSucceeded(c.err); got != c.want {
			t.Errorf("brokerSucceeded(%v) = %v, want %v", c.err, got, c.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { brokerSucceeded(nil) }); n != 0 {
		t.Fatalf("brokerSucceeded(nil): %v allocations, want 0", n)
	}
}
