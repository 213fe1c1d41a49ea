//go:build race

package faults

import (
	"testing"
	"time"
)

// checkDetection does not time anything under -race (netfault_norace_test.go does).
func checkDetection(*testing.T, time.Duration, time.Duration) {}
