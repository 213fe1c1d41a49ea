// Command kfakeserver runs an in-memory Kafka-protocol broker (franz-go's kfake) on its own, for
// scripts whose gateway node processes need a Kafka broker without a Kafka server: the Node tests
// of scripts/test-js.sh, the browser tests of scripts/test-browser.sh. Go tests start kfake in
// their own process instead (internal/nodetest.Brokers).
//
//	go build -o /tmp/kfakeserver ./internal/kfakeserver
//	/tmp/kfakeserver -addr 127.0.0.1:0    # prints the address it listens on, one line
//
// It prints that address (GATEWAY_KAFKA_BROKERS for the nodes) on stdout once listening, and
// runs until SIGINT or SIGTERM (with -stdin, also until its stdin ends: a script that dies then
// takes it along). It is a test tool under internal/: never part of the gateway binary.
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/twmb/franz-go/pkg/kfake"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "host:port to listen on (port 0: any free port)")
	stdin := flag.Bool("stdin", false, "also stop when stdin ends")
	flag.Parse()
	host, port, err := net.SplitHostPort(*addr)
	if err != nil {
		fail(err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		fail(fmt.Errorf("port %q: %v", port, err))
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(p),
		kfake.ListenFn(func(network, a string) (net.Listener, error) {
			_, ap, _ := net.SplitHostPort(a)
			return net.Listen(network, net.JoinHostPort(host, ap))
		}))
	if err != nil {
		fail(err)
	}
	defer c.Close()
	for _, a := range c.ListenAddrs() {
		fmt.Println(a)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	if *stdin {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			stop <- syscall.SIGTERM
		}()
	}
	<-stop
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "kfakeserver:", err)
	os.Exit(2)
}
