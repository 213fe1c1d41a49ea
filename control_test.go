package gateway_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/wsgateway/gateway"
	"github.com/wsgateway/gateway/clients/go/service"
	"github.com/wsgateway/gateway/internal/auth"
	"github.com/wsgateway/gateway/internal/nodetest"
	"github.com/wsgateway/gateway/internal/wstest"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
)

// controlCluster is nodes on one broker namespace; add starts one more (a node started later).
type controlCluster struct {
	nodes  []*node
	add    func() *node
	stored bool // the broker keeps control state (transports.ControlStore)
}

func newControlCluster(t *testing.T, cb nodetest.Broker, n int) *controlCluster {
	t.Helper()
	cl := cb.Setup(t)
	newBroker, prefix := cl.New, cl.Prefix(t) // the control hash or bucket goes too, after the nodes closed
	cc := &controlCluster{}
	cc.add = func() *node {
		t.Helper()
		b := newBroker(t, prefix)
		_, cc.stored = b.(transports.ControlStore)
		cfg := testConfig(t, "GATEWAY_NODE_ID=n"+strconv.Itoa(len(cc.nodes)+1))
		nd := startNode(t, cfg, gateway.WithBroker(b))
		wstest.WaitFor(t, func() error {
			if s := readyStatus(nd.URL); s != 200 {
				return fmt.Errorf("node %s: /readyz %d", nd.URL, s)
			}
			return nil
		})
		cc.nodes = append(cc.nodes, nd)
		return nd
	}
	for range n {
		cc.add()
	}
	return cc
}

// controlAPI posts body to the control endpoint path of base and returns the status and answer.
func controlAPI(t testing.TB, base, path string, body any) (int, map[string]any) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", base+path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func mustControl(t testing.TB, base, path string, body any) string {
	t.Helper()
	status, out := controlAPI(t, base, path, body)
	if status != 200 {
		t.Fatalf("%s %v: status %d %v", path, body, status, out)
	}
	id, _ := out["id"].(string)
	if id == "" {
		t.Fatalf("%s answered no id: %v", path, out)
	}
	return id
}

// expectDisconnect reads frames until the disconnect frame, checks it, and the close code.
func expectDisconnect(t *testing.T, c *wstest.Client, code string, reconnect bool, closeCode int) {
	t.Helper()
	f := c.Expect("disconnect")
	if f.Str("code") != code || f.Bool("reconnect") != reconnect {
		t.Fatalf("disconnect frame %v, want code %s reconnect %v", f, code, reconnect)
	}
	if ce := c.Closed(); ce.Code != closeCode || ce.Text != code {
		t.Fatalf("closed with %d %q, want %d %q", ce.Code, ce.Text, closeCode, code)
	}
}

// expectServerSubscribed reads the subscribed frame of a server-side subscribe (no id).
func expectServerSubscribed(t *testing.T, c *wstest.Client, channel string) {
	t.Helper()
	f := c.Expect("subscribed")
	if f.Str("channel") != channel || f.Str("id") != "" {
		t.Fatalf("subscribed frame %v, want channel %s without id", f, channel)
	}
}

func TestControl(t *testing.T) {
	for _, cb := range clusterBrokers {
		t.Run(cb.Name, func(t *testing.T) {
			t.Parallel() // the brokers are independent: each its own prefix (kafka: its own kfake)
			t.Run("Disconnect", func(t *testing.T) { testControlDisconnect(t, cb) })
			t.Run("Subscribe", func(t *testing.T) { testControlSubscribe(t, cb) })
			t.Run("Revoke", func(t *testing.T) { testControlRevoke(t, cb) })
		})
	}
}

// A user with sessions on two nodes is disconnected by one call on the third; a session alone
// by a call on another node; others stay.
func testControlDisconnect(t *testing.T, cb nodetest.Broker) {
	nodes := newControlCluster(t, cb, 3).nodes
	a1, _ := wstest.Dial(t, nodes[0].URL, allowAll(t, "alice"))
	a2, _ := wstest.Dial(t, nodes[1].URL, allowAll(t, "alice"))
	b1, _ := wstest.Dial(t, nodes[1].URL, allowAll(t, "bob"))
	b2, bw := wstest.Dial(t, nodes[0].URL, allowAll(t, "bob"))
	mustControl(t, nodes[2].URL, "/api/disconnect", map[string]any{"user": "alice", "code": "kicked", "reason": "bye", "reconnect": false})
	expectDisconnect(t, a1, "kicked", false, protocol.CloseNormal)
	expectDisconnect(t, a2, "kicked", false, protocol.CloseNormal)

	mustControl(t, nodes[1].URL, "/api/disconnect", map[string]any{"session": bw.Str("session"), "code": protocol.DisconnectCodeShutdown, "reconnect": true})
	expectDisconnect(t, b2, protocol.DisconnectCodeShutdown, true, protocol.CloseGoingAway)
	b1.Send(`{"type":"ping","id":"still"}`) // bob's other session is untouched
	if f := b1.Next(); f.Str("type") != "pong" {
		t.Fatalf("bob's other session got %v", f)
	}
	if status, out := controlAPI(t, nodes[0].URL, "/api/disconnect", map[string]any{"user": "alice", "session": "x"}); status != 400 || errorCode(out) != "bad_request" {
		t.Fatalf("user and session: %d %v", status, out)
	}
}

// A server-side subscribe reaches both sessions of a user on two nodes, then messages of the
// channel reach both; a session that connects later is subscribed too; an unsubscribe ends it.
func testControlSubscribe(t *testing.T, cb nodetest.Broker) {
	cc := newControlCluster(t, cb, 3)
	nodes := cc.nodes
	a1, _ := wstest.Dial(t, nodes[0].URL, allowAll(t, "alice"))
	a2, _ := wstest.Dial(t, nodes[1].URL, allowAll(t, "alice"))
	bob, _ := wstest.Dial(t, nodes[1].URL, allowAll(t, "bob"))
	body := map[string]any{"user": "alice", "channel": "room:ctl"}
	if !cc.stored {
		status, out := controlAPI(t, nodes[2].URL, "/api/subscribe", body)
		if status != 503 || errorCode(out) != "unavailable" {
			t.Fatalf("subscribe on a broker without control state: %d %v", status, out)
		}
		t.Skipf("the %s broker keeps no control state: server-side subscriptions are refused", cb.Name)
	}
	mustControl(t, nodes[2].URL, "/api/subscribe", body)
	expectServerSubscribed(t, a1, "room:ctl")
	expectServerSubscribed(t, a2, "room:ctl")
	mustAPIPublish(t, nodes[2].URL, map[string]any{"channel": "room:ctl", "data": "for-subscribers"})
	expectOnly(t, a1, `"for-subscribers"`)
	expectOnly(t, a2, `"for-subscribers"`)
	bob.Send(`{"type":"ping","id":"none"}`) // bob was not subscribed
	if f := bob.Next(); f.Str("type") != "pong" {
		t.Fatalf("bob got %v", f)
	}

	a3, _ := wstest.Dial(t, nodes[2].URL, allowAll(t, "alice")) // connects while it stands
	expectServerSubscribed(t, a3, "room:ctl")

	mustControl(t, nodes[0].URL, "/api/unsubscribe", body)
	for _, c := range []*wstest.Client{a1, a2, a3} {
		if f := c.Expect("unsubscribed"); f.Str("channel") != "room:ctl" {
			t.Fatalf("unsubscribed %v", f)
		}
	}
	a4, _ := wstest.Dial(t, nodes[1].URL, allowAll(t, "alice")) // after the unsubscribe: nothing
	mustAPIPublish(t, nodes[2].URL, map[string]any{"channel": "room:ctl", "data": "after"})
	for _, c := range []*wstest.Client{a1, a2, a3, a4} {
		c.Send(`{"type":"ping","id":"after"}`)
		if f := c.Next(); f.Str("type") != "pong" {
			t.Fatalf("after the unsubscribe got %v", f)
		}
	}
}

// On 3 nodes, a revocation disconnects the user's open connections at once, is enforced at
// upgrade by a node started after it, and spares tokens issued after its before; a jti's likewise.
func testControlRevoke(t *testing.T, cb nodetest.Broker) {
	cc := newControlCluster(t, cb, 3)
	nodes := cc.nodes
	open, _ := wstest.Dial(t, nodes[0].URL, allowAll(t, "alice"))
	open2, _ := wstest.Dial(t, nodes[2].URL, allowAll(t, "alice"))
	bob, _ := wstest.Dial(t, nodes[0].URL, allowAll(t, "bob"))
	before := time.Now().Add(-time.Minute)
	revoke := map[string]any{"user": "alice", "before": before.Format(time.RFC3339), "until": time.Now().Add(time.Hour).Format(time.RFC3339)}
	if !cc.stored {
		status, out := controlAPI(t, nodes[1].URL, "/api/revoke", revoke)
		if status != 503 || errorCode(out) != "unavailable" {
			t.Fatalf("revoke on a broker without control state: %d %v", status, out)
		}
		t.Skipf("the %s broker keeps no control state: revocations are refused", cb.Name)
	}
	mustControl(t, nodes[1].URL, "/api/revoke", revoke)
	expectDisconnect(t, open, protocol.DisconnectCodeRevoked, false, protocol.CloseRevoked)
	expectDisconnect(t, open2, protocol.DisconnectCodeRevoked, false, protocol.CloseRevoked)
	mustControl(t, nodes[1].URL, "/api/revoke", map[string]any{"jti": "stolen-1", "until": time.Now().Add(time.Hour).Format(time.RFC3339)})

	late := cc.add() // started after both revocations
	for _, tok := range []string{
		allowAll(t, "alice"), // no iat: counts as issued before
		signed(t, "alice", auth.IssuedAt(before.Add(-time.Minute))),
		signed(t, "carol", auth.WithJTI("stolen-1")),
	} {
		_, resp, err := wstest.TryDial(t, late.URL, tok, nil)
		if err == nil || resp == nil || resp.StatusCode != 401 {
			t.Fatalf("a revoked token on the later node: err %v resp %v", err, resp)
		}
		var body struct{ Error map[string]string }
		_ = json.NewDecoder(resp.Body).Decode(&body)
		if body.Error["code"] != "unauthorized" || body.Error["message"] != "token revoked" {
			t.Fatalf("refusal %v", body)
		}
	}
	wstest.Dial(t, late.URL, signed(t, "alice", auth.IssuedAt(time.Now())))     // issued after before
	wstest.Dial(t, late.URL, signed(t, "carol", auth.WithJTI("another-token"))) // another jti
	bob.Send(`{"type":"ping","id":"bob"}`)                                      // bob untouched
	if f := bob.Next(); f.Str("type") != "pong" {
		t.Fatalf("bob got %v", f)
	}
}

// signed is an allow-all token of user with the claims of opts.
func signed(t testing.TB, user string, opts ...auth.SignOption) string {
	t.Helper()
	tok, err := auth.SignHS256([]byte(testSecret), user, time.Hour, []string{"*"}, []string{"*"}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// errorCode is the code of an API error answer {"error":{"code","message"}}.
func errorCode(out map[string]any) string {
	e, _ := out["error"].(map[string]any)
	code, _ := e["code"].(string)
	return code
}

// The control store of every broker that has one: put, replace, delete, list, seen by another
// node of the prefix and not by another prefix; keys of any bytes.
func TestControlStore(t *testing.T) {
	for _, cb := range clusterBrokers {
		t.Run(cb.Name, func(t *testing.T) {
			cluster := cb.Setup(t)
			prefix := cluster.Prefix(t)
			b := cluster.New(t, prefix)
			store, ok := b.(transports.ControlStore)
			if !ok {
				t.Skipf("the %s broker keeps no control state", cb.Name)
			}
			other := cluster.New(t, prefix).(transports.ControlStore)
			elsewhere := cluster.New(t, prefix+"x").(transports.ControlStore)
			ctx := t.Context()
			odd := "subscribe/ü ser/room:1.a-b_c"
			for k, v := range map[string]string{"revoke/user/alice": "1", odd: "2", "gone": "3"} {
				if err := store.PutControl(ctx, k, []byte(v)); err != nil {
					t.Fatal(err)
				}
			}
			if err := store.PutControl(ctx, "revoke/user/alice", []byte("1b")); err != nil { // replaces
				t.Fatal(err)
			}
			if err := other.DeleteControl(ctx, "gone"); err != nil {
				t.Fatal(err)
			}
			if err := other.DeleteControl(ctx, "never-there"); err != nil {
				t.Fatalf("deleting a missing key: %v", err)
			}
			want := map[string]string{"revoke/user/alice": "1b", odd: "2"}
			for name, s := range map[string]transports.ControlStore{"the node": store, "another node": other} {
				got, err := s.ListControl(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != len(want) {
					t.Fatalf("%s lists %q, want %q", name, got, want)
				}
				for k, v := range want {
					if string(got[k]) != v {
						t.Fatalf("%s lists %q, want %q", name, got, want)
					}
				}
			}
			if got, err := elsewhere.ListControl(ctx); err != nil || len(got) != 0 {
				t.Fatalf("another prefix lists %q, %v", got, err)
			}
		})
	}
}

// A command applies once per connection: the same id again changes nothing (a session that
// unsubscribed itself is not subscribed again), a new id applies.
func TestControlOncePerConnection(t *testing.T) {
	cc := newControlCluster(t, clusterBrokers[0], 2) // memory
	a, _ := wstest.Dial(t, cc.nodes[0].URL, allowAll(t, "alice"))
	body := map[string]any{"id": "cmd-1", "user": "alice", "channel": "room:once"}
	if id := mustControl(t, cc.nodes[1].URL, "/api/subscribe", body); id != "cmd-1" {
		t.Fatalf("answered id %s", id)
	}
	expectServerSubscribed(t, a, "room:once")
	a.Send(`{"type":"unsubscribe","id":"u","channel":"room:once"}`)
	a.Expect("unsubscribed")
	mustControl(t, cc.nodes[1].URL, "/api/subscribe", body) // the same command again
	a.Send(`{"type":"ping","id":"p"}`)
	if f := a.Next(); f.Str("type") != "pong" {
		t.Fatalf("the same command applied twice: %v", f)
	}
	body["id"] = "cmd-2"
	mustControl(t, cc.nodes[1].URL, "/api/subscribe", body)
	expectServerSubscribed(t, a, "room:once")
}

// The service SDK's commands reach the nodes like the API's; on a broker without a control
// store the standing ones fail with ErrNoControlStore and nothing is published.
func TestControlSDK(t *testing.T) {
	for _, cb := range clusterBrokers {
		t.Run(cb.Name, func(t *testing.T) {
			cluster := cb.Setup(t)
			prefix := cluster.Prefix(t)
			nb := cluster.New(t, prefix)
			_, stored := nb.(transports.ControlStore)
			nd := startNode(t, testConfig(t, "GATEWAY_NODE_ID=n1"), gateway.WithBroker(nb))
			wstest.WaitFor(t, func() error {
				if s := readyStatus(nd.URL); s != 200 {
					return fmt.Errorf("/readyz %d", s)
				}
				return nil
			})
			svc, err := service.New(cluster.New(t, prefix), nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = svc.Close() })
			ctx := t.Context()
			a, _ := wstest.Dial(t, nd.URL, allowAll(t, "alice"))
			_, err = svc.SubscribeUser(ctx, "alice", "room:sdk")
			if !stored {
				if !errors.Is(err, service.ErrNoControlStore) {
					t.Fatalf("SubscribeUser on %s: %v", cb.Name, err)
				}
				if _, err := svc.Revoke(ctx, service.Revocation{User: "alice", Until: time.Now().Add(time.Hour)}); !errors.Is(err, service.ErrNoControlStore) {
					t.Fatalf("Revoke on %s: %v", cb.Name, err)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				expectServerSubscribed(t, a, "room:sdk")
			}
			if _, err := svc.DisconnectUser(ctx, "alice", service.Disconnect{}); err != nil {
				t.Fatal(err)
			}
			expectDisconnect(t, a, protocol.DisconnectCodeControl, false, protocol.CloseNormal)
			if _, err := svc.SubscribeUser(ctx, "", "room:sdk"); !errors.Is(err, service.ErrInvalid) {
				t.Fatalf("no user: %v", err)
			}
		})
	}
}

// A node that missed the control messages (here: records put in the store only) applies the
// standing commands to its open connections at its next read of the store.
func TestControlStoreRefresh(t *testing.T) {
	for _, cb := range clusterBrokers {
		t.Run(cb.Name, func(t *testing.T) {
			cluster := cb.Setup(t)
			prefix := cluster.Prefix(t)
			b := cluster.New(t, prefix)
			store, ok := b.(transports.ControlStore)
			if !ok {
				t.Skipf("the %s broker keeps no control state", cb.Name)
			}
			nd := startNode(t, testConfig(t, "GATEWAY_NODE_ID=n1"), gateway.WithBroker(b), gateway.WithControlRefresh(50*time.Millisecond))
			wstest.WaitFor(t, func() error {
				if s := readyStatus(nd.URL); s != 200 {
					return fmt.Errorf("/readyz %d", s)
				}
				return nil
			})
			alice, _ := wstest.Dial(t, nd.URL, allowAll(t, "alice"))
			carol, _ := wstest.Dial(t, nd.URL, allowAll(t, "carol"))
			put := func(c protocol.Control) {
				t.Helper()
				if err := c.Prepare(time.Now()); err != nil {
					t.Fatal(err)
				}
				if err := store.PutControl(t.Context(), c.StoreKey(), c.Encode()); err != nil {
					t.Fatal(err)
				}
			}
			put(protocol.Control{Kind: protocol.ControlSubscribe, User: "alice", Channel: "room:missed"})
			expectServerSubscribed(t, alice, "room:missed")
			put(protocol.Control{Kind: protocol.ControlRevoke, User: "carol", Until: time.Now().Add(time.Hour)})
			expectDisconnect(t, carol, protocol.DisconnectCodeRevoked, false, protocol.CloseRevoked)
			alice.Send(`{"type":"ping","id":"once"}`) // read again and again, the subscribe applied once
			if f := alice.Next(); f.Str("type") != "pong" {
				t.Fatalf("alice got %v", f)
			}
		})
	}
}
