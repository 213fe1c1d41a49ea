package handlers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	wmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/sony/gobreaker"

	"github.com/wsgateway/gateway/protocol"
)

// HTTPHookConfig is how an HTTPHookCaller POSTs.
type HTTPHookConfig struct {
	URL     string
	Secret  []byte // HMAC key of protocol.WebhookSignatureHeader (signed like webhooks)
	Retries int    // POSTs tried again after a failure, within the call's context
	// BreakerFailures failed calls in a row open the breaker for BreakerOpenFor: calls then fail
	// at once, without a POST, until one trial call succeeds.
	BreakerFailures int
	BreakerOpenFor  time.Duration
	// Client does the POSTs (nil: a client of its own); a copy of it is used, which follows no
	// redirect.
	Client *http.Client
}

// HTTPHookCaller calls a hook with an HTTP POST: the JSON HookRequest, signed, whose 2xx answer's
// body is the HookReply. Another status (a 3xx too: redirects are not followed, so the signed
// body and its cookies never go to another URL), no answer, or a body that is not a HookReply is
// an error. Retries and the circuit breaker are Watermill's router middleware (Retry inside
// CircuitBreaker) around a handler that does one POST. Safe for concurrent use.
type HTTPHookCaller struct {
	cfg    HTTPHookConfig
	call   message.HandlerFunc
	client *http.Client
}

// maxHookReply bounds the body of a hook's answer.
const maxHookReply = 1 << 20

// errHookStatus is an answer that is not 2xx; permanent for 4xx (not retried).
type errHookStatus struct{ status int }

func (e errHookStatus) Error() string { return fmt.Sprintf("hook answered HTTP %d", e.status) }

// NewHTTPHookCaller makes the caller of one hook's URL; it starts nothing.
func NewHTTPHookCaller(cfg HTTPHookConfig) *HTTPHookCaller {
	client := http.Client{}
	if cfg.Client != nil {
		client = *cfg.Client
	}
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	h := &HTTPHookCaller{cfg: cfg, client: &client}
	breaker := wmw.NewCircuitBreaker(gobreaker.Settings{
		Name:        "hook " + cfg.URL,
		Timeout:     cfg.BreakerOpenFor,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= uint32(max(cfg.BreakerFailures, 1)) },
		// A call given up by its caller (the client left) says nothing of the backend.
		IsSuccessful: func(err error) bool { return err == nil || errors.Is(err, context.Canceled) },
	})
	retry := wmw.Retry{
		MaxRetries:          cfg.Retries,
		InitialInterval:     20 * time.Millisecond,
		MaxInterval:         500 * time.Millisecond,
		Multiplier:          2,
		RandomizationFactor: 0.5,
		ShouldRetry: func(p wmw.RetryParams) bool {
			var st errHookStatus
			return !errors.As(p.Err, &st) || st.status >= 500 || st.status == http.StatusTooManyRequests
		},
	}
	h.call = breaker.Middleware(retry.Middleware(h.post))
	return h
}

// Call POSTs req and returns the backend's reply; ctx bounds the call, retries included.
func (h *HTTPHookCaller) Call(ctx context.Context, req protocol.HookRequest) (protocol.HookReply, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return protocol.HookReply{}, err
	}
	msg := message.NewMessage(req.ID, body)
	msg.SetContext(ctx)
	out, err := h.call(msg)
	if err != nil {
		return protocol.HookReply{}, err
	}
	if len(out) != 1 {
		return protocol.HookReply{}, errors.New("hook: no reply")
	}
	var reply protocol.HookReply
	if err := json.Unmarshal(out[0].Payload, &reply); err != nil {
		return protocol.HookReply{}, fmt.Errorf("hook reply: %w", err)
	}
	if err := reply.Check(); err != nil {
		return protocol.HookReply{}, fmt.Errorf("hook reply: %w", err)
	}
	return reply, nil
}

// post is one POST of msg's payload; the reply body comes back as the produced message.
func (h *HTTPHookCaller) post(msg *message.Message) ([]*message.Message, error) {
	ctx := msg.Context()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.cfg.URL, bytes.NewReader(msg.Payload))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(protocol.WebhookSignatureHeader, protocol.WebhookSignatureValue(h.cfg.Secret, time.Now(), msg.Payload))
	resp, err := h.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxHookReply+1))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, errHookStatus{resp.StatusCode}
	}
	if len(b) > maxHookReply {
		return nil, errors.New("hook reply over 1 MiB")
	}
	if len(bytes.TrimSpace(b)) == 0 {
		b = []byte("{}") // an empty 2xx allows and changes nothing
	}
	if !json.Valid(b) {
		return nil, errors.New("hook reply is not JSON")
	}
	return []*message.Message{message.NewMessage(msg.UUID, b)}, nil
}
