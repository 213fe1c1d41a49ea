package pusher

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"

	"golang.org/x/time/rate"

	"github.com/wsgateway/gateway/configs"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports/websocket"
)

// User authentication (pusher:signin) and termination (POST /apps/{id}/users/{user}/
// terminate_connections). A signed-in connection is its app's user: the node's user index
// finds it when a terminate command names the user (handlers.Control, on every node), and it
// may subscribe to its own #server-to-user-<id> channel, which the server library's sendToUser
// triggers.

const (
	evSignin        = "pusher:signin"
	evSigninSuccess = "pusher:signin_success"
	// prefixServerToUser is the channel of a signed-in user's server events (pusher-js subscribes
	// to it after signin_success, with no auth: the node checks that the user is the connection's).
	prefixServerToUser = "#server-to-user-"
	// ReasonTerminated is the reason of a connection closed by terminate_connections.
	ReasonTerminated = "terminated"
	// maxUserIDLen bounds a user id (the control command's user holds the app id too).
	maxUserIDLen = 128
)

// UserKey is the user of a control command that names Pusher user id of app: the Pusher users
// of an app are apart from other apps' and from native users (whose ids hold no "pusher:" prefix
// by this convention; docs/pusher.md).
func UserKey(app, id string) string { return NativePrefix + app + ":" + id }

// signinData is the data of pusher:signin.
type signinData struct {
	Auth     string `json:"auth"`
	UserData string `json:"user_data"`
}

// UserAuth is the auth of a signin, as the server library's authenticateUser computes it:
// key:HMAC-SHA256(secret, socket_id::user::user_data).
func UserAuth(key, secret, socketID, userData string) string {
	return key + ":" + sign(secret, socketID+"::user::"+userData)
}

// userIndex is the node's signed-in Pusher connections by UserKey, and the publish rate each
// user shares over them (limits.user_publish_rate). Safe for concurrent use.
type userIndex struct {
	limits configs.LimitsConfig
	mu     sync.Mutex
	users  map[string]*signedIn
}

type signedIn struct {
	conns   map[*websocket.Conn]struct{}
	publish *rate.Limiter // the user's client events on this node; nil: no limit
}

func newUserIndex(l configs.LimitsConfig) *userIndex {
	return &userIndex{limits: l, users: map[string]*signedIn{}}
}

// add records c as a connection of key, unless the node holds most of key's connections
// already (most 0: no limit).
func (u *userIndex) add(key string, c *websocket.Conn, most int) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	e := u.users[key]
	if most > 0 && e != nil && len(e.conns) >= most {
		return false
	}
	if e == nil {
		e = &signedIn{conns: map[*websocket.Conn]struct{}{}}
		if u.limits.UserPublishRate > 0 {
			e.publish = rate.NewLimiter(rate.Limit(u.limits.UserPublishRate), u.limits.UserPublishBurst)
		}
		u.users[key] = e
	}
	e.conns[c] = struct{}{}
	return true
}

func (u *userIndex) remove(key string, c *websocket.Conn) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if e := u.users[key]; e != nil {
		delete(e.conns, c)
		if len(e.conns) == 0 {
			delete(u.users, key)
		}
	}
}

func (u *userIndex) list(key string) []*websocket.Conn {
	u.mu.Lock()
	defer u.mu.Unlock()
	e := u.users[key]
	if e == nil {
		return nil
	}
	out := make([]*websocket.Conn, 0, len(e.conns))
	for c := range e.conns {
		out = append(out, c)
	}
	return out
}

// allowPublish takes one of key's client events from the rate its signed-in connections on the
// node share (limits.user_publish_rate); true for a user not signed in here, or without a limit.
func (u *userIndex) allowPublish(key string) bool {
	u.mu.Lock()
	e := u.users[key]
	u.mu.Unlock()
	return e == nil || allow(e.publish)
}

// DisconnectUser is handlers.UserDisconnecter: a terminate command (or any disconnect command
// naming a UserKey) closes the user's signed-in connections of this node with 4009, as Pusher
// closes them.
func (s *Server) DisconnectUser(user string, _ protocol.Disconnect) {
	for _, c := range s.users.list(user) {
		c.Disconnect(goodbye{CodeUnauthorized, "You got disconnected by the app.", ReasonTerminated})
	}
}

// signin answers pusher:signin: signin_success, or pusher:error 4009 and a close, as Pusher
// answers a wrong signature (the connection is not authorized).
func (s *Server) signin(c *websocket.Conn, st *conn, raw json.RawMessage) {
	var d signinData
	var str string
	if json.Unmarshal(raw, &str) == nil {
		raw = json.RawMessage(str)
	}
	refuse := func(msg string) { c.Disconnect(goodbye{CodeUnauthorized, msg, "pusher_signin"}) }
	if json.Unmarshal(raw, &d) != nil || d.Auth == "" || d.UserData == "" {
		refuse("pusher:signin needs data with auth and user_data")
		return
	}
	want := UserAuth(st.app.Key, st.app.Secret, c.ID, d.UserData)
	if subtle.ConstantTimeCompare([]byte(d.Auth), []byte(want)) != 1 {
		refuse("Invalid signature: expected the HMAC SHA256 hex digest of " + c.ID + "::user::<user_data>")
		return
	}
	var ud struct {
		ID json.RawMessage `json:"id"`
	}
	id, ok := "", json.Unmarshal([]byte(d.UserData), &ud) == nil
	if ok {
		id, ok = userIDString(ud.ID)
	}
	if !ok || !validUserID(id) {
		refuse("user_data must be a JSON object with an id of 1 to 128 of [A-Za-z0-9_-=@,.;]")
		return
	}
	key := UserKey(st.app.ID, id)
	st.mu.Lock()
	prev, gone := st.user, st.gone
	if prev == "" && !gone {
		st.user = id
	}
	st.mu.Unlock()
	switch {
	case gone:
		return
	case prev != "" && prev != id:
		refuse("the connection is signed in as another user already")
		return
	case prev == "":
		if !s.users.add(key, c, s.cfg.Limits.ConnectionsPerUser) {
			st.mu.Lock()
			st.user = ""
			st.mu.Unlock()
			c.Send(errorFrame(CodeOverCapacity, "the user has the most connections a node takes (limits.connections_per_user)"))
			return
		}
		st.mu.Lock()
		gone = st.gone
		st.mu.Unlock()
		if gone { // Close ran meanwhile, maybe before the user was recorded
			s.users.remove(key, c)
			return
		}
	}
	c.Send(encode(frame{Event: evSigninSuccess, Data: stringData(map[string]string{"user_data": d.UserData})}))
}

// validUserID reports whether id is a user id: 1 to 128 of [A-Za-z0-9_\-=@,.;].
func validUserID(id string) bool {
	return id != "" && len(id) <= maxUserIDLen && id[0] != '#' && validName(id)
}

// serverToUser reports whether name is a #server-to-user- channel, and its user id.
func serverToUser(name string) (string, bool) {
	return strings.CutPrefix(name, prefixServerToUser)
}

// TerminateConnections is POST /apps/{id}/users/{user}/terminate_connections: the user's
// signed-in connections on every node are closed (4009), through the node's control commands.
func (s *Server) TerminateConnections(w http.ResponseWriter, r *http.Request) {
	a, _, ok := s.authorized(w, r)
	if !ok {
		return
	}
	user := r.PathValue("user")
	if !validUserID(user) {
		apiError(w, http.StatusBadRequest, "Invalid user id")
		return
	}
	if s.cfg.Control == nil {
		apiError(w, http.StatusServiceUnavailable, "This node takes no control commands")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.Timeout)
	defer cancel()
	err := s.cfg.Control.Issue(ctx, &protocol.Control{Kind: protocol.ControlDisconnect, User: UserKey(a.ID, user),
		Code: ReasonTerminated, Reason: "terminated by the app"})
	if err != nil {
		var pe *protocol.Error
		status := http.StatusServiceUnavailable
		if errors.As(err, &pe) && pe.Code == protocol.CodeBadRequest {
			status = http.StatusBadRequest
		}
		apiError(w, status, "Connections not terminated: "+err.Error())
		return
	}
	writeJSON(w, struct{}{})
}
