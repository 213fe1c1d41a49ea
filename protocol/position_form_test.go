package protocol

import (
	"fmt"
	"hash/crc32"
	"math"
	"strconv"
	"testing"
)

// TestPositionForms checks the forms built by appending against the plain formulas they replace
// (fmt's %08x and string concatenation), and that they parse back.
func TestPositionForms(t *testing.T) {
	for _, p := range []Position{
		{},
		{Epoch: "mem-1", Lo: 1},
		{Epoch: "r", Hi: 1733480000000, Lo: 7},
		{Epoch: "js1dd39950-1733480000", Hi: math.MaxUint64, Lo: math.MaxUint64},
	} {
		for _, channel := range []string{"", "news", "$user:alice", "a.b-c_d:e"} {
			want := p.Epoch + ":" + strconv.FormatUint(p.Hi, 10) + ":" + strconv.FormatUint(p.Lo, 10)
			if got := p.String(); got != want {
				t.Errorf("%#v.String() = %q, want %q", p, got, want)
			}
			wantClient := want + ":" + fmt.Sprintf("%08x", crc32.ChecksumIEEE([]byte(channel)))
			if got := p.ForChannel(channel); got != wantClient {
				t.Errorf("%#v.ForChannel(%q) = %q, want %q", p, channel, got, wantClient)
			}
			if q, err := ParsePosition(want); err != nil || q != p {
				t.Errorf("ParsePosition(%q) = %#v, %v", want, q, err)
			}
			if q, err := ParseClientPosition(channel, wantClient); err != nil || q != p {
				t.Errorf("ParseClientPosition(%q, %q) = %#v, %v", channel, wantClient, q, err)
			}
		}
	}
	for _, bad := range []string{"", "a", "a:1", "a:1:2:3", "a::2", "a:1:", "a b:1:2", ":1:x"} {
		if _, err := ParsePosition(bad); err == nil {
			t.Errorf("ParsePosition(%q) accepted", bad)
		}
	}
}

// BenchmarkPositionForms is the position work of one delivered channel message: the form kept in
// the metadata parsed, and the client form made.
func BenchmarkPositionForms(b *testing.B) {
	kept := Position{Epoch: "mem-1733480000", Lo: 123456}.String()
	b.ReportAllocs()
	for b.Loop() {
		p, err := ParsePosition(kept)
		if err != nil {
			b.Fatal(err)
		}
		if p.ForChannel("channel-1234") == "" {
			b.Fatal("empty")
		}
	}
}
