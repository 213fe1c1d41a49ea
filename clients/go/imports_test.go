// Package clients holds the import check of the Go client packages (clients/go/...): it has no
// code of its own.
package clients

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/wsgateway/gateway"

// forbidden is what no Go client package may link: the server (its root package, the websocket
// transport, the router and handlers, authentication, the configuration), the server's
// WebSocket and JWT libraries, and the brokers. A client speaks the contract (protocol); a
// service links the one broker it imports itself, next to the SDK, never through it.
//
// A pattern is an import path, or a tree ("path/...": the path and every package under it), or
// a prefix ("path*").
var forbidden = []struct{ pattern, why string }{
	{module, "the gateway server"},
	{module + "/handlers/...", "the server's handlers"},
	{module + "/router/...", "the server's router"},
	{module + "/transports/websocket/...", "the server's websocket transport"},
	{module + "/configs/...", "the server's configuration (the brokers' ConfigFrom take it; the SDK does not)"},
	{module + "/internal/auth/...", "the server's authentication"},
	{"github.com/olahol/melody/...", "the server's WebSocket hub"},
	{"github.com/golang-jwt/jwt*", "the server's JWT library"},
	{module + "/transports/nats/...", "a broker"},
	{module + "/transports/jetstream/...", "a broker"},
	{module + "/transports/redis/...", "a broker"},
	{module + "/transports/kafka/...", "a broker"},
	{module + "/transports/memory/...", "a broker"},
	{"github.com/nats-io/nats.go/...", "a broker client library"},
	{"github.com/redis/go-redis/...", "a broker client library"},
	{"github.com/IBM/sarama/...", "a broker client library"},
	{"github.com/twmb/franz-go/...", "a broker client library"},
	{"github.com/ThreeDotsLabs/watermill-*", "a Watermill broker adapter"}, // watermill-nats, -redisstream, -kafka
}

// gorilla is the WebSocket library: wsclient is a WebSocket client and uses it as such; no other
// client package may (the service SDK talks to the broker, never to a WebSocket).
const gorilla = "github.com/gorilla/websocket/..."

// websocketClients may link gorilla.
var websocketClients = map[string]bool{module + "/clients/go/wsclient": true}

// TestImports lists the dependencies of every package under clients/go (go list -deps, without
// tests) and fails on any forbidden one.
func TestImports(t *testing.T) {
	pkgs := goList(t, module+"/clients/go/...")
	if len(pkgs) < 3 {
		t.Fatalf("go list found only %v under clients/go", pkgs)
	}
	for _, pkg := range pkgs {
		if pkg == module+"/clients/go" {
			continue // this test-only package
		}
		for _, dep := range goList(t, "-deps", pkg) {
			for _, f := range forbidden {
				if matches(f.pattern, dep) {
					t.Errorf("%s links %s, %s", pkg, dep, f.why)
				}
			}
			if matches(gorilla, dep) && !websocketClients[pkg] {
				t.Errorf("%s links %s: only the WebSocket client (wsclient) may", pkg, dep)
			}
		}
	}
}

func matches(pattern, path string) bool {
	if tree, ok := strings.CutSuffix(pattern, "/..."); ok {
		return path == tree || strings.HasPrefix(path, tree+"/")
	}
	if prefix, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(path, prefix)
	}
	return path == pattern
}

// goList runs go list with args and returns the import paths it prints. go test puts the go
// command of its toolchain (GOROOT/bin) first on the PATH of tests.
func goList(t *testing.T, args ...string) []string {
	t.Helper()
	out, err := exec.Command("go", append([]string{"list", "-f", "{{.ImportPath}}"}, args...)...).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("go list %v: %v\n%s", args, err, stderr)
	}
	return strings.Fields(string(out))
}
