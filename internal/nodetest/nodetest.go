// Package nodetest runs gateway nodes as real processes for fault tests: build the binary once,
// start nodes on free ports, wait until they are ready, kill or drain them. It also holds the
// table of brokers that the tests running on every broker share (Brokers: each broker's node
// settings and a constructor of started brokers, skipped when its server is not reachable).
package nodetest

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary builds ./cmd/gateway once per test process and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "gateway-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "gateway")
		root, err := moduleRoot()
		if err != nil {
			buildErr = err
			return
		}
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/gateway")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", err
	}
	return filepath.Dir(strings.TrimSpace(string(out))), nil
}

// FreeAddr returns a loopback address with a free port.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// FreePort is a loopback TCP port nothing listens on now (FreeAddr's port), for a server a test
// starts itself.
func FreePort(t testing.TB) int {
	t.Helper()
	_, port, _ := net.SplitHostPort(FreeAddr(t))
	p, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Node is one gateway process.
type Node struct {
	Addr string
	URL  string
	env  []string
	t    testing.TB
	cmdf func(bin string) *exec.Cmd
	mu   sync.Mutex
	cmd  *exec.Cmd
	logs *bytes.Buffer
	done chan error
}

// Start starts a node with the given GATEWAY_* environment (GATEWAY_ADDR is chosen here) and
// waits until /readyz answers 200. The process is killed when the test ends.
func Start(t testing.TB, env ...string) *Node {
	t.Helper()
	addr := FreeAddr(t)
	n := &Node{Addr: addr, URL: "http://" + addr, env: env, t: t}
	n.start()
	t.Cleanup(func() { n.Kill() })
	return n
}

// StartAt is Start with the node listening on addr (host:port) and its process made by command
// from the binary's path (in a network namespace, say: internal/netns).
func StartAt(t testing.TB, addr string, command func(bin string) *exec.Cmd, env ...string) *Node {
	t.Helper()
	n := &Node{Addr: addr, URL: "http://" + addr, env: env, t: t, cmdf: command}
	n.start()
	t.Cleanup(func() { n.Kill() })
	return n
}

func (n *Node) start() {
	n.t.Helper()
	cmd := exec.Command(Binary(n.t))
	if n.cmdf != nil {
		cmd = n.cmdf(Binary(n.t))
	}
	environ := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GATEWAY_") {
			environ = append(environ, kv)
		}
	}
	cmd.Env = append(append(environ, "GATEWAY_ADDR="+n.Addr), n.env...)
	logs := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	n.mu.Lock()
	n.cmd, n.logs, n.done = cmd, logs, done
	n.mu.Unlock()
	if err := n.WaitReady(30 * time.Second); err != nil {
		n.t.Fatalf("node %s: %v\n%s", n.Addr, err, n.Logs())
	}
}

// Restart starts the node again on the same address after it stopped.
func (n *Node) Restart() { n.start() }

// WaitReady polls /readyz until 200.
func (n *Node) WaitReady(total time.Duration) error {
	deadline := time.Now().Add(total)
	client := http.Client{Timeout: time.Second}
	for delay := 5 * time.Millisecond; ; delay = min(delay*2, 100*time.Millisecond) {
		resp, err := client.Get(n.URL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		select {
		case err := <-n.exited():
			return fmt.Errorf("exited before ready: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %v (last: %v)", total, err)
		}
		time.Sleep(delay)
	}
}

func (n *Node) exited() chan error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.done
}

// Logs is what the process printed.
func (n *Node) Logs() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.logs.String()
}

// Kill sends SIGKILL and waits for the process to end.
func (n *Node) Kill() {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if cmd == nil || cmd.ProcessState != nil {
		return
	}
	_ = cmd.Process.Kill()
	select {
	case <-done:
		done <- nil // keep it readable for later callers
	case <-time.After(10 * time.Second):
	}
}

// Term sends SIGTERM (drain) and waits for the exit status, at most total.
func (n *Node) Term(total time.Duration) error {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case err := <-done:
		done <- err
		return err
	case <-time.After(total):
		return fmt.Errorf("node %s did not exit within %v after SIGTERM", n.Addr, total)
	}
}
