package handlers

import (
	"sync"

	"golang.org/x/time/rate"

	"github.com/wsgateway/gateway/configs"
	"github.com/wsgateway/gateway/transports/websocket"
)

// users counts the connections of each user on this node (for limits.connections_per_user) and
// holds the rate limiter they share (limits.user_publish_rate).
type users struct {
	limits configs.LimitsConfig
	mu     sync.Mutex
	byID   map[string]*userState
	total  int
}

type userState struct {
	id      string
	conns   int
	limiter *rate.Limiter
	open    map[*websocket.Conn]*state // the user's open connections (users.mu), for control commands
}

func newUsers(l configs.LimitsConfig) *users {
	return &users{limits: l, byID: map[string]*userState{}}
}

// Limit reasons of reserve.
const (
	limitNode = "node"
	limitUser = "user"
)

// reserve counts one more connection of user, unless a limit is reached (it then returns which).
func (u *users) reserve(user string) (*userState, string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.limits.ConnectionsPerNode > 0 && u.total >= u.limits.ConnectionsPerNode {
		return nil, limitNode
	}
	us := u.byID[user]
	if us == nil {
		us = &userState{id: user}
		if u.limits.UserPublishRate > 0 && user != "" {
			us.limiter = rate.NewLimiter(rate.Limit(u.limits.UserPublishRate), u.limits.UserPublishBurst)
		}
		u.byID[user] = us
	}
	if u.limits.ConnectionsPerUser > 0 && user != "" && us.conns >= u.limits.ConnectionsPerUser {
		if us.conns == 0 {
			delete(u.byID, user)
		}
		return nil, limitUser
	}
	us.conns++
	u.total++
	return us, ""
}

// move counts the connection reserved for from as one of user's instead, unless user's limit is
// reached (it then returns limitUser and keeps from's reservation). The node's count is unchanged.
func (u *users) move(from *userState, user string) (*userState, string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if from.id == user {
		return from, ""
	}
	us := u.byID[user]
	if us == nil {
		us = &userState{id: user}
		if u.limits.UserPublishRate > 0 && user != "" {
			us.limiter = rate.NewLimiter(rate.Limit(u.limits.UserPublishRate), u.limits.UserPublishBurst)
		}
	}
	if u.limits.ConnectionsPerUser > 0 && user != "" && us.conns >= u.limits.ConnectionsPerUser {
		return nil, limitUser
	}
	u.byID[user] = us
	us.conns++
	from.conns--
	if from.conns == 0 {
		delete(u.byID, from.id)
	}
	return us, ""
}

// release gives back what reserve counted. Safe with nil.
func (u *users) release(us *userState) {
	if us == nil {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	us.conns--
	u.total--
	if us.conns == 0 {
		delete(u.byID, us.id)
	}
}

// open records c, an open connection of us, for control commands (conns, all).
func (u *users) open(us *userState, c *websocket.Conn, st *state) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if us.open == nil {
		us.open = map[*websocket.Conn]*state{}
	}
	us.open[c] = st
}

// close forgets what open recorded. Safe with nil.
func (u *users) close(us *userState, c *websocket.Conn) {
	if us == nil {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(us.open, c)
}

// connState is an open connection and its state.
type connState struct {
	c  *websocket.Conn
	st *state
}

// conns returns the open connections of user on this node.
func (u *users) conns(user string) []connState {
	u.mu.Lock()
	defer u.mu.Unlock()
	us := u.byID[user]
	if us == nil {
		return nil
	}
	out := make([]connState, 0, len(us.open))
	for c, st := range us.open {
		out = append(out, connState{c, st})
	}
	return out
}

// all returns every open connection of the node.
func (u *users) all() []connState {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := make([]connState, 0, u.total)
	for _, us := range u.byID {
		for c, st := range us.open {
			out = append(out, connState{c, st})
		}
	}
	return out
}
