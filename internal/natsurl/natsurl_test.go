package natsurl

import (
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	for _, ok := range []string{"nats://127.0.0.1:4222", "127.0.0.1:4222, nats://h:1", "", "tls://user:pw@h:4443"} {
		if err := Check(ok); err != nil {
			t.Errorf("Check(%q): %v", ok, err)
		}
	}
	err := Check("nats://user:secret@h:4222,nats://bad host:1")
	if err == nil {
		t.Fatal("a list with an address nats.go cannot parse was accepted")
	}
	if strings.Contains(err.Error(), "secret") {
		t.Errorf("the error repeats the URL (and its password): %v", err)
	}
}
