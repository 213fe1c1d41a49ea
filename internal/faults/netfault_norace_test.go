//go:build !race

package faults

import (
	"testing"
	"time"
)

// checkDetection holds TestClientCut's node to its ping bound (outside -race only: a timed
// assertion), with 500 ms for polling and scheduling.
func checkDetection(t *testing.T, detected, bound time.Duration) {
	if detected > bound+500*time.Millisecond {
		t.Errorf("the cut client was freed %v after the cut; bound %v", detected, bound)
	}
}
