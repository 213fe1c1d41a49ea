package nats

import (
	"testing"
	"time"
)

// TestEchoLate: a node counts as behind while its own heartbeats come back late (one took more
// than half a heartbeat within the last 1.5 heartbeats) or do not come (none for a heartbeat),
// and not when they come back on time.
func TestEchoLate(t *testing.T) {
	const hb = time.Second
	t0 := time.Unix(1000, 0)
	p := newPresence("a", hb)
	p.echoAt = t0
	if p.echoLate(t0.Add(hb / 2)) {
		t.Fatal("late half a heartbeat after the last echo, which was on time")
	}
	if !p.echoLate(t0.Add(hb + time.Millisecond)) {
		t.Fatal("not late when no echo came for more than a heartbeat")
	}
	p.echo(t0.Add(hb), t0.Add(hb+hb/10)) // on time
	if p.echoLate(t0.Add(hb + hb/2)) {
		t.Fatal("late after an echo on time")
	}
	p.echo(t0.Add(2*hb), t0.Add(2*hb+hb*6/10)) // late: 0.6 heartbeat
	at := t0.Add(2*hb + hb*6/10)
	p.echo(at, at.Add(time.Millisecond)) // on time again
	if !p.echoLate(at.Add(hb)) {
		t.Fatal("not late a heartbeat after an echo that came late")
	}
	p.echo(at.Add(hb), at.Add(hb+time.Millisecond))
	p.echo(at.Add(3*hb/2), at.Add(3*hb/2+time.Millisecond))
	if p.echoLate(at.Add(3*hb/2 + 2*time.Millisecond)) {
		t.Fatal("still late 1.5 heartbeats after the late echo, the later ones on time")
	}
}

// TestOutboxSyncing: a node asked again for a sync it sent whole less than a heartbeat ago (the
// asker asked before that sync came) sends no second one; asked later, or for another epoch, it
// does.
func TestOutboxSyncing(t *testing.T) {
	const hb = time.Second
	var o outbox
	if o.syncing("s", 1, hb) {
		t.Fatal("syncing with nothing sent or queued")
	}
	o.sent = map[string]sentSync{"s": {epoch: 1, at: time.Now()}}
	if !o.syncing("s", 1, hb) {
		t.Fatal("not syncing right after the sync of the same epoch was sent")
	}
	if o.syncing("s", 2, hb) || o.syncing("t", 1, hb) {
		t.Fatal("syncing for another epoch or subject")
	}
	o.sent["s"] = sentSync{epoch: 1, at: time.Now().Add(-hb)}
	if o.syncing("s", 1, hb) {
		t.Fatal("syncing a heartbeat after the sync was sent")
	}
	o.jobs = []outJob{{sync: true, subject: "s", epoch: 3}}
	if !o.syncing("s", 3, hb) {
		t.Fatal("not syncing while the sync is queued")
	}
}
