// Command chat is a small chat demo of the WebSocket gateway in the browser: a tiny HTTP server
// that serves a static chat page, the JavaScript client (clients/js, built into clients/js/dist)
// and the connection tokens the page needs. The page itself talks straight to the gateway nodes
// with the client: name and room in, messages of channel "chat:<room>" out, who is online in the
// room (presence), and it resumes after a lost connection, on another node if need be.
//
// Usage:
//
//	chat [-addr :8090] [-nodes ws://localhost:8081/ws,ws://localhost:8082/ws] [-client DIR]
//
// Without -nodes it runs a gateway node of its own, in this process on the embedded memory
// broker, at /ws on -addr, with presence and joins and leaves on chat:* (`go run ./examples/chat`
// is the whole demo on one machine). With -nodes the page connects to those nodes instead, which
// must share GATEWAY_JWT_SECRET with this server and have presence on chat:* for the online list.
//
// It serves:
//
//	GET /                  the chat page (static/, embedded)
//	GET /client/...        the built JS client (clients/js/dist, or -client DIR)
//	GET /config            {"nodes": [...]}: the gateway URLs offered to the page (-nodes, or the
//	                       embedded node's /ws); the page's ?nodes=URL,URL overrides them
//	GET /token?user=NAME   {"token","user","expires_at"}: an HS256 token for NAME signed with
//	                       GATEWAY_JWT_SECRET (the gateway's; made up for the embedded node when
//	                       unset), valid 1 h, allowed to subscribe to chat:* and $user and to
//	                       publish to chat:*
//	/ws                    the embedded node's WebSocket endpoint (without -nodes only)
//
// The token endpoint hands a token to anybody for any name: that is what makes this a demo. A
// real application mints tokens only for users it has authenticated.
//
// Gateway nodes given with -nodes must allow the page's origin:
// GATEWAY_ALLOWED_ORIGINS=http://localhost:8090 (the address the browser uses, exactly). See
// README.md for a complete walk-through.
package main

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/wsgateway/gateway"
)

//go:embed static
var staticFiles embed.FS

// tokenTTL is the lifetime of the tokens /token mints. The page asks for a new one before every
// (re)connect, so an expired token costs one reconnect, not the session.
const tokenTTL = time.Hour

// minSecretLen is the gateway's own minimum for GATEWAY_JWT_SECRET.
const minSecretLen = 16

// userPattern is what /token accepts as a user name.
var userPattern = regexp.MustCompile(`^[A-Za-z0-9_.\-]{1,32}$`)

// Claims of every token: the page may subscribe to any chat room and to its user's own channel,
// and publish to chat rooms only.
var (
	tokenChannels = []string{"chat:*", "$user"}
	tokenPublish  = []string{"chat:*"}
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stderr, nil)
	stop()
	os.Exit(code)
}

// run is the command. ready, when not nil, is called with the listening address once the server
// accepts connections. It returns when ctx ends: 0 after a clean stop, 1 on a failure, 2 on a
// usage or configuration error.
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer, ready func(addr string)) int {
	fs := flag.NewFlagSet("chat", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", ":8090", "listen address of this server")
	nodesFlag := fs.String("nodes", "",
		"comma-separated WebSocket URLs (ws:// or wss://, path /ws) of the gateway nodes offered to the page; none: a node runs in this process, on the embedded memory broker")
	clientDir := fs.String("client", "", "directory of the built JS client (default: clients/js/dist, looked up from the working directory upwards)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "chat: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))

	embedded := *nodesFlag == ""
	secret := getenv("GATEWAY_JWT_SECRET")
	if secret == "" && embedded {
		secret = madeUpSecret()
		log.Info("no GATEWAY_JWT_SECRET: made one up, for the tokens of the embedded node")
	}
	if len(secret) < minSecretLen {
		fmt.Fprintf(stderr, "chat: GATEWAY_JWT_SECRET must be set to the gateway's secret (at least %d characters)\n", minSecretLen)
		return 2
	}
	var nodes []string
	if !embedded {
		var err error
		if nodes, err = parseNodes(*nodesFlag); err != nil {
			fmt.Fprintln(stderr, "chat: -nodes:", err)
			return 2
		}
	}
	dir, err := findClientDir(*clientDir)
	if err != nil {
		fmt.Fprintln(stderr, "chat:", err)
		return 2
	}

	var node *gateway.Gateway
	if embedded {
		if node, err = newEmbedded(secret, log); err != nil {
			fmt.Fprintln(stderr, "chat:", err)
			return 1
		}
		defer node.Close()
		if err := node.Start(ctx); err != nil {
			fmt.Fprintln(stderr, "chat: the embedded gateway node:", err)
			return 1
		}
	}
	var gw http.Handler
	if node != nil {
		gw = node.Handler()
	}
	handler, err := newHandler([]byte(secret), nodes, gw, os.DirFS(dir), time.Now, log)
	if err != nil {
		fmt.Fprintln(stderr, "chat:", err)
		return 1
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintf(stderr, "chat: listen on %s: %v\n", *addr, err)
		return 1
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	listening := ln.Addr().String()
	_, port, _ := net.SplitHostPort(listening)
	if embedded {
		log.Info("chat server listening, with a gateway node of its own at /ws (memory broker)", "addr", listening, "client", dir, "node_id", embeddedNodeID)
		fmt.Fprintf(stderr, "\n  Open http://localhost:%s/ in two tabs.\n\n", port)
	} else {
		log.Info("chat server listening", "addr", listening, "client", dir, "nodes", strings.Join(nodes, ","))
		fmt.Fprintf(stderr, "\n  Open http://localhost:%s/ in two tabs (the gateways must allow that origin:\n  GATEWAY_ALLOWED_ORIGINS=http://localhost:%s).\n\n", port, port)
	}
	if ready != nil {
		ready(listening)
	}

	select {
	case err := <-served:
		log.Error("chat server stopped", "error", err)
		return 1
	case <-ctx.Done():
	}
	if node != nil {
		node.Drain() // the pages get `shutdown` (and would resume elsewhere, had they anywhere)
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		log.Warn("chat server shutdown", "error", err)
	}
	<-served
	log.Info("chat server stopped")
	return 0
}

// parseNodes checks a comma-separated list of gateway WebSocket URLs.
func parseNodes(list string) ([]string, error) {
	var nodes []string
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		u, err := url.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not a URL: %v", s, err)
		}
		if u.Scheme != "ws" && u.Scheme != "wss" {
			return nil, fmt.Errorf("%q: the scheme must be ws or wss", s)
		}
		if u.Host == "" {
			return nil, fmt.Errorf("%q has no host", s)
		}
		nodes = append(nodes, s)
	}
	if len(nodes) == 0 {
		return nil, errors.New("give at least one gateway URL, e.g. ws://localhost:8081/ws")
	}
	return nodes, nil
}

// findClientDir returns the directory of the built JS client: dir when given, otherwise the first
// clients/js/dist found from the working directory upwards. It must hold index.js.
func findClientDir(dir string) (string, error) {
	const build = "build it first: cd clients/js && npm ci && npm run build"
	if dir != "" {
		if _, err := os.Stat(filepath.Join(dir, "index.js")); err != nil {
			return "", fmt.Errorf("-client %s: no index.js there (%s)", dir, build)
		}
		return dir, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		candidate := filepath.Join(d, "clients", "js", "dist")
		if _, err := os.Stat(filepath.Join(candidate, "index.js")); err == nil {
			return candidate, nil
		}
		if filepath.Dir(d) == d {
			break
		}
	}
	return "", fmt.Errorf("the JS client is not built (no clients/js/dist/index.js above %s): %s, or pass -client DIR", wd, build)
}

// newHandler builds the server's routes. client is the built JS client, served under /client/.
// gw, when not nil, is the embedded gateway node, served at /ws and offered by /config (then
// nodes is empty).
func newHandler(secret []byte, nodes []string, gw http.Handler, client fs.FS, now func() time.Time, log *slog.Logger) (http.Handler, error) {
	static, err := fs.Sub(staticFiles, "static")
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /", http.FileServerFS(static))
	mux.Handle("GET /client/", http.StripPrefix("/client/", http.FileServerFS(client)))
	mux.HandleFunc("GET /config", func(w http.ResponseWriter, r *http.Request) {
		if gw != nil {
			writeJSON(w, http.StatusOK, map[string]any{"nodes": []string{sameHostNode(r)}})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"nodes": nodes})
	})
	if gw != nil {
		mux.Handle("GET /ws", gw) // a WebSocket upgrade is a GET
	}
	mux.Handle("GET /token", tokenHandler(secret, now, log))
	return securityHeaders(mux), nil
}

// tokenHandler answers GET /token?user=NAME with a token for NAME.
func tokenHandler(secret []byte, now func() time.Time, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		users := r.URL.Query()["user"]
		if len(users) != 1 {
			writeError(w, http.StatusBadRequest, "give exactly one user: /token?user=NAME")
			return
		}
		user := users[0]
		if !userPattern.MatchString(user) {
			writeError(w, http.StatusBadRequest,
				"user must be 1 to 32 characters of letters, digits, '_', '.' or '-'")
			return
		}
		issued := now()
		expires := issued.Add(tokenTTL)
		token, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"sub":      user,
			"iat":      jwt.NewNumericDate(issued),
			"exp":      jwt.NewNumericDate(expires),
			"channels": tokenChannels,
			"publish":  tokenPublish,
		}).SignedString(secret)
		if err != nil {
			log.Error("cannot sign a token", "error", err)
			writeError(w, http.StatusInternalServerError, "cannot sign a token")
			return
		}
		log.Debug("token minted", "user", user, "expires", expires)
		writeJSON(w, http.StatusOK, map[string]any{
			"token":      token,
			"user":       user,
			"expires_at": expires.UTC().Format(time.RFC3339),
		})
	})
}

// securityHeaders adds the headers every answer gets. The page may connect to any ws:// or wss://
// URL (the node list can be overridden with ?nodes=), and loads nothing from elsewhere.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Content-Security-Policy", "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; frame-ancestors 'none'")
		next.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError answers with the gateway's error shape: {"error":{"code","message"}}.
func writeError(w http.ResponseWriter, status int, message string) {
	code := "bad_request"
	if status >= 500 {
		code = "internal"
	}
	writeJSON(w, status, map[string]any{"error": map[string]string{"code": code, "message": message}})
}
