package nats

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/wsgateway/gateway/protocol"
)

// TestMemberSizeBoundsJSON: memberSize is never below the bytes encoding/json writes for the
// member, also when they are many more than its text (escaped <, >, &, quotes, control
// characters, U+2028, bad UTF-8), since sync messages and pages are cut by it.
func TestMemberSizeBoundsJSON(t *testing.T) {
	for name, m := range map[string]protocol.Member{
		"plain":        {User: "u", Session: "s1", Node: "n", Info: json.RawMessage(`{"name":"Ann"}`)},
		"html in info": {User: "u", Session: "s2", Node: "n", Info: json.RawMessage(`{"bio":"` + strings.Repeat("<b>&", 500) + `"}`)},
		"quotes":       {User: `a"b\c`, Session: "s3", Node: "n", Info: json.RawMessage(`{"q":"\"\\\""}`)},
		"control":      {User: "a\x01\x02\n", Session: "s4", Node: "n"},
		"separators":   {User: "a\u2028b\u2029", Session: "s5", Node: "n", Info: json.RawMessage(`{"s":"` + strings.Repeat("\u2028", 100) + `"}`)},
		"bad utf-8":    {User: "a\xff\xfe", Session: "s6", Node: "n"},
	} {
		data, err := json.Marshal(m)
		if err != nil {
			t.Fatal(name, err)
		}
		if got := memberSize(m); got < len(data) {
			t.Errorf("%s: memberSize %d, JSON %d bytes", name, got, len(data))
		}
	}
}
