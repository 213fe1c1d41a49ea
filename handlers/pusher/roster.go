package pusher

import (
	"sync"

	"github.com/wsgateway/gateway/protocol"
)

// roster is the node's view of the users of the presence channels its Pusher connections are
// on: which sessions each user has there, so that member_added is told when a user's first
// connection joins and member_removed when its last leaves (Pusher counts a user once however
// many connections it has). A channel's entry lives while a Pusher connection of the node is
// on it; the first one seeds it from the cluster's member list, and the channel's join and leave
// messages (Encode, once per message and node) keep it up to date. Safe for concurrent use.
type roster struct {
	mu    sync.Mutex
	chans map[string]*chanUsers
}

type chanUsers struct {
	refs   int
	seeded bool
	users  map[string]map[string]struct{} // user -> sessions
}

func newRoster() *roster { return &roster{chans: map[string]*chanUsers{}} }

// acquire takes a reference to channel's entry, making it.
func (r *roster) acquire(channel string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.chans[channel]
	if e == nil {
		e = &chanUsers{users: map[string]map[string]struct{}{}}
		r.chans[channel] = e
	}
	e.refs++
}

// release gives a reference back; the entry goes with the last.
func (r *roster) release(channel string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.chans[channel]; e != nil {
		if e.refs--; e.refs <= 0 {
			delete(r.chans, channel)
		}
	}
}

// seed adds the members listed by the cluster, once per entry (the first connection's list):
// a later list would take in a join before its message, and its member_added would be lost for
// the connections already on the channel.
func (r *roster) seed(channel string, members []protocol.Member) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.chans[channel]
	if e == nil || e.seeded {
		return
	}
	e.seeded = true
	for _, m := range members {
		e.add(m)
	}
}

func (e *chanUsers) add(m protocol.Member) bool {
	s := e.users[m.User]
	if s == nil {
		s = map[string]struct{}{}
		e.users[m.User] = s
	}
	s[m.Session] = struct{}{}
	return len(s) == 1
}

// join records m and reports whether it is its user's first connection in channel.
func (r *roster) join(channel string, m protocol.Member) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.chans[channel]
	if e == nil {
		return false
	}
	s := e.users[m.User]
	if _, ok := s[m.Session]; ok {
		return false
	}
	return e.add(m)
}

// leave removes m and reports whether its user has no connection left in channel.
func (r *roster) leave(channel string, m protocol.Member) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.chans[channel]
	if e == nil {
		return false
	}
	s, ok := e.users[m.User]
	if !ok {
		return false
	}
	if _, ok := s[m.Session]; !ok {
		return false
	}
	delete(s, m.Session)
	if len(s) > 0 {
		return false
	}
	delete(e.users, m.User)
	return true
}
