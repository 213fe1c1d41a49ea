package pusher

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/protocol"
)

// maxBody bounds the body of an HTTP API request to a: a batch of the most events, each of
// the largest data escaped at worst (6 bytes a byte, \u00XX) and 32 KiB of names and channels
// (100 channels of at most 164 characters).
func maxBody(a *app) int64 {
	return int64(maxBatch) * (6*int64(a.MaxEventSize) + 32<<10)
}

// apiError answers as Pusher does: the status and a line of text.
func apiError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, msg+"\n")
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// authorized checks the request's signature, then reads its body (GET: none; POST: at most
// maxBody) and checks it against body_md5; it answers and returns nil, false when the call may
// not go on. Nothing of the body is read before the query's signature is checked.
func (s *Server) authorized(w http.ResponseWriter, r *http.Request) (*app, []byte, bool) {
	a := s.byID[r.PathValue("id")]
	if a == nil {
		apiError(w, http.StatusNotFound, "Unknown app id "+r.PathValue("id"))
		return nil, nil, false
	}
	q := r.URL.Query()
	if err := checkQuery(a, r.Method, r.URL.Path, q, s.cfg.Now()); err != nil {
		var re *requestError
		errors.As(err, &re)
		apiError(w, re.status, re.msg)
		return nil, nil, false
	}
	limit := maxBody(a)
	if r.Method == http.MethodGet {
		limit = 0
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooLarge *http.MaxBytesError
		switch {
		case errors.As(err, &tooLarge) && r.Method == http.MethodGet:
			apiError(w, http.StatusBadRequest, "A GET request has no body")
		case errors.As(err, &tooLarge):
			apiError(w, http.StatusRequestEntityTooLarge, "Request body too large (more than "+strconv.FormatInt(limit, 10)+" bytes)")
		default:
			apiError(w, http.StatusBadRequest, "Request body not read: "+err.Error())
		}
		return nil, nil, false
	}
	if err := checkBody(q, body); err != nil {
		var re *requestError
		errors.As(err, &re)
		apiError(w, re.status, re.msg)
		return nil, nil, false
	}
	return a, body, true
}

// event is a trigger of the HTTP API.
type event struct {
	Name     string   `json:"name"`
	Data     string   `json:"data"`
	Channel  string   `json:"channel"`
	Channels []string `json:"channels"`
	SocketID string   `json:"socket_id"`
	Info     string   `json:"info"`
}

// checked is an event that passed check: its channels' native names.
type checked struct {
	event
	natives []string
}

// check checks ev for app a; status is 200 when it may be published.
func check(a *app, ev event) (checked, int, string) {
	channels := ev.Channels
	if ev.Channel != "" {
		channels = append(channels, ev.Channel)
	}
	switch {
	case ev.Name == "":
		return checked{}, http.StatusBadRequest, "Missing event name"
	case len(ev.Name) > maxEventNameLen:
		return checked{}, http.StatusBadRequest, "Event name too long (more than 200 characters)"
	case len(channels) == 0:
		return checked{}, http.StatusBadRequest, "Missing channels"
	case len(channels) > maxChannelsPerTrigger:
		return checked{}, http.StatusBadRequest, "Too many channels (more than 100)"
	case len(ev.Data) > a.MaxEventSize:
		return checked{}, http.StatusRequestEntityTooLarge, "Payload too large (more than " + strconv.Itoa(a.MaxEventSize) + " bytes)"
	}
	natives := make([]string, len(channels))
	for i, ch := range channels {
		n, err := NativeChannel(a.ID, ch)
		if err != nil {
			return checked{}, http.StatusBadRequest, "Invalid channel name " + strconv.Quote(ch) + ": " + err.Error()
		}
		natives[i] = n
	}
	return checked{ev, natives}, http.StatusOK, ""
}

// publish publishes checked events into each of their channels, in order. Only the broker can
// fail it then (503): what it took before is published.
func (s *Server) publish(ctx context.Context, evs []checked) (int, string) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	for _, ev := range evs {
		payload := payloadOf(ev.Data)
		for _, native := range ev.natives {
			msg := message.NewMessage(watermill.NewUUID(), payload)
			md := msg.Metadata
			md.Set(protocol.MetaKind, protocol.KindAPI)
			md.Set(protocol.MetaTarget, protocol.TargetChannel)
			md.Set(protocol.MetaChannel, native)
			md.Set(protocol.MetaNode, s.cfg.NodeID)
			md.Set(protocol.MetaPusherEvent, ev.Name)
			if ev.SocketID != "" {
				md.Set(protocol.MetaExcept, ev.SocketID)
			}
			md.Set(protocol.MetaSentAt, strconv.FormatInt(time.Now().UnixNano(), 10))
			if err := s.cfg.Inbox.Submit(ctx, msg); err != nil {
				return http.StatusServiceUnavailable, "The event was not published: " + err.Error()
			}
		}
	}
	return http.StatusOK, ""
}

// Events is POST /apps/{id}/events.
func (s *Server) Events(w http.ResponseWriter, r *http.Request) {
	a, body, ok := s.authorized(w, r)
	if !ok {
		return
	}
	var ev event
	if err := json.Unmarshal(body, &ev); err != nil {
		apiError(w, http.StatusBadRequest, "Body is not a JSON event: "+err.Error())
		return
	}
	c, status, msg := check(a, ev)
	if status == http.StatusOK {
		status, msg = s.publish(r.Context(), []checked{c})
	}
	if status != http.StatusOK {
		apiError(w, status, msg)
		return
	}
	writeJSON(w, struct{}{})
}

// BatchEvents is POST /apps/{id}/batch_events: up to 10 events, each to one channel.
func (s *Server) BatchEvents(w http.ResponseWriter, r *http.Request) {
	a, body, ok := s.authorized(w, r)
	if !ok {
		return
	}
	var req struct {
		Batch []event `json:"batch"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		apiError(w, http.StatusBadRequest, "Body is not a JSON batch: "+err.Error())
		return
	}
	if len(req.Batch) > maxBatch {
		apiError(w, http.StatusBadRequest, "Batch too large (more than 10 events)")
		return
	}
	evs := make([]checked, len(req.Batch))
	for i, ev := range req.Batch { // every event is checked before any is published
		if len(ev.Channels) > 0 {
			apiError(w, http.StatusBadRequest, "Batch event "+strconv.Itoa(i)+": one channel per event")
			return
		}
		c, status, msg := check(a, ev)
		if status != http.StatusOK {
			apiError(w, status, "Batch event "+strconv.Itoa(i)+": "+msg)
			return
		}
		evs[i] = c
	}
	if status, msg := s.publish(r.Context(), evs); status != http.StatusOK {
		apiError(w, status, msg)
		return
	}
	results := make([]struct{}, len(req.Batch))
	writeJSON(w, map[string]any{"batch": results})
}

// info is the set of the info parameter's attributes.
func info(r *http.Request) map[string]bool {
	out := map[string]bool{}
	for _, a := range strings.Split(r.URL.Query().Get("info"), ",") {
		if a = strings.TrimSpace(a); a != "" {
			out[a] = true
		}
	}
	return out
}

// Channels is GET /apps/{id}/channels: the occupied channels, filter_by_prefix, info=user_count
// (presence channels only).
func (s *Server) Channels(w http.ResponseWriter, r *http.Request) {
	a, _, ok := s.authorized(w, r)
	if !ok {
		return
	}
	prefix := r.URL.Query().Get("filter_by_prefix")
	attrs := info(r)
	if attrs["user_count"] && !isPresence(prefix) {
		apiError(w, http.StatusBadRequest, "info=user_count needs filter_by_prefix=presence-")
		return
	}
	escaped := ""
	if prefix != "" {
		n, err := NativeChannel(a.ID, prefix)
		if err != nil {
			apiError(w, http.StatusBadRequest, "Invalid filter_by_prefix: "+err.Error())
			return
		}
		escaped = strings.TrimPrefix(n, AppPrefix(a.ID))
	}
	out := map[string]map[string]int{}
	after := ""
	for {
		cs, next, err := s.cfg.Presence.Channels(r.Context(), AppPrefix(a.ID)+escaped, after, protocol.MaxPresencePage)
		if err != nil {
			apiError(w, http.StatusServiceUnavailable, "Channels not available now: "+err.Error())
			return
		}
		for _, c := range cs {
			_, name, ok := PusherChannel(c.Channel)
			if !ok || c.Connections == 0 || strings.HasPrefix(name, prefixServerToUser) {
				continue
			}
			attrsOut := map[string]int{}
			if attrs["user_count"] && isPresence(name) {
				attrsOut["user_count"] = c.Users
			}
			out[name] = attrsOut
		}
		if next == "" {
			break
		}
		after = next
	}
	writeJSON(w, map[string]any{"channels": out})
}

// Channel is GET /apps/{id}/channels/{name}: occupied, and with info, user_count (presence
// channels) and subscription_count.
func (s *Server) Channel(w http.ResponseWriter, r *http.Request) {
	a, _, ok := s.authorized(w, r)
	if !ok {
		return
	}
	name := r.PathValue("name")
	native, err := NativeChannel(a.ID, name)
	if err != nil {
		apiError(w, http.StatusBadRequest, "Invalid channel name: "+err.Error())
		return
	}
	attrs := info(r)
	if attrs["user_count"] && !isPresence(name) {
		apiError(w, http.StatusBadRequest, "info=user_count is only for presence channels")
		return
	}
	st, err := s.cfg.Presence.Stats(r.Context(), native)
	if err != nil {
		apiError(w, http.StatusServiceUnavailable, "Channel not available now: "+err.Error())
		return
	}
	out := map[string]any{"occupied": st.Connections > 0}
	if attrs["user_count"] {
		out["user_count"] = st.Users
	}
	if attrs["subscription_count"] {
		out["subscription_count"] = st.Connections
	}
	writeJSON(w, out)
}

// Users is GET /apps/{id}/channels/{name}/users: a presence channel's users.
func (s *Server) Users(w http.ResponseWriter, r *http.Request) {
	a, _, ok := s.authorized(w, r)
	if !ok {
		return
	}
	name := r.PathValue("name")
	if !isPresence(name) {
		apiError(w, http.StatusBadRequest, "Users are only listed for presence channels")
		return
	}
	native, err := NativeChannel(a.ID, name)
	if err != nil {
		apiError(w, http.StatusBadRequest, "Invalid channel name: "+err.Error())
		return
	}
	type user struct {
		ID string `json:"id"`
	}
	users := []user{}
	seen := map[string]bool{}
	after := ""
	for {
		page, err := s.cfg.Presence.Members(r.Context(), native, after, protocol.MaxPresencePage)
		if err != nil || page.Counts != nil {
			apiError(w, http.StatusServiceUnavailable, "Users not available now")
			return
		}
		for _, m := range page.Members {
			if !seen[m.User] {
				seen[m.User] = true
				users = append(users, user{m.User})
			}
		}
		if page.Next == "" {
			break
		}
		after = page.Next
	}
	writeJSON(w, map[string]any{"users": users})
}
