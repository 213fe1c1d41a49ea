// Command wsbench is a load tool for the WebSocket gateway: it opens N connections, subscribes
// them to a pattern of channels, publishes at a fixed rate through POST /api/publish and
// reports connections, deliveries/s, loss, latency percentiles from the publish time,
// disconnects by code and, given the server's PID, its resident memory and CPU.
//
//	wsbench -url http://127.0.0.1:8080 -secret $GATEWAY_JWT_SECRET -api-key $GATEWAY_API_KEY \
//	        -conns 1000 -channels 1 -rate 50 -duration 10s -pid $(pgrep -n gateway)
//	wsbench -conns 10000 -channels 0 -idle -duration 20s -secret ... -pid ...
//
// It contacts only the host of -url. Every phase is bounded: it stops by itself after the
// connect budget, -duration and -grace (or -timeout), and on SIGINT/SIGTERM it reports what it
// has. It raises its own RLIMIT_NOFILE to the hard limit.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	os.Exit(mainErr())
}

func mainErr() int {
	o, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "wsbench:", err)
		return 2
	}
	limit, err := raiseNoFile()
	if err != nil {
		fmt.Fprintln(os.Stderr, "wsbench: raising RLIMIT_NOFILE:", err)
	} else if need := uint64(o.Conns) + uint64(o.Publishers) + 64; limit < need {
		fmt.Fprintf(os.Stderr, "wsbench: -conns %d needs %d file descriptors; the hard limit is %d (raise it with ulimit -Hn as root)\n", o.Conns, need, limit)
		return 2
	}
	if !o.Quiet {
		o.Progress = os.Stderr
	}
	if o.SourceIPs > 0 {
		fmt.Fprintf(os.Stderr, "wsbench: source addresses 127.0.0.2 .. over %d addresses\n", o.SourceIPs)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// A watchdog beyond run's own cap: the tool exits by itself whatever happens.
	watchdog := time.AfterFunc(o.Timeout+15*time.Second, func() {
		fmt.Fprintln(os.Stderr, "wsbench: watchdog: run did not end in time; exiting")
		os.Exit(3)
	})
	defer watchdog.Stop()
	rep, err := run(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "wsbench:", err)
		return 1
	}
	printTable(os.Stdout, rep)
	if o.JSON != "" {
		if err := writeJSON(o.JSON, rep); err != nil {
			fmt.Fprintln(os.Stderr, "wsbench: writing -json:", err)
			return 1
		}
	}
	if rep.Subscribed == 0 {
		fmt.Fprintln(os.Stderr, "wsbench: no connection subscribed")
		return 1
	}
	return 0
}
