package pusher

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports/websocket"
)

// inFrame is a frame a Pusher client sends.
type inFrame struct {
	Event   string          `json:"event"`
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
}

// subscribeData is the data of pusher:subscribe and pusher:unsubscribe.
type subscribeData struct {
	Channel     string `json:"channel"`
	Auth        string `json:"auth"`
	ChannelData string `json:"channel_data"`
}

// channelData is a presence member as the app's auth endpoint signed it.
type channelData struct {
	UserID   json.RawMessage `json:"user_id"`
	UserInfo json.RawMessage `json:"user_info"`
}

// Frame handles one client frame, on the connection's read goroutine (in order).
func (s *Server) Frame(c *websocket.Conn, data []byte) {
	st := stateOf(c)
	if st == nil || st.app == nil {
		return
	}
	var f inFrame
	if err := json.Unmarshal(data, &f); err != nil || f.Event == "" {
		c.Send(errorFrame(0, "a frame is a JSON object with an event"))
		return
	}
	switch {
	case f.Event == evPing:
		c.Send(pongFrame)
	case f.Event == evPong:
	case f.Event == evSubscribe:
		if d, ok := readData(f.Data); ok {
			s.subscribe(c, st, d)
		} else {
			c.Send(errorFrame(0, "pusher:subscribe needs data with a channel"))
		}
	case f.Event == evSignin:
		s.signin(c, st, f.Data)
	case f.Event == evUnsubscribe:
		if d, ok := readData(f.Data); ok {
			s.unsubscribe(c, st, d.Channel)
		}
	case strings.HasPrefix(f.Event, clientEventPrefix):
		s.clientEvent(c, st, f)
	}
}

// readData reads a subscribe's data: an object, or (some clients) a string holding one.
func readData(raw json.RawMessage) (subscribeData, bool) {
	var d subscribeData
	var s string
	if json.Unmarshal(raw, &s) == nil {
		raw = json.RawMessage(s)
	}
	if json.Unmarshal(raw, &d) != nil || d.Channel == "" {
		return d, false
	}
	return d, true
}

// subscribe answers pusher:subscribe: subscription_succeeded, or subscription_error.
func (s *Server) subscribe(c *websocket.Conn, st *conn, d subscribeData) {
	name := d.Channel
	fail := func(typ, msg string, status int) { c.Send(subscriptionErrorFrame(name, typ, msg, status)) }
	if !allow(st.limits.subscribe) {
		fail("LimitReached", "too many subscribes; slow down (limits.subscribe_rate)", 4301)
		s.rateLimited(c, st, evSubscribe)
		return
	}
	native, err := NativeChannel(st.app.ID, name)
	if err != nil {
		fail("InvalidChannel", err.Error(), 400)
		return
	}
	presence := isPresence(name)
	member := protocol.Member{Session: c.ID, Node: s.cfg.NodeID}
	if id, ok := serverToUser(name); ok {
		st.mu.Lock()
		user := st.user
		st.mu.Unlock()
		if user == "" || user != id {
			fail("AuthError", "a #server-to-user- channel is its signed-in user's only (pusher:signin first)", 401)
			return
		}
	} else if isPrivate(name) || presence {
		signed := ""
		if presence {
			signed = d.ChannelData
		}
		if d.Auth == "" || !checkChannelAuth(st.app, d.Auth, c.ID, name, signed) {
			what := c.ID + ":" + name
			if presence {
				what += ":<channel_data>"
			}
			fail("AuthError", "Invalid signature: expected the HMAC SHA256 hex digest of "+what, 401)
			return
		}
	}
	if presence {
		var cd channelData
		uid, ok := "", json.Unmarshal([]byte(d.ChannelData), &cd) == nil
		if ok {
			uid, ok = userIDString(cd.UserID)
		}
		if !ok {
			fail("AuthError", "channel_data must be a JSON object with a user_id", 400)
			return
		}
		member.User, member.Info = uid, cd.UserInfo
	}
	st.mu.Lock()
	_, dup := st.subs[name]
	st.mu.Unlock()
	if dup {
		return // subscribed already: pusher-js never asks twice
	}
	if most := s.cfg.Limits.SubscriptionsPerConnection; most > 0 && c.Subscriptions() >= most {
		fail("LimitReached", "a connection may hold at most "+strconv.Itoa(most)+" subscriptions (limits.subscriptions_per_connection)", 4100)
		return
	}
	sub := &subscription{native: native, userID: member.User, member: member}
	if presence {
		s.roster.acquire(native)
		sub.roster = true
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
	defer cancel()
	if err := s.cfg.Hub.Join(ctx, c, native); err != nil {
		if sub.roster {
			s.roster.release(native)
		}
		fail("ServerError", "the node could not subscribe the channel now", 503)
		return
	}
	announce := s.cfg.Presence.Join(native, member) // nil when the record failed (logged)
	var pd *presenceData
	if presence {
		var over bool
		pd, over, err = s.presenceList(ctx, native, member, st.app.MaxPresenceMembers)
		if err != nil || over {
			s.cfg.Hub.Leave(c, native)
			s.withdraw(sub) // never announced: no leave either
			if over {
				fail("LimitReached", "the presence channel has the most members it may ("+strconv.Itoa(st.app.MaxPresenceMembers)+")", 4100)
			} else {
				fail("ServerError", "the member list is not available now", 503)
			}
			return
		}
	}
	st.mu.Lock()
	gone := st.gone
	if !gone {
		st.subs[name] = sub
	}
	st.mu.Unlock()
	if gone {
		s.cfg.Hub.Leave(c, native)
		s.withdraw(sub)
		return
	}
	c.Activate(native, protocol.Position{}, subscribedFrame(name, pd))
	if announce != nil {
		announce()
	}
}

// presenceList is the channel's members as subscription_succeeded tells them, one entry per
// user, and seeds the node's roster; over when the channel has more users than max and the
// member's user is not among the first max.
func (s *Server) presenceList(ctx context.Context, native string, me protocol.Member, max int) (*presenceData, bool, error) {
	pd := &presenceData{IDs: []string{}, Hash: map[string]json.RawMessage{}}
	var all []protocol.Member
	after := ""
	for {
		page, err := s.cfg.Presence.Members(ctx, native, after, protocol.MaxPresencePage)
		if err != nil {
			return nil, false, err
		}
		if page.Counts != nil { // beyond presence.max_members: far beyond a Pusher channel's
			return nil, true, nil
		}
		for _, m := range page.Members {
			all = append(all, m)
			if _, ok := pd.Hash[m.User]; ok {
				continue
			}
			info := m.Info
			if len(info) == 0 {
				info = json.RawMessage("null")
			}
			pd.Hash[m.User] = info
			pd.IDs = append(pd.IDs, m.User)
		}
		if page.Next == "" {
			break
		}
		after = page.Next
	}
	if _, ok := pd.Hash[me.User]; !ok { // the record failed: the member still sees itself
		pd.Hash[me.User] = me.Info
		pd.IDs = append(pd.IDs, me.User)
		all = append(all, me)
	}
	pd.Count = len(pd.IDs)
	if pd.Count > max {
		alone := 0
		for _, m := range all {
			if m.User == me.User {
				alone++
			}
		}
		if alone == 1 { // a new user: refused; a user already there may open another connection
			return nil, true, nil
		}
	}
	s.roster.seed(native, all)
	return pd, false, nil
}

// unsubscribe answers pusher:unsubscribe (no reply, as Pusher).
func (s *Server) unsubscribe(c *websocket.Conn, st *conn, name string) {
	st.mu.Lock()
	sub := st.subs[name]
	delete(st.subs, name)
	st.mu.Unlock()
	if sub == nil {
		return
	}
	s.cfg.Hub.Leave(c, sub.native)
	s.left(sub)
}

// clientEvent publishes a client-* event into its channel, for every subscriber but the sender:
// on private and presence channels the connection is on, when the app allows client events,
// at most client_event_rate a second.
func (s *Server) clientEvent(c *websocket.Conn, st *conn, f inFrame) {
	if !st.app.clientEvents {
		c.Send(errorFrame(0, "To send client events, you must enable this feature for the app (client_events)"))
		return
	}
	if !isPrivate(f.Channel) && !isPresence(f.Channel) {
		c.Send(errorFrame(0, "Client event rejected - only supported on private and presence channels"))
		return
	}
	if strings.HasPrefix(f.Channel, prefixEncrypted) {
		c.Send(errorFrame(0, "Client event rejected - not supported on private-encrypted channels"))
		return
	}
	st.mu.Lock()
	sub := st.subs[f.Channel]
	st.mu.Unlock()
	if sub == nil {
		c.Send(errorFrame(0, "Client event rejected - the connection is not subscribed to "+f.Channel))
		return
	}
	if len(f.Event) > maxEventNameLen {
		c.Send(errorFrame(0, "Client event rejected - the event name is over 200 characters"))
		return
	}
	if !st.limiter.allow() || !allow(st.limits.publish) {
		c.Send(errorFrame(CodeClientEventLimit, "Client event rejected - over the rate limit of "+
			strconv.Itoa(st.app.ClientEventRate)+" a second"))
		s.rateLimited(c, st, "client event")
		return
	}
	st.mu.Lock()
	user := st.user
	st.mu.Unlock()
	if user != "" && !s.users.allowPublish(UserKey(st.app.ID, user)) {
		c.Send(errorFrame(CodeClientEventLimit, "Client event rejected - over the user's rate limit (limits.user_publish_rate)"))
		s.rateLimited(c, st, "client event of the user")
		return
	}
	payload := payloadOfValue(f.Data)
	if len(payload) > st.app.MaxEventSize {
		c.Send(errorFrame(0, "Client event rejected - the data is over "+strconv.Itoa(st.app.MaxEventSize)+" bytes"))
		return
	}
	msg := message.NewMessage(watermill.NewUUID(), payload)
	md := msg.Metadata
	md.Set(protocol.MetaKind, protocol.KindPublish)
	md.Set(protocol.MetaTarget, protocol.TargetChannel)
	md.Set(protocol.MetaChannel, sub.native)
	md.Set(protocol.MetaUser, sub.userID)
	md.Set(protocol.MetaSession, c.ID)
	md.Set(protocol.MetaNode, s.cfg.NodeID)
	md.Set(protocol.MetaPusherEvent, f.Event)
	md.Set(protocol.MetaExcept, c.ID)
	md.Set(protocol.MetaSentAt, strconv.FormatInt(time.Now().UnixNano(), 10))
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
	defer cancel()
	if err := s.cfg.Inbox.Submit(ctx, msg); err != nil {
		c.Send(errorFrame(0, "Client event not published: "+err.Error()))
		return
	}
	if st.app.WebhookURL != "" { // for the client_event webhook
		s.cfg.Events.Emit(protocol.Event{Type: protocol.EventPusherClientEvent, Channel: sub.native, Session: c.ID,
			User: sub.userID, Name: f.Event, Data: payload})
	}
}
