package main_test

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wsgateway/gateway/internal/auth"
	"github.com/wsgateway/gateway/internal/wstest"
)

// build compiles the binary once for this test run.
func build(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "gateway")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// environ is the test process's environment without GATEWAY_* variables, plus env.
func environ(env ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GATEWAY_") {
			out = append(out, kv)
		}
	}
	return append(out, env...)
}

// start runs the binary with environ(env...) and returns it, its stderr and its exit status (sent
// once it exits); the process is killed when the test ends.
func start(t *testing.T, bin string, env ...string) (*exec.Cmd, *bytes.Buffer, <-chan error) {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = environ(env...)
	logs := &bytes.Buffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return cmd, logs, exited
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestBinary(t *testing.T) {
	bin := build(t)

	t.Run("InvalidSettingExits2WithOneLine", func(t *testing.T) {
		for _, env := range [][]string{
			{"GATEWAY_BROKER=bogus", "GATEWAY_JWT_SECRET=0123456789abcdef0123"},
			{"GATEWAY_BROKER=memory"}, // configured, but no way to authenticate
			{"GATEWAY_WS_MAX_FRAME_SIZE=abc", "GATEWAY_ALLOW_ANONYMOUS=true"},
		} {
			cmd := exec.Command(bin)
			cmd.Env = environ(env...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() != 2 {
				t.Fatalf("%v: exit %v, want 2", env, err)
			}
			lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], "GATEWAY_") {
				t.Fatalf("%v: stderr %q, want one line naming the variable", env, stderr.String())
			}
		}
	})

	t.Run("CheckConfigInDevelopmentMode", func(t *testing.T) {
		cmd := exec.Command(bin, "-check-config")
		cmd.Env = environ()
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "DEVELOPMENT MODE") || !strings.Contains(string(out), "configuration is valid") {
			t.Fatalf("err %v, output %s", err, out)
		}
	})

	t.Run("SIGTERMDrainsAndExits0", func(t *testing.T) {
		addr := freeAddr(t)
		secret := "0123456789abcdef0123456789"
		cmd, logs, exited := start(t, bin, "GATEWAY_ADDR="+addr, "GATEWAY_JWT_SECRET="+secret, "GATEWAY_DRAIN_PERIOD=300ms")
		base := "http://" + addr
		wstest.WaitFor(t, func() error {
			resp, err := http.Get(base + "/readyz")
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				return fmt.Errorf("readyz %d", resp.StatusCode)
			}
			return nil
		})
		tok, _ := auth.SignHS256([]byte(secret), "alice", time.Hour, []string{"*"}, []string{"*"})
		c, _ := wstest.Dial(t, base, tok)
		c.Subscribe("news")
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if f := c.Expect("disconnect"); f.Str("code") != "shutdown" || !f.Bool("reconnect") {
			t.Fatalf("disconnect %v", f)
		}
		select {
		case err := <-exited:
			if err != nil {
				t.Fatalf("exit: %v\n%s", err, logs.String())
			}
		case <-time.After(wstest.Timeout):
			t.Fatal("the node did not exit after SIGTERM")
		}
	})
}
