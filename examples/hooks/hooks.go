package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/wsgateway/gateway/clients/go/service"
	"github.com/wsgateway/gateway/protocol"
)

// App is the application's side of the five hooks. Its fields are read only: safe for
// concurrent use once made.
type App struct {
	Session  time.Duration   // the lifetime of a connection the connect hook lets in, and of each refresh
	Trial    time.Duration   // how long a subscription to room:trial lasts
	Closed   map[string]bool // rooms nobody may subscribe to
	Banned   map[string]bool // users refused at connect and refresh
	BadWords *regexp.Regexp  // words the publish hook replaces with asterisks
}

// NewApp is the example's application: room:closed is closed, mallory is banned, "darn" and
// "heck" are moderated.
func NewApp(session, trial time.Duration) *App {
	return &App{Session: session, Trial: trial, Closed: map[string]bool{"room:closed": true},
		Banned: map[string]bool{"mallory": true}, BadWords: regexp.MustCompile(`(?i)\b(darn|heck)\b`)}
}

// Handlers are the App's hooks for service.OnHooks (the same answer whichever replica runs it).
func (a *App) Handlers() service.HookHandlers {
	return service.HookHandlers{Connect: a.Connect, Subscribe: a.Subscribe, Publish: a.Publish, Refresh: a.Refresh, RPC: a.RPC}
}

func deny(code, msg string) protocol.HookReply {
	return protocol.HookReply{Deny: &protocol.HookDeny{Code: code, Message: msg}}
}

func raw(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

var userName = regexp.MustCompile(`^[a-z0-9_-]{1,32}$`)

// Connect authenticates a connection without a token by its "user" cookie (a real application
// looks its session cookie up); a connection with a token keeps the token's user. It sets the
// user's info, a welcome, and the connection's expiry (extended by Refresh).
func (a *App) Connect(_ context.Context, req *protocol.HookRequest) (protocol.HookReply, error) {
	user := req.User
	if user == "" {
		cookies, _ := http.ParseCookie(req.Headers["Cookie"])
		for _, c := range cookies {
			if c.Name == "user" && userName.MatchString(c.Value) {
				user = c.Value
			}
		}
	}
	switch {
	case user == "":
		return deny("login_required", "log in first (a user cookie)"), nil
	case a.Banned[user]:
		return deny("banned", "this account is banned"), nil
	}
	return protocol.HookReply{User: user, Info: raw(map[string]string{"name": user}),
		Data: raw(map[string]string{"hello": user}), Expires: time.Now().Add(a.Session).Unix()}, nil
}

// Subscribe refuses the closed rooms, gives the member's info for presence and a topic in the
// subscribed frame, and ends subscriptions to room:trial after Trial.
func (a *App) Subscribe(_ context.Context, req *protocol.HookRequest) (protocol.HookReply, error) {
	if a.Closed[req.Channel] {
		return deny("room_closed", "this room is closed"), nil
	}
	reply := protocol.HookReply{Info: raw(map[string]string{"name": req.User}),
		Data: raw(map[string]string{"topic": "welcome to " + req.Channel})}
	if req.Channel == "room:trial" {
		reply.Expires = time.Now().Add(a.Trial).Unix()
	}
	return reply, nil
}

// Publish takes {"text": "..."} only, and publishes it with the bad words replaced (and
// "moderated": true) when it had any; other data is refused.
func (a *App) Publish(_ context.Context, req *protocol.HookRequest) (protocol.HookReply, error) {
	var msg struct {
		Text *string `json:"text"`
	}
	if json.Unmarshal(req.Data, &msg) != nil || msg.Text == nil {
		return deny("bad_message", `publish {"text": "..."}`), nil
	}
	text := a.BadWords.ReplaceAllStringFunc(*msg.Text, func(w string) string { return strings.Repeat("*", len(w)) })
	if text == *msg.Text {
		return protocol.HookReply{}, nil // published as sent
	}
	return protocol.HookReply{Data: raw(map[string]any{"text": text, "moderated": true})}, nil
}

// Refresh extends a connection by Session, but a banned user's.
func (a *App) Refresh(_ context.Context, req *protocol.HookRequest) (protocol.HookReply, error) {
	if a.Banned[req.User] {
		return deny("banned", "this account is banned"), nil
	}
	return protocol.HookReply{Expires: time.Now().Add(a.Session).Unix()}, nil
}

// RPC answers the methods time ({"now"}), add ({"a","b"} → {"sum"}) and whoami ({"user","info"}).
func (a *App) RPC(_ context.Context, req *protocol.HookRequest) (protocol.HookReply, error) {
	switch req.Method {
	case "time":
		return protocol.HookReply{Data: raw(map[string]string{"now": time.Now().UTC().Format(time.RFC3339)})}, nil
	case "add":
		var p struct{ A, B *float64 }
		if json.Unmarshal(req.Data, &p) != nil || p.A == nil || p.B == nil {
			return deny("bad_params", `add takes {"a": number, "b": number}`), nil
		}
		return protocol.HookReply{Data: raw(map[string]float64{"sum": *p.A + *p.B})}, nil
	case "whoami":
		return protocol.HookReply{Data: raw(map[string]any{"user": req.User, "info": req.Info})}, nil
	}
	return deny("unknown_method", "no method "+req.Method), nil
}

// HTTPHandler answers the same hooks over HTTP (hooks.<hook>.via http, url
// http://<addr>/hooks/<hook>): it checks the X-Gateway-Signature with secret, then answers the
// JSON request with the JSON reply.
func (a *App) HTTPHandler(secret string) http.Handler {
	h := a.Handlers()
	byName := map[string]service.HookHandler{protocol.HookConnect: h.Connect, protocol.HookSubscribe: h.Subscribe,
		protocol.HookPublish: h.Publish, protocol.HookRefresh: h.Refresh, protocol.HookRPC: h.RPC}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /hooks/{hook}", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if err := protocol.VerifyWebhook([]byte(secret), r.Header.Get(protocol.WebhookSignatureHeader), body, time.Now(), 5*time.Minute); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		var req protocol.HookRequest
		if err := json.Unmarshal(body, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fn := byName[r.PathValue("hook")]
		if fn == nil || req.Hook != r.PathValue("hook") {
			http.Error(w, fmt.Sprintf("no hook %q here", r.PathValue("hook")), http.StatusNotFound)
			return
		}
		reply, err := fn(r.Context(), &req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError) // the node retries, then fails closed or open
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(reply)
	})
	return mux
}
