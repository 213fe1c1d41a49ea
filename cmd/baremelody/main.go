// Command baremelody is the reference point of the performance table (docs/performance.md): a
// WebSocket fan-out server of about a hundred lines on melody alone, with no broker, no
// authentication, no positions, history or presence. It speaks just enough of the gateway's
// protocol for cmd/wsbench to measure it like a gateway node. GET /ws upgrades (any Authorization
// header is ignored) and sends {"type":"welcome"}. A {"type":"subscribe","id":…,"channel":…}
// frame joins the channel (one per connection) and is answered {"type":"subscribed",…}.
// POST /api/publish with {"channel":…,"data":…} and "Authorization: Bearer <-api-key>" sends
// {"type":"message","channel":…,"data":…} to every connection on the channel through melody's
// BroadcastMultiple (one write queue and one write goroutine per connection). GET /readyz
// answers 200. It stops on SIGINT or SIGTERM.
//
//	go build -o bin/ ./cmd/baremelody && bin/baremelody -addr 127.0.0.1:8090 -api-key K
//
// With -watermill, POST /api/publish goes the way the gateway's design card has it go: the HTTP
// handler publishes the message into a Watermill router through Watermill's own in-process
// pub/sub (gochannel, blocking until the subscriber acked), the router's handler broadcasts it
// through melody, and the HTTP answer waits for that ack, as the gateway's Inbox.Submit does. No
// middleware, or with -middleware Watermill's stock Recoverer and Retry. This is the floor the
// design imposes on the publish path: what it costs above bare melody is Watermill's, not ours.
//
// With -broker gochannel or -broker redis (implying -watermill), the message makes the two trips
// through the router that the design card gives a gateway node, whose clients may be on another
// node: the HTTP handler submits it to the router as above; the router's first handler
// ("inbound") publishes it to a broker topic and acks once the broker accepted it, which is when
// the HTTP answer goes; the router's second handler ("deliver"), subscribed to that topic,
// broadcasts it through melody. The broker is Watermill's own: a second gochannel (publish does
// not wait for the subscriber), or Redis Streams through watermill-redisstream (one stream of
// its own, -redis-addr, read in fan-out mode). This is the floor of the design with a broker:
// nothing of the gateway's (no authentication of clients, positions, history, middleware,
// presence, lifecycle events), only melody, Watermill's router both ways and the broker.
//
// What it costs beside the gateway, on the same machine in the same minutes, says how much of
// the gateway's cost is melody's own floor and how this day's machine compares with another's.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	wmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/olahol/melody"
	goredis "github.com/redis/go-redis/v9"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8090", "listen `address`")
	apiKey := flag.String("api-key", "", "bearer `key` of POST /api/publish (required)")
	wm := flag.Bool("watermill", false, "publish through a Watermill router (gochannel pub/sub) instead of broadcasting in the HTTP handler")
	mw := flag.Bool("middleware", false, "with -watermill: the router's handler behind Watermill's Recoverer and Retry")
	broker := flag.String("broker", "", "`gochannel` or `redis`: two trips through the router with this broker between them (implies -watermill)")
	redisAddr := flag.String("redis-addr", "127.0.0.1:6379", "Redis `address` of -broker redis")
	flag.Parse()
	if *apiKey == "" {
		fmt.Fprintln(os.Stderr, "baremelody: -api-key is required")
		os.Exit(2)
	}
	s := newServer(*apiKey)
	if *broker != "" {
		b, err := newBroker(*broker, *redisAddr)
		if err != nil {
			fmt.Fprintln(os.Stderr, "baremelody:", err)
			os.Exit(2)
		}
		s.broker = b
		*wm = true
	}
	if *wm {
		if err := s.startWatermill(*mw); err != nil {
			log.Fatal("baremelody: ", err)
		}
	}
	defer s.close()
	srv := &http.Server{Addr: *addr, Handler: s.mux(), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() { // stopped by SIGINT/SIGTERM: Close ends ListenAndServe
		defer close(done)
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
		<-sig
		_ = srv.Close()
	}()
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal("baremelody: ", err)
	}
	<-done
}

// server is the channel index over melody.
type server struct {
	m      *melody.Melody
	apiKey string

	mu       sync.RWMutex
	channels map[string]map[*melody.Session]struct{}

	// With startWatermill: where publish sends messages, and the router's end.
	pubsub *gochannel.GoChannel
	broker *broker // with -broker: between the router's two handlers
	stop   context.CancelFunc
	ended  chan struct{} // closed when the router's Run returned
}

// broker is what the router's inbound handler publishes to and its deliver handler consumes.
type broker struct {
	pub   message.Publisher
	sub   message.Subscriber
	topic string
	close func()
}

// newBroker makes the broker of -broker: gochannel, or Redis Streams on one stream of its own
// (deleted on close).
func newBroker(kind, redisAddr string) (*broker, error) {
	logger := watermill.NopLogger{}
	switch kind {
	case "gochannel":
		ps := gochannel.NewGoChannel(gochannel.Config{}, logger)
		return &broker{pub: ps, sub: ps, topic: "channels", close: func() { _ = ps.Close() }}, nil
	case "redis":
		rdb := goredis.NewClient(&goredis.Options{Addr: redisAddr})
		if err := rdb.Ping(context.Background()).Err(); err != nil {
			return nil, fmt.Errorf("redis %s: %w", redisAddr, err)
		}
		pub, err := redisstream.NewPublisher(redisstream.PublisherConfig{Client: rdb}, logger)
		if err != nil {
			return nil, err
		}
		// The stream is the server's own (a new name): read it from its start.
		sub, err := redisstream.NewSubscriber(redisstream.SubscriberConfig{Client: rdb, FanOutOldestId: "0"}, logger)
		if err != nil {
			return nil, err
		}
		topic := "baremelody-" + watermill.NewShortUUID()
		return &broker{pub: pub, sub: sub, topic: topic, close: func() {
			_ = rdb.Del(context.Background(), topic).Err()
			_ = sub.Close()
			_ = pub.Close() // closes rdb too
		}}, nil
	}
	return nil, fmt.Errorf("-broker %q: want gochannel or redis", kind)
}

// The Watermill topic of published messages, and the metadata key of their channel.
const (
	wmTopic   = "publish"
	wmChannel = "channel"
)

// startWatermill makes publish go through a Watermill router: gochannel pub/sub (Publish blocks
// until the handler acked) into one consumer handler that broadcasts through melody; with
// middleware, behind Watermill's Recoverer and Retry. The router runs until close.
func (s *server) startWatermill(middleware bool) error {
	logger := watermill.NopLogger{}
	s.pubsub = gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, logger)
	r, err := message.NewRouter(message.RouterConfig{}, logger)
	if err != nil {
		return err
	}
	if middleware {
		r.AddMiddleware(wmw.Recoverer, wmw.Retry{MaxRetries: 3, InitialInterval: 10 * time.Millisecond, Multiplier: 2}.Middleware)
	}
	deliver := func(msg *message.Message) error {
		s.broadcast(msg.Metadata.Get(wmChannel), msg.Payload)
		return nil
	}
	if b := s.broker; b != nil {
		r.AddConsumerHandler("inbound", wmTopic, s.pubsub, func(msg *message.Message) error {
			return b.pub.Publish(b.topic, msg)
		})
		r.AddConsumerHandler("deliver", b.topic, b.sub, deliver)
	} else {
		r.AddConsumerHandler("broadcast", wmTopic, s.pubsub, deliver)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stop, s.ended = cancel, make(chan struct{})
	go func() { // ends with close: the context's end closes the router
		defer close(s.ended)
		if err := r.Run(ctx); err != nil {
			log.Print("baremelody: router: ", err)
		}
	}()
	<-r.Running()
	return nil
}

// close stops the router started by startWatermill, if any, and waits for it.
func (s *server) close() {
	if s.stop == nil {
		return
	}
	s.stop()
	<-s.ended
	_ = s.pubsub.Close()
	if s.broker != nil {
		s.broker.close()
	}
}

const chanKey = "channel"

func newServer(apiKey string) *server {
	s := &server{m: melody.New(), apiKey: apiKey, channels: map[string]map[*melody.Session]struct{}{}}
	s.m.Config.MaxMessageSize = 64 << 10
	s.m.HandleConnect(func(ss *melody.Session) { _ = ss.Write([]byte(`{"type":"welcome"}`)) })
	s.m.HandleMessage(s.message)
	s.m.HandleDisconnect(s.leave)
	return s
}

func (s *server) mux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws", func(w http.ResponseWriter, r *http.Request) { _ = s.m.HandleRequest(w, r) })
	mux.HandleFunc("POST /api/publish", s.publish)
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	return mux
}

// message handles a client frame: only subscribe (to one channel per connection) is understood.
func (s *server) message(ss *melody.Session, p []byte) {
	var f struct{ Type, ID, Channel string }
	if json.Unmarshal(p, &f) != nil || f.Type != "subscribe" || f.Channel == "" {
		_ = ss.Write([]byte(`{"type":"error","code":"bad_request"}`))
		return
	}
	s.leave(ss)
	ss.Set(chanKey, f.Channel)
	s.mu.Lock()
	set := s.channels[f.Channel]
	if set == nil {
		set = map[*melody.Session]struct{}{}
		s.channels[f.Channel] = set
	}
	set[ss] = struct{}{}
	s.mu.Unlock()
	_ = ss.Write([]byte(`{"type":"subscribed","id":` + strconv.Quote(f.ID) + `,"channel":` + strconv.Quote(f.Channel) + `}`))
}

// leave removes the session from its channel.
func (s *server) leave(ss *melody.Session) {
	v, ok := ss.Get(chanKey)
	if !ok {
		return
	}
	ch := v.(string)
	s.mu.Lock()
	if set := s.channels[ch]; set != nil {
		delete(set, ss)
		if len(set) == 0 {
			delete(s.channels, ch)
		}
	}
	s.mu.Unlock()
}

// publish sends the request's data to the channel's connections.
func (s *server) publish(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+s.apiKey {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	var req struct {
		Channel string          `json:"channel"`
		Data    json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil || req.Channel == "" || len(req.Data) == 0 {
		http.Error(w, "want {\"channel\":…,\"data\":…}", http.StatusBadRequest)
		return
	}
	msg := make([]byte, 0, len(req.Data)+len(req.Channel)+40)
	msg = append(msg, `{"type":"message","channel":`...)
	msg = strconv.AppendQuote(msg, req.Channel)
	msg = append(msg, `,"data":`...)
	msg = append(msg, req.Data...)
	msg = append(msg, '}')
	if s.pubsub != nil {
		m := message.NewMessage(watermill.NewUUID(), msg)
		m.Metadata.Set(wmChannel, req.Channel)
		if err := s.pubsub.Publish(wmTopic, m); err != nil { // returns once the handler acked
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
	} else {
		s.broadcast(req.Channel, msg)
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, "{}\n")
}

// broadcast sends msg to the channel's connections.
func (s *server) broadcast(channel string, msg []byte) {
	s.mu.RLock()
	set := s.channels[channel]
	sessions := make([]*melody.Session, 0, len(set))
	for ss := range set {
		sessions = append(sessions, ss)
	}
	s.mu.RUnlock()
	_ = s.m.BroadcastMultiple(msg, sessions)
}
