package pusher

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// sign is the hex HMAC-SHA256 of s with secret.
func sign(secret, s string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(s))
	return hex.EncodeToString(m.Sum(nil))
}

// ChannelAuth is the auth of a private or presence subscription, as an app's auth endpoint
// computes it: key:HMAC-SHA256(secret, socket_id:channel[:channel_data]).
func ChannelAuth(key, secret, socketID, channel, channelData string) string {
	s := socketID + ":" + channel
	if channelData != "" {
		s += ":" + channelData
	}
	return key + ":" + sign(secret, s)
}

// checkChannelAuth reports whether auth is app's signature of the subscription, compared in
// constant time.
func checkChannelAuth(a *app, auth, socketID, channel, channelData string) bool {
	want := ChannelAuth(a.Key, a.Secret, socketID, channel, channelData)
	return subtle.ConstantTimeCompare([]byte(auth), []byte(want)) == 1
}

// MaxClockSkew is how far auth_timestamp may be from the node's clock (Pusher's 600 s).
const MaxClockSkew = 600 * time.Second

// requestError is a refused HTTP API request: Pusher's status and text.
type requestError struct {
	status int
	msg    string
}

func (e *requestError) Error() string { return e.msg }

// stringToSign is what an HTTP API request signs: METHOD\nPATH\nthe query's parameters but
// auth_signature, keys lower-cased, sorted, as key=value joined by &, values not escaped.
func stringToSign(method, path string, q url.Values) string {
	keys := make([]string, 0, len(q))
	for k := range q {
		if strings.ToLower(k) != "auth_signature" {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool { return strings.ToLower(keys[i]) < strings.ToLower(keys[j]) })
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, strings.ToLower(k)+"="+q.Get(k))
	}
	return method + "\n" + path + "\n" + strings.Join(parts, "&")
}

// SignRequest returns the query of a signed HTTP API request (for tests and tools): params and
// the auth_* parameters, body_md5 when body is not empty.
func SignRequest(key, secret, method, path string, params url.Values, body []byte, now time.Time) url.Values {
	q := url.Values{}
	for k, v := range params {
		q[k] = v
	}
	q.Set("auth_key", key)
	q.Set("auth_timestamp", strconv.FormatInt(now.Unix(), 10))
	q.Set("auth_version", "1.0")
	if len(body) > 0 {
		sum := md5.Sum(body)
		q.Set("body_md5", hex.EncodeToString(sum[:]))
	}
	q.Set("auth_signature", sign(secret, stringToSign(method, path, q)))
	return q
}

// checkRequest checks the signature of an HTTP API request to app (body: its body), as Pusher
// does: checkQuery, then checkBody.
func checkRequest(a *app, method, path string, q url.Values, body []byte, now time.Time) error {
	if err := checkQuery(a, method, path, q, now); err != nil {
		return err
	}
	return checkBody(q, body)
}

// checkQuery checks what an HTTP API request's query signs, before its body is read: the key
// is app's, the timestamp within MaxClockSkew of now, and auth_signature right (compared in
// constant time). The body_md5 parameter is signed with the rest; checkBody compares it with
// the body.
func checkQuery(a *app, method, path string, q url.Values, now time.Time) error {
	key := q.Get("auth_key")
	if key == "" {
		return &requestError{401, "Missing auth_key"}
	}
	if key != a.Key {
		return &requestError{401, "Invalid key: the auth_key is not this app's"}
	}
	if v := q.Get("auth_version"); v != "1.0" {
		return &requestError{401, fmt.Sprintf("Invalid auth_version %q: 1.0 is supported", v)}
	}
	ts, err := strconv.ParseInt(q.Get("auth_timestamp"), 10, 64)
	if err != nil {
		return &requestError{401, "Missing or invalid auth_timestamp"}
	}
	if d := now.Sub(time.Unix(ts, 0)); d > MaxClockSkew || d < -MaxClockSkew {
		return &requestError{401, fmt.Sprintf("Timestamp expired: Given timestamp (%d) not within 600s of server time (%d)", ts, now.Unix())}
	}
	s := stringToSign(method, path, q)
	if subtle.ConstantTimeCompare([]byte(q.Get("auth_signature")), []byte(sign(a.Secret, s))) != 1 {
		return &requestError{401, fmt.Sprintf("Invalid signature: you should have sent HmacSHA256Hex(%q, your_secret)", s)}
	}
	return nil
}

// checkBody checks a signed request's body against its body_md5: a body that is not empty,
// or a body_md5 that is given, must be the MD5 of the body.
func checkBody(q url.Values, body []byte) error {
	if len(body) == 0 && !q.Has("body_md5") {
		return nil
	}
	sum := md5.Sum(body)
	if subtle.ConstantTimeCompare([]byte(q.Get("body_md5")), []byte(hex.EncodeToString(sum[:]))) != 1 {
		return &requestError{401, "Invalid body_md5: it is not the MD5 of the body"}
	}
	return nil
}
