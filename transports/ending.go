package transports

import (
	"context"
	"sync"
)

// Ending is how a SubscribeFunc subscription ends. Its context carries the caller's values and
// is done once the caller's context ends or Cancel is called (the node closed, the relay's
// subscriber refused a message); then the subscription's end runs, once, on a goroutine of its
// own. It watches the caller's context with one context.AfterFunc and the subscription's own
// context with nothing: every child or AfterFunc registered in a context costs that context a
// map and a channel, which an idle subscription would hold for its whole life.
//
// Embed it in the subscription, call Init, set the subscription up, then Start. Safe for
// concurrent use after Init.
type Ending struct {
	ctx        context.Context
	stopCtx    context.CancelFunc // ends ctx only
	stopParent func() bool
	end        func()

	mu      sync.Mutex
	started bool // Start was called: once ctx is done, end runs
	ending  bool // end was started
}

// Init makes the subscription's context, with ctx's values. Until Start, Cancel ends the
// context only (a subscription whose setup fails calls it and never Start).
func (e *Ending) Init(ctx context.Context) {
	e.ctx, e.stopCtx = context.WithCancel(context.WithoutCancel(ctx))
}

// Context is the subscription's context: done once it ends.
func (e *Ending) Context() context.Context { return e.ctx }

// Start watches parent (the caller's context), and runs end once the subscription's context is
// done: at once if it was cancelled during the setup. Call it once, after Init.
func (e *Ending) Start(parent context.Context, end func()) {
	e.end = end
	e.stopParent = context.AfterFunc(parent, e.Cancel)
	e.mu.Lock()
	e.started = true
	e.mu.Unlock()
	e.finishIfDone()
}

// Cancel ends the subscription: its context is done at once, and end runs on a goroutine of its
// own (the caller may be the relay's drain, which end waits for), once Start was called.
func (e *Ending) Cancel() {
	e.stopCtx()
	e.finishIfDone()
}

// finishIfDone starts end, once, when Start was called and the context is done.
func (e *Ending) finishIfDone() {
	e.mu.Lock()
	run := e.started && e.ctx.Err() != nil && !e.ending
	e.ending = e.ending || run
	e.mu.Unlock()
	if run {
		go e.finish()
	}
}

func (e *Ending) finish() {
	e.stopParent()
	e.end()
}
