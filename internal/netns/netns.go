// Package netns puts processes and sockets of a test in a network namespace of their own, joined
// to the host by veth pairs that the test can cut and heal (issue 17, "Network faults").
//
// A cut takes the host end of a veth pair administratively down (`ip link set DEV down`): this
// machine has no iptables, nft, tc netem or tc drop action, so a DROP rule is not available. A
// link down sends no RST and closes no socket: both ends keep their TCP state, the namespace's
// packets vanish (the peer has no carrier) and the host's sends fail softly (no route), so TCP
// retransmits with backoff until the link is up again or its own timeouts fire, as on a real cut.
//
// An NS is used by one test goroutine; Cut and Heal may be called from any goroutine. Everything
// is removed when the test ends, failed or not.
package netns

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// NS is one network namespace of a test.
type NS struct {
	Name string
	t    testing.TB
	mu   sync.Mutex
	n    int // links made
	id   [2]byte
}

// Link is one veth pair: HostIP on the host end (HostDev), NSIP on the namespace's end.
type Link struct {
	HostDev, NSDev string
	HostIP, NSIP   string
	t              testing.TB
}

// Skip skips t, with the reason, when it cannot make namespaces: not root, or no `ip netns`.
func Skip(t testing.TB) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("network namespaces need Linux")
	}
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("`ip` (iproute2) is not installed")
	}
	if out, err := exec.Command("ip", "netns", "list").CombinedOutput(); err != nil {
		t.Skipf("`ip netns` is unavailable: %v %s", err, out)
	}
}

func ip(args ...string) error {
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// New makes a namespace with its loopback up (skipping t when it cannot: Skip), deleted when the
// test ends with every veth pair in it.
func New(t testing.TB) *NS {
	t.Helper()
	Skip(t)
	ns := &NS{t: t}
	for range 10 {
		_, _ = rand.Read(ns.id[:])
		ns.Name = fmt.Sprintf("gwnf%02x%02x", ns.id[0], ns.id[1])
		if err := ip("netns", "add", ns.Name); err == nil {
			t.Cleanup(func() {
				for i := range ns.links() {
					_ = ip("link", "del", ns.hostDev(i)) // deletes its peer too
				}
				_ = ip("netns", "del", ns.Name)
			})
			if err := ip("-n", ns.Name, "link", "set", "lo", "up"); err != nil {
				t.Fatal(err)
			}
			return ns
		}
	}
	t.Fatal("could not make a network namespace")
	return nil
}

func (ns *NS) links() int { ns.mu.Lock(); defer ns.mu.Unlock(); return ns.n }

func (ns *NS) hostDev(i int) string { return fmt.Sprintf("%sh%d", ns.Name, i) }

// Link adds a veth pair on a /24 of its own, 10.A.B.0/24 with A in 64..127 from the namespace's
// random id and B its own: host end .1, namespace end .2.
func (ns *NS) Link() *Link {
	ns.t.Helper()
	ns.mu.Lock()
	i := ns.n
	ns.n++
	ns.mu.Unlock()
	a, b := 64+int(ns.id[0])%64, (int(ns.id[1])+i*37)%256
	l := &Link{HostDev: ns.hostDev(i), NSDev: fmt.Sprintf("%sn%d", ns.Name, i),
		HostIP: fmt.Sprintf("10.%d.%d.1", a, b), NSIP: fmt.Sprintf("10.%d.%d.2", a, b), t: ns.t}
	for _, args := range [][]string{
		{"link", "add", l.HostDev, "type", "veth", "peer", "name", l.NSDev},
		{"link", "set", l.NSDev, "netns", ns.Name},
		{"addr", "add", l.HostIP + "/24", "dev", l.HostDev},
		{"link", "set", l.HostDev, "up"},
		{"-n", ns.Name, "addr", "add", l.NSIP + "/24", "dev", l.NSDev},
		{"-n", ns.Name, "link", "set", l.NSDev, "up"},
	} {
		if err := ip(args...); err != nil {
			ns.t.Fatal(err)
		}
	}
	return l
}

// Cut takes the host end down: nothing passes, no socket is closed.
func (l *Link) Cut() {
	if err := ip("link", "set", l.HostDev, "down"); err != nil {
		l.t.Error(err)
	}
}

// Heal brings the host end up again (its address and route come back with it).
func (l *Link) Heal() {
	if err := ip("link", "set", l.HostDev, "up"); err != nil {
		l.t.Error(err)
	}
}

// Command is name run inside the namespace (`ip netns exec`, which execs it: the process's pid
// is name's own).
func (ns *NS) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// DialContext opens a connection from inside the namespace: the socket is made on a thread
// switched into it, and stays in it once the thread is switched back. It fits
// websocket.Dialer.NetDialContext.
func (ns *NS) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	self, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		return nil, err
	}
	defer self.Close()
	target, err := os.Open("/var/run/netns/" + ns.Name)
	if err != nil {
		return nil, err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return nil, err
	}
	c, dialErr := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread is in the wrong namespace: let it die with the goroutine (no UnlockOSThread).
		runtime.LockOSThread()
		panic(fmt.Sprintf("netns: cannot switch back: %v", err))
	}
	return c, dialErr
}
