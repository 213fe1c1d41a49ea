package main

import (
	"bytes"
	"testing"

	"github.com/klauspost/compress/flate"
)

// BenchmarkInflate: what wsbench spends inflating one compressed message of a 4 KiB payload.
func BenchmarkInflate(b *testing.B) {
	msg := append([]byte(`{"type":"message","channel":"bench","id":"0f8fad5b-d9cb-469f-a165-70867728950e","position":"17:3fa1c2","data":`), appendPayload(nil, 1, 1, 4096, padWords)...)
	var z bytes.Buffer
	fw, _ := flate.NewWriter(&z, 1)
	_, _ = fw.Write(msg)
	_ = fw.Flush()
	p := bytes.TrimSuffix(z.Bytes(), []byte{0, 0, 0xff, 0xff})
	var in inflater
	b.ReportAllocs()
	for b.Loop() {
		if _, err := in.inflate(p); err != nil {
			b.Fatal(err)
		}
	}
}
