package main

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"time"

	"github.com/wsgateway/gateway/clients/go/service"
)

// Reply is what echo answers to a send.
type Reply struct {
	Echo json.RawMessage `json:"echo"` // the data sent
	From string          `json:"from"` // the sender's user id ("" when anonymous)
}

// retryDelay is how long echo waits before having a message it could not answer delivered again.
const retryDelay = 200 * time.Millisecond

// start consumes the sends of group and answers them in the background until ctx ends or svc is
// closed; the returned channel is closed then. Once start returned, sends are consumed.
func start(ctx context.Context, svc *service.Service, group string, log *slog.Logger) (<-chan struct{}, error) {
	in, err := svc.Inbound(ctx, group)
	if err != nil {
		return nil, err
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for m := range in {
			answer(ctx, m, log)
		}
	}()
	return stopped, nil
}

// answer replies to one send and acks it; when the reply cannot be published, it nacks it (after a
// pause) so that it is delivered again. The reply's msg_id derives from the send's UUID, so a send
// delivered twice (a nack after a publish that timed out but went through) is answered once.
func answer(ctx context.Context, m *service.Inbound, log *slog.Logger) {
	if m.Kind() != service.KindSend {
		m.Ack()
		return
	}
	data := json.RawMessage(m.Data())
	if !json.Valid(data) { // not from a WebSocket client (a broker CLI): echo it as a JSON string
		data, _ = json.Marshal(string(m.Data()))
	}
	var opts []service.EmitOption
	if key := "echo:" + m.UUID; len(key) <= service.MaxMsgIDLen {
		opts = append(opts, service.WithMsgID(key))
	}
	_, err := m.Reply(ctx, Reply{Echo: data, From: m.User()}, opts...)
	switch {
	case err == nil:
		m.Ack()
		log.Debug("echoed", "user", m.User(), "session", m.Session(), "msg_id", m.MsgID())
	case errors.Is(err, service.ErrNoSession), errors.Is(err, service.ErrInvalid):
		m.Ack() // nothing to answer
		log.Warn("send without a session to answer dropped", "message_uuid", m.UUID, "error", err)
	default:
		log.Warn("echo failed, will retry", "msg_id", m.MsgID(), "error", err)
		select {
		case <-time.After(retryDelay):
		case <-ctx.Done():
		}
		m.Nack()
	}
}
