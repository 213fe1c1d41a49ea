package transports

import (
	"context"
	"sync/atomic"
	"testing"
)

type ctxKey struct{}

// TestEndingParent: the caller's context ending ends the subscription's context and runs end
// once; the subscription's context has the caller's values.
func TestEndingParent(t *testing.T) {
	parent, cancel := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "v"))
	var e Ending
	e.Init(parent)
	if e.Context().Value(ctxKey{}) != "v" {
		t.Fatal("the subscription's context lost the caller's values")
	}
	var runs atomic.Int32
	ended := make(chan struct{})
	e.Start(parent, func() {
		if e.Context().Err() == nil {
			t.Error("end ran before the subscription's context was done")
		}
		runs.Add(1)
		close(ended)
	})
	cancel()
	<-ended
	e.Cancel() // after the end: nothing more runs
	if n := runs.Load(); n != 1 {
		t.Fatalf("end ran %d times, want 1", n)
	}
}

// TestEndingCancelBeforeStart: a Cancel during the setup ends the context at once and runs end
// only at Start; Cancel twice runs it once; the caller's context is no longer watched after.
func TestEndingCancelBeforeStart(t *testing.T) {
	parent, cancel := context.WithCancel(context.Background())
	defer cancel()
	var e Ending
	e.Init(parent)
	var runs atomic.Int32
	ended := make(chan struct{})
	e.Cancel()
	e.Cancel()
	if e.Context().Err() == nil {
		t.Fatal("Cancel did not end the subscription's context")
	}
	if parent.Err() != nil {
		t.Fatal("Cancel ended the caller's context")
	}
	e.Start(parent, func() { runs.Add(1); close(ended) })
	<-ended
	e.Cancel()
	if n := runs.Load(); n != 1 {
		t.Fatalf("end ran %d times, want 1", n)
	}
	if e.stopParent() {
		t.Fatal("the caller's context is still watched after the end")
	}
}
