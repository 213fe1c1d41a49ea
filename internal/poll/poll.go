// Package poll is the one polling helper of the tests: wait for a condition with a deadline,
// never a bare sleep.
package poll

import (
	"testing"
	"time"
)

// Until calls fn until it returns nil, failing the test with fn's last error once within has
// passed. It waits between calls with a backoff from 1 ms to 50 ms.
func Until(t testing.TB, within time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	delay := time.Millisecond
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", within, err)
		}
		time.Sleep(delay) // polling backoff, bounded by the deadline above
		delay = min(delay*2, 50*time.Millisecond)
	}
}
