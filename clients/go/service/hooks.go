package service

import (
	"context"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports/hookbus"
)

// HookHandler answers one hook request (protocol.HookRequest) with a protocol.HookReply: the
// zero reply allows and changes nothing, Deny refuses with a code and message the client sees,
// and User, Info, Data, Expires change what the hook's documentation says (docs/hooks.md). ctx
// ends at the request's deadline: past it, nobody waits for the reply. A returned error reaches
// the node at once as the hook's failure (the node then fails closed or open, as its hooks
// settings say); it is not shown to the client.
type HookHandler func(ctx context.Context, req *protocol.HookRequest) (protocol.HookReply, error)

// HookHandlers are the handlers of OnHooks, one per hook; a nil one is a hook this service does
// not answer: its requests get an error reply at once, so the node fails fast rather than waiting
// for its deadline (do not run OnHooks in services that answer only some hooks next to services
// that answer the others: a request goes to one member of the group, whichever it is).
type HookHandlers struct {
	Connect   HookHandler // protocol.HookConnect
	Subscribe HookHandler // protocol.HookSubscribe
	Publish   HookHandler // protocol.HookPublish
	Refresh   HookHandler // protocol.HookRefresh
	RPC       HookHandler // protocol.HookRPC: req.Method names the method, req.Data its params

	// Concurrency bounds the requests this Service handles at once (default 64,
	// hookbus.DefaultConcurrency); beyond it, requests wait in the broker for a free slot or for
	// another replica.
	Concurrency int
}

func (h HookHandlers) handler(hook string) HookHandler {
	switch hook {
	case protocol.HookConnect:
		return h.Connect
	case protocol.HookSubscribe:
		return h.Subscribe
	case protocol.HookPublish:
		return h.Publish
	case protocol.HookRefresh:
		return h.Refresh
	case protocol.HookRPC:
		return h.RPC
	}
	return nil
}

// OnHooks answers the gateway nodes' hook requests (docs/hooks.md, "Hooks over the broker") with
// h until ctx ends or the Service is closed: it consumes the hooks topic as a member of the
// services' group protocol.HooksGroup (competing consumers: each request is answered by one
// replica of the service, whichever node asked), skips the requests whose deadline has passed,
// calls the handler of the request's hook, and publishes its reply to the node that asked.
// Several requests are handled at once (h.Concurrency). A handler that panics answers with an
// error.
//
// It returns once subscribed, waiting while the broker is unavailable as Inbound does; the
// handling goes on in the background. Each request is taken once (acked when taken): a
// service that stops while handling one leaves that call to fail by its deadline.
func (s *Service) OnHooks(ctx context.Context, h HookHandlers) error {
	if h.Connect == nil && h.Subscribe == nil && h.Publish == nil && h.Refresh == nil && h.RPC == nil {
		return fmt.Errorf("%w: OnHooks needs at least one handler", ErrInvalid)
	}
	ctx, cancel := context.WithCancel(ctx)
	if !s.track() {
		cancel()
		return ErrClosed
	}
	done, err := hookbus.Serve(ctx, hookbus.ServeConfig{
		Broker:      s.broker,
		Concurrency: h.Concurrency,
		Log:         s.log,
		Subscribe: func(ctx context.Context) (<-chan *message.Message, error) {
			return s.subscribe(ctx, func(ctx context.Context) (<-chan *message.Message, error) {
				return s.broker.SubscribeGroup(ctx, protocol.TopicHooks, protocol.HooksGroup)
			})
		},
		Handler: func(ctx context.Context, req *protocol.HookRequest) (protocol.HookReply, error) {
			fn := h.handler(req.Hook)
			if fn == nil {
				return protocol.HookReply{}, fmt.Errorf("this service has no %q hook handler", req.Hook)
			}
			return fn(ctx, req)
		},
	})
	if err != nil {
		cancel()
		s.wg.Done()
		return fmt.Errorf("service: answer hooks: %w", err)
	}
	go func() { // owned by the Service: Close waits for it
		defer s.wg.Done()
		defer cancel()
		select {
		case <-done:
		case <-s.done:
			cancel()
			<-done
		}
	}()
	return nil
}
