package transports

import (
	"runtime"
	"testing"
)

// TestShrinkGivesBackRoom: a map that held 100,000 keys and lost almost all of them is copied
// into one sized for what is left, so the live heap falls back; the keys left are all kept.
func TestShrinkGivesBackRoom(t *testing.T) {
	heap := func() int64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return int64(m.HeapAlloc)
	}
	before := heap()
	m, peak := map[int]*int{}, 0
	for i := range 100000 {
		m[i] = new(int)
		m = Shrink(m, &peak)
	}
	full := heap()
	for i := range 99990 {
		delete(m, i)
		m = Shrink(m, &peak)
	}
	after := heap()
	if len(m) != 10 || m[99995] == nil {
		t.Fatalf("%d keys left, want the last 10", len(m))
	}
	if grown := full - before; after-before > grown/10 {
		t.Fatalf("live heap %d B over the start with 10 keys left; %d B with 100,000", after-before, grown)
	}
	runtime.KeepAlive(m)
}
