package transports

import (
	"maps"
	"runtime"
	"strconv"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
)

var copied *message.Message // where the copies of TestCopyMessage go, so that they escape as a broker's do

// TestCopyMessage: CopyMessage copies what Copy copies, into a map of the copy's own, and
// allocates fewer bytes than Copy for a message with a publish's metadata (ten entries, and the
// position the memory broker adds).
func TestCopyMessage(t *testing.T) {
	m := message.NewMessage("uuid-1", []byte("payload"))
	for i := range 10 {
		m.Metadata.Set("key-"+strconv.Itoa(i), "value-"+strconv.Itoa(i))
	}
	c := CopyMessage(m, 1)
	if c.UUID != m.UUID || string(c.Payload) != "payload" || !maps.Equal(c.Metadata, m.Metadata) {
		t.Fatalf("copy %s %q %v, want %s %q %v", c.UUID, c.Payload, c.Metadata, m.UUID, m.Payload, m.Metadata)
	}
	c.Metadata.Set("position", "p")
	if m.Metadata.Get("position") != "" {
		t.Fatal("the copy shares its metadata with the original")
	}
	ours := allocatedBytes(func() { copied = CopyMessage(m, 1); copied.Metadata.Set("position", "p") })
	theirs := allocatedBytes(func() { copied = m.Copy(); copied.Metadata.Set("position", "p") })
	if ours >= theirs {
		t.Fatalf("CopyMessage allocates %d bytes, Copy %d: want fewer", ours, theirs)
	}
}

// allocatedBytes is what f allocates on average over 1,000 calls.
func allocatedBytes(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 1000 {
		f()
	}
	runtime.ReadMemStats(&after)
	return (after.TotalAlloc - before.TotalAlloc) / 1000
}
