package service

import (
	"context"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/protocol"
)

// ReasonNodeLost is the Reason of the disconnected events Presence makes up for the sessions of
// a node that stopped sending heartbeats (killed, cut off) without saying goodbye.
const ReasonNodeLost = protocol.ReasonNodeLost

// Presence consumes every lifecycle event (fan-out: each replica of a service sees all of them,
// so each can keep the same view) and passes them on, adding what a node that died cannot send:
// when a node's heartbeat (events.heartbeat on the gateway) has not been heard for timeout, a
// disconnected event with Reason "node_lost" for each session it held, then it forgets the node.
// Choose timeout a few heartbeats long (three is usual). Events are acked as they are passed on.
func (s *Service) Presence(ctx context.Context, timeout time.Duration) (<-chan *Event, error) {
	if timeout <= 0 {
		return nil, fmt.Errorf("%w: timeout must be positive", ErrInvalid)
	}
	in, err := s.subscribe(ctx, func(ctx context.Context) (<-chan *message.Message, error) {
		return s.broker.Subscribe(ctx, protocol.TopicEvents)
	})
	if err != nil {
		return nil, fmt.Errorf("service: presence: %w", err)
	}
	out := make(chan *Event)
	if !s.track() {
		close(out)
		return out, nil
	}
	type node struct {
		seen     time.Time
		sessions map[string]*Event // the connected event of each session
	}
	nodes := map[string]*node{}
	nodeOf := func(id string) *node {
		n := nodes[id]
		if n == nil {
			n = &node{sessions: map[string]*Event{}}
			nodes[id] = n
		}
		n.seen = time.Now()
		return n
	}
	emit := func(e *Event) bool {
		select {
		case out <- e:
			return true
		case <-ctx.Done():
		case <-s.done:
		}
		return false
	}
	go func() {
		defer s.wg.Done()
		defer close(out)
		sweep := time.NewTicker(timeout / 3)
		defer sweep.Stop()
		for {
			select {
			case m, ok := <-in:
				if !ok {
					return
				}
				e, err := DecodeEvent(m.Payload)
				if err != nil {
					s.log.Warn("lifecycle event skipped", "message_uuid", m.UUID, "error", err)
					m.Ack()
					continue
				}
				e.msg = m
				n := nodeOf(e.Node)
				switch e.Type {
				case EventConnected:
					n.sessions[e.Session] = e
				case EventDisconnected:
					delete(n.sessions, e.Session)
				case EventNodeStopped:
					delete(nodes, e.Node)
				}
				if !emit(e) {
					m.Nack()
					return
				}
				m.Ack()
			case now := <-sweep.C:
				for id, n := range nodes {
					if now.Sub(n.seen) < timeout {
						continue
					}
					delete(nodes, id)
					for _, c := range n.sessions {
						lost := &Event{Event: protocol.Event{Type: EventDisconnected, User: c.User, Session: c.Session, Node: id, Reason: ReasonNodeLost, At: now.UTC()}}
						if !emit(lost) {
							return
						}
					}
				}
			case <-ctx.Done():
				return
			case <-s.done:
				return
			}
		}
	}()
	return out, nil
}
