package configs

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// TestSettingOf: every setting of Config is found from its field's address, with the key and
// variable of its tags, and a pointer to anything else is refused.
func TestSettingOf(t *testing.T) {
	c := &Config{}
	root := reflect.ValueOf(c).Elem()
	want := map[string]string{}
	envKeys(reflect.TypeOf(Config{}), EnvPrefix, "", want)
	seen := 0
	for _, f := range settingFields() {
		got := c.settingOf(root.FieldByIndex(f.index).Addr().Interface())
		if got != f.setting || got.env == "" || want[got.env] != got.key {
			t.Errorf("field %v: setting %+v, want %s (%s)", f.index, got, f.key, f.env)
		}
		seen++
	}
	if seen != len(want) {
		t.Errorf("%d settings found by address, %d variables in the tags", seen, len(want))
	}
	if s := c.settingOf(&c.Limits.ConnectionsPerUser); s.key != "limits.connections_per_user" || s.env != "GATEWAY_LIMITS_CONNECTIONS_PER_USER" {
		t.Errorf("limits.connections_per_user: %+v", s)
	}
	if s := c.settingOf(&c.WebSocket.MaxFrameSize); s.key != "websocket.max_frame_size" || s.env != "GATEWAY_WS_MAX_FRAME_SIZE" {
		t.Errorf("websocket.max_frame_size: %+v", s)
	}
	other := &Config{}
	for name, p := range map[string]any{"a section": &c.Limits, "another Config's field": &other.Addr, "not a pointer": c.Addr, "nil": (*string)(nil)} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			c.settingOf(p)
		}()
	}
}

// TestEachLimitNamesItsKey: every limit that is wrong is reported under its own key, never under
// a neighbour's (connections_per_user was once reported as connections_per_node).
func TestEachLimitNamesItsKey(t *testing.T) {
	for key, value := range map[string]string{
		"publish_rate": "-2", "publish_burst": "-1", "user_publish_rate": "-2", "user_publish_burst": "-1",
		"connections_per_node": "-1", "connections_per_user": "-1", "subscriptions_per_connection": "-2",
		"subscribe_rate": "-2", "subscribe_burst": "-1", "rate_limited_disconnect": "-2", "rate_limited_window": "-1s",
	} {
		env := "GATEWAY_LIMITS_" + strings.ToUpper(key)
		_, err := Load("", []string{secret, env + "=" + value})
		var ke *KeyError
		if !errors.As(err, &ke) || ke.Key != "limits."+key || ke.Env != env {
			t.Errorf("%s=%s: %v, want a *KeyError naming limits.%s (%s)", env, value, err, key, env)
		}
	}
}
