package pusher

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"time"

	"github.com/wsgateway/gateway/handlers"
	"github.com/wsgateway/gateway/protocol"
)

// Webhooks in Pusher's format (docs/pusher.md, "Webhooks"): each app with a webhook_url has its
// own handlers.Webhooks, a consumer group of its own on the events topic (so each event is
// POSTed by one node of the cluster, retried, then poisoned as the gateway's own webhooks are),
// reading the lifecycle events of its channels and POSTing them as Pusher does.

// Pusher's webhook headers.
const (
	HeaderWebhookKey       = "X-Pusher-Key"
	HeaderWebhookSignature = "X-Pusher-Signature"
)

// WebhookEvents are the lifecycle event types a Pusher app's webhooks read.
var WebhookEvents = []string{protocol.EventChannelOccupied, protocol.EventChannelVacated,
	protocol.EventMemberJoined, protocol.EventMemberLeft, protocol.EventPusherClientEvent}

// WebhookGroup is the consumer group of an app's webhooks on the events topic.
func WebhookGroup(app string) string { return "pusher-webhooks-" + app }

// WebhookSignature is X-Pusher-Signature: hex HMAC-SHA256 of the body with the app's secret.
func WebhookSignature(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// webhookFormat is handlers.WebhookFormat for one app: {time_ms, events:[…]}, signed.
type webhookFormat struct{ a *app }

// pusherWebhookEvent is one event of a Pusher webhook body.
type pusherWebhookEvent struct {
	Name     string `json:"name"`
	Channel  string `json:"channel"`
	UserID   string `json:"user_id,omitempty"`
	Event    string `json:"event,omitempty"`
	Data     string `json:"data,omitempty"`
	SocketID string `json:"socket_id,omitempty"`
}

// Encode implements handlers.WebhookFormat.
func (f webhookFormat) Encode(batch protocol.WebhookBatch, now time.Time, h http.Header) ([]byte, error) {
	out := struct {
		TimeMS int64                `json:"time_ms"`
		Events []pusherWebhookEvent `json:"events"`
	}{TimeMS: now.UnixMilli(), Events: make([]pusherWebhookEvent, 0, len(batch.Events))}
	for _, ev := range batch.Events {
		_, name, ok := PusherChannel(ev.Channel)
		if !ok {
			continue
		}
		e := pusherWebhookEvent{Channel: name}
		switch ev.Type {
		case protocol.EventChannelOccupied, protocol.EventChannelVacated:
			e.Name = ev.Type
		case protocol.EventMemberJoined:
			e.Name, e.UserID = "member_added", ev.User
		case protocol.EventMemberLeft:
			e.Name, e.UserID = "member_removed", ev.User
		case protocol.EventPusherClientEvent:
			e.Name, e.Event, e.SocketID, e.UserID = "client_event", ev.Name, ev.Session, ev.User
			var s string
			if json.Unmarshal(dataOf(ev.Data), &s) == nil {
				e.Data = s
			}
		default:
			continue
		}
		out.Events = append(out.Events, e)
	}
	body, err := json.Marshal(out)
	if err != nil {
		return nil, err
	}
	h.Set("Content-Type", "application/json")
	h.Set(HeaderWebhookKey, f.a.Key)
	h.Set(HeaderWebhookSignature, WebhookSignature(f.a.Secret, body))
	return body, nil
}

// WebhookApp is what an app's handlers.Webhooks need of the Pusher server: its URL, format and
// filter.
type WebhookApp struct {
	ID     string
	URL    string
	Format handlers.WebhookFormat
	Accept func(protocol.Event) bool
}

// WebhookApps are the apps that have a webhook_url.
func (s *Server) WebhookApps() []WebhookApp {
	if s == nil {
		return nil
	}
	var out []WebhookApp
	for _, a := range s.cfg.Apps {
		if a.WebhookURL == "" {
			continue
		}
		x := s.byID[a.ID]
		out = append(out, WebhookApp{ID: a.ID, URL: a.WebhookURL, Format: webhookFormat{x}, Accept: s.accept(x)})
	}
	return out
}

// accept is the filter of an app's webhooks: the events of its channels (not the
// #server-to-user- ones); member events on presence channels only, told per user as Pusher
// tells them: member_added when the joined connection is its user's only one in the channel when
// the event is read, member_removed when the user has none left.
func (s *Server) accept(a *app) func(protocol.Event) bool {
	return func(ev protocol.Event) bool {
		app, name, ok := PusherChannel(ev.Channel)
		if !ok || app != a.ID {
			return false
		}
		if _, user := serverToUser(name); user {
			return false
		}
		switch ev.Type {
		case protocol.EventMemberJoined, protocol.EventMemberLeft:
			if !isPresence(name) {
				return false
			}
			sessions, err := s.userSessions(ev.Channel, ev.User)
			if err != nil {
				return true // told rather than lost
			}
			if ev.Type == protocol.EventMemberLeft {
				return len(sessions) == 0
			}
			return len(sessions) == 1 && sessions[0] == ev.Session
		}
		return true
	}
}

// userSessions are the sessions of user in the cluster's presence of channel.
func (s *Server) userSessions(channel, user string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
	defer cancel()
	var out []string
	after := ""
	for {
		page, err := s.cfg.Presence.Members(ctx, channel, after, protocol.MaxPresencePage)
		if err != nil {
			return nil, err
		}
		for _, m := range page.Members {
			if m.User == user {
				out = append(out, m.Session)
			}
		}
		if page.Next == "" {
			return out, nil
		}
		after = page.Next
	}
}
