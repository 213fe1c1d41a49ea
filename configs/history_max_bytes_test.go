package configs

import (
	"errors"
	"testing"
)

// TestHistoryMaxBytes: history.max_bytes defaults to 256 MiB, takes -1 for no bound, and refuses
// anything below, naming the key.
func TestHistoryMaxBytes(t *testing.T) {
	cfg, err := Load("", []string{secret})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.History.MaxBytes != DefaultHistoryMaxBytes {
		t.Errorf("default history.max_bytes = %d, want %d", cfg.History.MaxBytes, DefaultHistoryMaxBytes)
	}
	for _, v := range []string{"-1", "1048576"} {
		if _, err := Load("", []string{secret, "GATEWAY_HISTORY_MAX_BYTES=" + v}); err != nil {
			t.Errorf("GATEWAY_HISTORY_MAX_BYTES=%s: %v", v, err)
		}
	}
	for _, v := range []string{"-2", "lots"} {
		_, err := Load("", []string{secret, "GATEWAY_HISTORY_MAX_BYTES=" + v})
		var ke *KeyError
		if !errors.As(err, &ke) || ke.Key != "history.max_bytes" {
			t.Errorf("GATEWAY_HISTORY_MAX_BYTES=%s: error %v, want one naming history.max_bytes", v, err)
		}
	}
}
