package main_test

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
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
			{"GATEWAY_BROKER=redis"}, // a shared broker, but no way to authenticate
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
		// It says so, and prints no secret: -check-config serves nothing.
		out, code := runBinary(t, bin, nil, "-check-config")
		if code != 0 || !strings.Contains(out, "development mode") || !strings.Contains(out, "configuration is valid") || strings.Contains(out, "jwt_secret") {
			t.Fatalf("exit %d, output %s", code, out)
		}
	})

	t.Run("AddressAloneIsStillDevelopmentMode", func(t *testing.T) {
		addr := freeAddr(t)
		out, code := runBinary(t, bin, []string{"GATEWAY_ADDR=" + addr}, "-check-config")
		if code != 0 || !strings.Contains(out, "development mode") {
			t.Fatalf("exit %d, output %s", code, out)
		}
	})

	t.Run("DevelopmentModePrintsNoKeyItWasGiven", func(t *testing.T) {
		// The node prints a usable address and its made-up secret's token, but never an API key
		// the operator set.
		addr := freeAddr(t)
		cmd := exec.Command(bin)
		cmd.Env = environ("GATEWAY_ADDR="+addr, "GATEWAY_API_KEY=operator-set-key-0123456789")
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
		var out strings.Builder
		sc := bufio.NewScanner(stderr)
		for sc.Scan() && !strings.Contains(out.String(), "Publish:") {
			out.WriteString(sc.Text() + "\n")
		}
		got := out.String()
		if !strings.Contains(got, "ws://"+addr+"/ws?token=") || strings.Contains(got, "operator-set-key") || !strings.Contains(got, "$GATEWAY_API_KEY") {
			t.Fatalf("development mode printed:\n%s", got)
		}
	})

	t.Run("TokenWithoutSecretIsRefused", func(t *testing.T) {
		for _, env := range [][]string{nil, {"GATEWAY_ALLOW_ANONYMOUS=true"}} {
			cmd := exec.Command(bin, "-token", "alice")
			cmd.Env = environ(env...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || stdout.Len() != 0 {
				t.Fatalf("%v: exit %v, stdout %q: want status 2 and no token", env, err, stdout.String())
			}
			if !strings.Contains(stderr.String(), "GATEWAY_JWT_SECRET") {
				t.Fatalf("%v: stderr %q does not say what to set", env, stderr.String())
			}
		}
	})

	t.Run("CheckConfigRunsTheChecksOfStart", func(t *testing.T) {
		pub, priv := keyFiles(t)
		pubPEM, err := os.ReadFile(pub)
		if err != nil {
			t.Fatal(err)
		}
		notPEM := filepath.Join(t.TempDir(), "key.txt")
		if err := os.WriteFile(notPEM, []byte("not a key\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		for name, env := range map[string][]string{
			"secret is the public key": {"GATEWAY_JWT_PUBLIC_KEY=" + pub, "GATEWAY_JWT_SECRET=" + string(pubPEM)},
			"private key as public":    {"GATEWAY_JWT_PUBLIC_KEY=" + priv},
			"key file not PEM":         {"GATEWAY_JWT_PUBLIC_KEY=" + notPEM},
		} {
			out, code := runBinary(t, bin, env, "-check-config")
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if code != 2 || len(lines) != 1 || !strings.Contains(out, "auth.jwt_public_key") {
				t.Errorf("%s: exit %d, output %q: want 2 and one line naming auth.jwt_public_key", name, code, out)
			}
		}
		for key, env := range map[string][]string{ // checks of the broker packages
			"jetstream.replicas":         {"GATEWAY_BROKER=jetstream", "GATEWAY_JETSTREAM_REPLICAS=9"},
			"jetstream.duplicate_window": {"GATEWAY_BROKER=jetstream", "GATEWAY_JETSTREAM_DUPLICATE_WINDOW=48h"},
			"kafka.retention":            {"GATEWAY_BROKER=kafka", "GATEWAY_KAFKA_RETENTION=-1h"},
			"redis.max_len":              {"GATEWAY_BROKER=redis", "GATEWAY_REDIS_MAX_LEN=-5"},
			"redis.shards":               {"GATEWAY_BROKER=redis", "GATEWAY_REDIS_SHARDS=1025"},
			"kafka.partitions":           {"GATEWAY_BROKER=kafka", "GATEWAY_KAFKA_PARTITIONS=2000"},
		} {
			out, code := runBinary(t, bin, append(env, "GATEWAY_JWT_PUBLIC_KEY="+pub), "-check-config")
			variable, _, _ := strings.Cut(env[1], "=")
			if lines := strings.Split(strings.TrimSpace(out), "\n"); code != 2 || len(lines) != 1 || !strings.Contains(out, key) || !strings.Contains(out, variable) {
				t.Errorf("%v: exit %d, output %q: want 2 and one line naming %s and %s", env, code, out, key, variable)
			}
		}
		if out, code := runBinary(t, bin, []string{"GATEWAY_JWT_PUBLIC_KEY=" + pub}, "-check-config"); code != 0 {
			t.Errorf("a good public key: exit %d, output %s", code, out)
		}
	})

	t.Run("UnknownVariableIsWarnedAbout", func(t *testing.T) {
		out, code := runBinary(t, bin, []string{"GATEWAY_ALLOW_ANONYMOUS=true", "GATEWAY_REDIS_ADRESS=x:1"}, "-check-config")
		if code != 0 || !strings.Contains(out, "variable=GATEWAY_REDIS_ADRESS did_you_mean=GATEWAY_REDIS_ADDR") {
			t.Fatalf("exit %d, output %s", code, out)
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

// runBinary runs the binary with args and environ(env...) and returns its combined output and
// exit status.
func runBinary(t *testing.T, bin string, env []string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = environ(env...)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), 0
}

// keyFiles writes an Ed25519 public key and its private key as PEM files.
func keyFiles(t *testing.T) (pub, priv string) {
	t.Helper()
	pk, sk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pkix, _ := x509.MarshalPKIXPublicKey(pk)
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(sk)
	dir := t.TempDir()
	pub, priv = filepath.Join(dir, "pub.pem"), filepath.Join(dir, "priv.pem")
	for path, b := range map[string]*pem.Block{pub: {Type: "PUBLIC KEY", Bytes: pkix}, priv: {Type: "PRIVATE KEY", Bytes: pkcs8}} {
		if err := os.WriteFile(path, pem.EncodeToMemory(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return pub, priv
}
