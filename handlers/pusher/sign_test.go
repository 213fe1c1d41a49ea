package pusher

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/wsgateway/gateway/configs"
)

// The examples of Pusher's documentation (channels/library_auth_reference): an independent
// reference for the signatures.
const (
	docKey    = "278d425bdf160c739803"
	docSecret = "7ad3773142a6692b25b8"
)

func TestChannelAuthMatchesPusherDocs(t *testing.T) {
	got := ChannelAuth(docKey, docSecret, "1234.1234", "private-foobar", "")
	want := docKey + ":58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
	if got != want {
		t.Fatalf("private auth %s, want %s", got, want)
	}
}

func TestRequestSignatureMatchesPusherDocs(t *testing.T) {
	body := `{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}`
	q := SignRequest(docKey, docSecret, "POST", "/apps/3/events", nil, []byte(body), time.Unix(1353088179, 0))
	if got := q.Get("body_md5"); got != "ec365a775a4cd0599faeb73354201b6f" {
		t.Errorf("body_md5 %s", got)
	}
	if got := q.Get("auth_signature"); got != "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c" {
		t.Errorf("auth_signature %s", got)
	}
}

func testApp() *app {
	return &app{PusherApp: configs.PusherApp{ID: "3", Key: "key-3", Secret: "secret-of-app-3-xxxx"}}
}

func TestCheckRequest(t *testing.T) {
	a := testApp()
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"name":"e","channel":"c","data":"x"}`)
	params := url.Values{"info": {"user_count,subscription_count"}, "filter_by_prefix": {"presence-"}}
	good := func() url.Values { return SignRequest(a.Key, a.Secret, "POST", "/apps/3/events", params, body, now) }
	cases := []struct {
		name   string
		q      func() url.Values
		body   []byte
		now    time.Time
		method string
		want   string // "" accepted, else in the message
	}{
		{name: "good", q: good},
		{name: "clock 599 s ahead", q: good, now: now.Add(599 * time.Second)},
		{name: "expired", q: good, now: now.Add(601 * time.Second), want: "Timestamp expired"},
		{name: "from the future", q: good, now: now.Add(-601 * time.Second), want: "Timestamp expired"},
		{name: "wrong secret", q: func() url.Values {
			return SignRequest(a.Key, "another-secret-xxxxxx", "POST", "/apps/3/events", params, body, now)
		}, want: "Invalid signature"},
		{name: "unknown key", q: func() url.Values {
			return SignRequest("key-4", a.Secret, "POST", "/apps/3/events", params, body, now)
		}, want: "Invalid key"},
		{name: "no key", q: func() url.Values { q := good(); q.Del("auth_key"); return q }, want: "Missing auth_key"},
		{name: "another body", q: good, body: []byte(`{"name":"f"}`), want: "Invalid body_md5"},
		{name: "another method", q: good, method: "GET", want: "Invalid signature"},
		{name: "a parameter changed", q: func() url.Values { q := good(); q.Set("info", "user_count"); return q }, want: "Invalid signature"},
		{name: "auth_version 2", q: func() url.Values { q := good(); q.Set("auth_version", "2.0"); return q }, want: "auth_version"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, at, m := body, now, "POST"
			if tc.body != nil {
				b = tc.body
			}
			if !tc.now.IsZero() {
				at = tc.now
			}
			if tc.method != "" {
				m = tc.method
			}
			err := checkRequest(a, m, "/apps/3/events", tc.q(), b, at)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && err == nil:
				t.Fatal("accepted")
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("error %q, want it to say %q", err, tc.want)
			case err != nil && err.(*requestError).status != 401:
				t.Fatalf("status %d, want 401", err.(*requestError).status)
			}
		})
	}
}

func TestCheckChannelAuth(t *testing.T) {
	a := testApp()
	data := `{"user_id":"u1","user_info":{"name":"U"}}`
	good := ChannelAuth(a.Key, a.Secret, "1.2", "presence-room", data)
	if !checkChannelAuth(a, good, "1.2", "presence-room", data) {
		t.Fatal("a good presence auth refused")
	}
	for name, auth := range map[string]string{
		"another socket":       ChannelAuth(a.Key, a.Secret, "1.3", "presence-room", data),
		"another channel":      ChannelAuth(a.Key, a.Secret, "1.2", "presence-hall", data),
		"other channel_data":   ChannelAuth(a.Key, a.Secret, "1.2", "presence-room", `{"user_id":"u2"}`),
		"another secret":       ChannelAuth(a.Key, "another-secret-xxxxx", "1.2", "presence-room", data),
		"another key":          ChannelAuth("key-4", a.Secret, "1.2", "presence-room", data),
		"empty":                "",
		"signature only":       strings.TrimPrefix(good, a.Key+":"),
		"upper-case signature": strings.ToUpper(good),
	} {
		if checkChannelAuth(a, auth, "1.2", "presence-room", data) {
			t.Errorf("%s: accepted", name)
		}
	}
}
