package deploy

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/build"
	"go/parser"
	"go/token"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/wsgateway/gateway/configs"
)

// The files under test, relative to the repository root (the parent of this package).
const (
	repoRoot         = ".."
	composePath      = "docker-compose.yml"
	dockerfilePath   = "Dockerfile"
	dockerignorePath = ".dockerignore"
	nginxConfPath    = "deploy/nginx.conf"
	gatewayMain      = "./cmd/gateway"
	echoMain         = "./examples/echo" // the example service that docker-compose.yml runs
	nginxConfTarget  = "/etc/nginx/nginx.conf"
)

// httpShutdownTimeout is how long cmd/gateway waits for the HTTP server after a drain
// (gateway.Serve); a stop grace period must cover the drain plus this.
const httpShutdownTimeout = 5 * time.Second

// composeStopGrace is compose's stop_grace_period when none is set.
const composeStopGrace = 10 * time.Second

// ----------------------------------------------------------------------------- the tests

// TestConfigEnvNames guards the reflection the other tests rely on: the names it derives from
// configs.Config must include those that PROTOCOL.md section 1 promises.
func TestConfigEnvNames(t *testing.T) {
	names := gatewayEnvNames()
	for _, want := range []string{
		"GATEWAY_ADDR", "GATEWAY_NODE_ID", "GATEWAY_BROKER", "GATEWAY_NATS_URL", "GATEWAY_REDIS_ADDR",
		"GATEWAY_KAFKA_BROKERS", "GATEWAY_TOPIC_PREFIX", "GATEWAY_JWT_SECRET", "GATEWAY_JWT_PUBLIC_KEY",
		"GATEWAY_API_KEY", "GATEWAY_ALLOW_ANONYMOUS", "GATEWAY_ALLOWED_ORIGINS", "GATEWAY_DRAIN_PERIOD",
		"GATEWAY_LOG_FORMAT", "GATEWAY_JETSTREAM_MAX_AGE", "GATEWAY_ROUTER_DEDUPE_WINDOW",
	} {
		if !names[want] {
			t.Errorf("reflection over configs.Config does not find %s (found %d names)", want, len(names))
		}
	}
	if names["GATEWAY_DEVELOPMENT"] {
		t.Error(`configs.Config.Development is env:"-" and must not be a variable`)
	}
}

// TestComposeVariablesHaveDefaults: the usage at the top of the compose file starts a cluster
// with no variable set, so every ${VAR} in it needs a default.
func TestComposeVariablesHaveDefaults(t *testing.T) {
	var doc any
	if err := yaml.Unmarshal(readFile(t, composePath), &doc); err != nil {
		t.Fatalf("%s: %v", composePath, err)
	}
	walkStrings(doc, "", func(where, s string) {
		if _, err := interpolate(s); err != nil {
			t.Errorf("%s: %s: %v", composePath, where, err)
		}
	})
}

// TestComposeServices checks what every service needs, whatever it is.
func TestComposeServices(t *testing.T) {
	p := loadCompose(t)
	if len(p.Services) == 0 {
		t.Fatalf("%s defines no service", composePath)
	}
	for _, name := range p.names() {
		s := p.Services[name]
		if s.Image == "" && s.Build == nil {
			t.Errorf("service %s has neither image nor build", name)
		}
		if s.Healthcheck == nil || s.Healthcheck.Disable || len(s.Healthcheck.Test.items) == 0 || s.Healthcheck.Test.items[0] == "NONE" {
			t.Errorf("service %s has no healthcheck", name)
		}
		for dep, cond := range s.DependsOn {
			d, ok := p.Services[dep]
			if !ok {
				t.Errorf("service %s depends on %s, which is not defined", name, dep)
				continue
			}
			for _, ctx := range s.contexts() {
				if !d.activeIn(ctx) {
					t.Errorf("service %s (profile %q) depends on %s, which that profile does not start", name, ctx, dep)
				}
			}
			if cond == "service_healthy" && d.Healthcheck == nil {
				t.Errorf("service %s waits for %s to be healthy, but %s has no healthcheck", name, dep, dep)
			}
		}
	}
	// Within a profile a host name must mean one service, or the load balancer and the gateways
	// would reach a random one.
	for _, ctx := range p.profiles() {
		seen := map[string]string{}
		for _, name := range p.names() {
			s := p.Services[name]
			if !s.activeIn(ctx) {
				continue
			}
			for _, h := range s.hostNames() {
				if other, dup := seen[h]; dup && other != name {
					t.Errorf("profile %q: host name %s is both %s and %s", ctx, h, other, name)
				}
				seen[h] = name
			}
		}
	}
}

// TestComposeGateways checks each gateway service against the code: its image, its command, its
// environment (names, values, configs.Load), its broker, its healthcheck and its stop grace period.
func TestComposeGateways(t *testing.T) {
	p := loadCompose(t)
	df := p.df
	gwBuild := df.buildStage(t)
	gws := p.gateways()
	if len(gws) == 0 {
		t.Fatalf("%s has no gateway service", composePath)
	}
	valid := gatewayEnvNames()
	nodeIDs := map[string]string{}
	built := p.builtImages()
	for _, name := range gws {
		s := p.Services[name]
		t.Run(name, func(t *testing.T) {
			// Image: built from the repository's Dockerfile, or the image such a build tags; a
			// stage (build target) whose image holds the gateway, started in exec form.
			st, args := serviceCommand(t, p, s, built, gwBuild, "gateway")
			if err := checkGatewayArgs(args, s); err != nil {
				t.Error(err)
			}

			// Environment: only GATEWAY_* names that configs reads, values with defaults.
			env, environ := s.interpolatedEnv(t)
			checkEnvNames(t, env, valid)
			broker := env["GATEWAY_BROKER"]
			if !slices.Contains(brokerNames(), broker) {
				t.Errorf("GATEWAY_BROKER=%q: want one of %v, set explicitly", broker, brokerNames())
			}

			// The node would start with this environment.
			cfg, err := configs.Load("", environ)
			if err != nil {
				t.Fatalf("configs.Load with the service's environment: %v", err)
			}
			if cfg.Development {
				t.Error("configs.Load ran in development mode")
			}
			if env["GATEWAY_NODE_ID"] == "" {
				t.Error("GATEWAY_NODE_ID is not set: each replica needs a stable, distinct id")
			} else if other, dup := nodeIDs[cfg.NodeID]; dup {
				t.Errorf("GATEWAY_NODE_ID %q is also %s's", cfg.NodeID, other)
			}
			nodeIDs[cfg.NodeID] = name

			checkBrokerAddress(t, p, s, cfg)

			// Healthcheck: /readyz on the port the node listens on.
			_, port, err := net.SplitHostPort(cfg.Addr)
			if err != nil {
				t.Fatalf("GATEWAY_ADDR %q: %v", cfg.Addr, err)
			}
			hc := s.Healthcheck
			if hc == nil {
				hc = st.img.healthcheck
			}
			if hc == nil {
				t.Error("no healthcheck, neither in the service nor in the Dockerfile")
			} else {
				u := healthURL(hc.Test.items)
				if u == nil || u.Path != "/readyz" || u.Port() != port || !isLoopback(u.Hostname()) {
					t.Errorf("healthcheck %q does not ask http://127.0.0.1:%s/readyz", hc.Test.items, port)
				}
				if tool := hc.tool(); tool != "" && !df.hasTool(st, tool) {
					t.Errorf("healthcheck runs %s, which the image of stage %s (FROM %s) does not have", tool, st.label(), st.root())
				}
			}
			if !slices.Contains(st.img.expose, port) && len(s.Expose) == 0 {
				t.Errorf("port %s is neither in the Dockerfile's EXPOSE %v nor in expose", port, st.img.expose)
			}

			// Stop grace period: covers the drain (gateway.Drain waits up to period + write
			// timeout + 1s), then the HTTP server's shutdown.
			need := cfg.Drain.Period + cfg.WebSocket.WriteTimeout + time.Second + httpShutdownTimeout
			grace := stopGrace(t, s)
			if grace < need {
				t.Errorf("stop_grace_period %v is shorter than the drain can take (%v = drain period %v + write timeout %v + 1s + HTTP shutdown %v): the node would be killed mid-drain",
					grace, need, cfg.Drain.Period, cfg.WebSocket.WriteTimeout, httpShutdownTimeout)
			}
		})
	}
}

// TestComposeEchoServices checks each example service (examples/echo) against the code: the
// Dockerfile stage that holds its binary, flags echo defines, its environment (GATEWAY_* names
// that configs reads, configs.Load, a broker that a separate process can share), its broker, a
// healthcheck on the address echo is told to serve /healthz on, its stop grace period and restart.
func TestComposeEchoServices(t *testing.T) {
	p := loadCompose(t)
	df := p.df
	eb := df.buildOf(t, echoMain)
	echoes := p.echoes()
	if len(echoes) == 0 {
		t.Fatalf("%s runs no echo service (%s, the example service)", composePath, echoMain)
	}
	flags := echoFlags(t)
	healthPath := echoHealthPath(t)
	valid := gatewayEnvNames()
	built := p.builtImages()
	for _, name := range echoes {
		s := p.Services[name]
		t.Run(name, func(t *testing.T) {
			// Image: a stage (build target) of the repository's Dockerfile that holds echo,
			// started in exec form, with flags examples/echo defines.
			st, args := serviceCommand(t, p, s, built, eb, "echo")
			healthAddr, err := checkEchoArgs(args, s, flags)
			if err != nil {
				t.Error(err)
			}

			// Environment: the gateway's settings, which echo reads with configs.Load.
			env, environ := s.interpolatedEnv(t)
			checkEnvNames(t, env, valid)
			cfg, err := configs.Load("", environ)
			if err != nil {
				t.Fatalf("configs.Load with the service's environment: %v", err)
			}
			if cfg.Development {
				t.Error("configs.Load ran in development mode: set GATEWAY_BROKER like the gateways'")
			}
			if cfg.Broker == configs.BrokerMemory || !slices.Contains(brokerNames(), cfg.Broker) {
				t.Fatalf("GATEWAY_BROKER=%q: echo, a separate process, needs a broker it shares with the gateways (it exits 2 on memory)", env["GATEWAY_BROKER"])
			}
			checkBrokerAddress(t, p, s, cfg)

			// Healthcheck: /healthz on the address given with -health-addr.
			hc := s.Healthcheck
			if hc == nil {
				hc = st.img.healthcheck
			}
			switch {
			case hc == nil:
				t.Error("no healthcheck, neither in the service nor in the Dockerfile")
			case healthAddr == "":
				t.Errorf("no -health-addr in %q: echo serves no %s for the healthcheck %q", args, healthPath, hc.Test.items)
			default:
				host, port, err := net.SplitHostPort(healthAddr)
				if err != nil {
					t.Fatalf("-health-addr %q: %v", healthAddr, err)
				}
				if host != "" && host != "0.0.0.0" && host != "::" && !isLoopback(host) {
					t.Errorf("-health-addr %s: the healthcheck runs in the container and asks 127.0.0.1", healthAddr)
				}
				if u := healthURL(hc.Test.items); u == nil || u.Path != healthPath || u.Port() != port || !isLoopback(u.Hostname()) {
					t.Errorf("healthcheck %q does not ask http://127.0.0.1:%s%s (-health-addr %s)", hc.Test.items, port, healthPath, healthAddr)
				}
				if tool := hc.tool(); tool != "" && !df.hasTool(st, tool) {
					t.Errorf("healthcheck runs %s, which the image of stage %s (FROM %s) does not have", tool, st.label(), st.root())
				}
			}

			// Stop grace period: SIGTERM stops the consumer, the broker client and the health
			// endpoint; keep at least compose's default for that.
			grace := stopGrace(t, s)
			if grace < composeStopGrace {
				t.Errorf("stop_grace_period %v is below compose's default %v: echo would be killed while it closes its broker client", grace, composeStopGrace)
			}
			// echo exits 1 when the broker ends its subscription: without a restart policy the
			// profile would lose its service for good.
			if r, _ := interpolate(s.Restart); r == "" || r == "no" {
				t.Errorf("restart %q: echo exits 1 when the broker ends its subscription; restart it (on-failure, unless-stopped)", s.Restart)
			}
		})
	}
}

// TestComposeProfiles checks each profile as a cluster: one broker and consistent settings for
// its gateways, the example service on the same broker and topic prefix (unless the broker is the
// embedded one), a load balancer in front of more than one gateway, and nginx.conf naming exactly them.
func TestComposeProfiles(t *testing.T) {
	p := loadCompose(t)
	conf := loadNginx(t)
	for _, ctx := range p.profiles() {
		var gws, lbs, echoes []string
		for _, name := range p.gateways() {
			if p.Services[name].activeIn(ctx) {
				gws = append(gws, name)
			}
		}
		for _, name := range p.echoes() {
			if p.Services[name].activeIn(ctx) {
				echoes = append(echoes, name)
			}
		}
		for _, name := range p.names() {
			if s := p.Services[name]; s.activeIn(ctx) && s.isLoadBalancer() {
				lbs = append(lbs, name)
			}
		}
		if len(gws) == 0 {
			if len(echoes) > 0 {
				t.Errorf("profile %q runs %v but no gateway: nothing would reach them", ctx, echoes)
			}
			continue
		}
		t.Run("profile="+ctx, func(t *testing.T) {
			// One cluster: the same broker, prefix and secrets on every node.
			cfgs := map[string]*configs.Config{}
			for _, name := range gws {
				_, environ := p.Services[name].interpolatedEnv(t)
				cfg, err := configs.Load("", environ)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				cfgs[name] = cfg
			}
			first := cfgs[gws[0]]
			for _, name := range gws[1:] {
				c := cfgs[name]
				for _, f := range []struct{ what, a, b string }{
					{"GATEWAY_BROKER", first.Broker, c.Broker},
					{"broker address", brokerAddress(first), brokerAddress(c)},
					{"GATEWAY_TOPIC_PREFIX", first.TopicPrefix, c.TopicPrefix},
					{"GATEWAY_JWT_SECRET", first.Auth.JWTSecret, c.Auth.JWTSecret},
					{"GATEWAY_API_KEY", first.API.Key, c.API.Key},
				} {
					if f.a != f.b {
						t.Errorf("%s and %s differ in %s (%q, %q): one profile is one cluster", gws[0], name, f.what, f.a, f.b)
					}
				}
			}
			if first.Broker == configs.BrokerMemory && len(gws) > 1 {
				t.Errorf("%d gateways %v on the memory broker: it lives inside one process and cannot cluster", len(gws), gws)
			}

			// The example service consumes what these gateways publish: same broker, same
			// topic prefix, same broker settings (a JetStream stream or Kafka topic is created
			// by whoever comes first), and signs its replies with the keys they verify.
			switch {
			case first.Broker == configs.BrokerMemory && len(echoes) > 0:
				t.Errorf("%v next to %s on the memory broker: its broker lives inside %s, no other process reaches it", echoes, gws[0], gws[0])
			case first.Broker != configs.BrokerMemory && len(echoes) == 0:
				t.Errorf("profile %q has no echo service (%s): every cluster profile runs the example service", ctx, echoMain)
			}
			for _, name := range echoes {
				_, environ := p.Services[name].interpolatedEnv(t)
				c, err := configs.Load("", environ)
				if err != nil {
					t.Errorf("%s: %v", name, err)
					continue
				}
				for _, f := range []struct {
					what string
					a, b any
				}{
					{"GATEWAY_BROKER", first.Broker, c.Broker},
					{"broker address", brokerAddress(first), brokerAddress(c)},
					{"GATEWAY_TOPIC_PREFIX", first.TopicPrefix, c.TopicPrefix},
					{"broker settings (GATEWAY_NATS_*, _JETSTREAM_*, _REDIS_*, _KAFKA_*)",
						[]any{first.NATS, first.JetStream, first.Redis, first.Kafka}, []any{c.NATS, c.JetStream, c.Redis, c.Kafka}},
					{"GATEWAY_ROUTER_SIGNING_KEYS", first.Router.SigningKeys, c.Router.SigningKeys},
				} {
					if !reflect.DeepEqual(f.a, f.b) {
						t.Errorf("%s and its profile's gateways (%s) differ in %s (%v, %v): it would not serve their clients", name, gws[0], f.what, f.b, f.a)
					}
				}
			}

			if len(gws) == 1 && len(lbs) == 0 {
				// A single node is reached directly.
				_, port, _ := net.SplitHostPort(first.Addr)
				if !p.Services[gws[0]].publishes(port) {
					t.Errorf("%s is the only node of the profile and publishes no port to its %s", gws[0], port)
				}
				return
			}
			if len(lbs) != 1 {
				t.Fatalf("%d gateways %v need exactly one load balancer in the profile, found %v", len(gws), gws, lbs)
			}
			checkLoadBalancer(t, p, conf, ctx, lbs[0], gws, cfgs)
		})
	}
}

// TestComposeKafkaKRaft checks that every Kafka service is a complete single-node KRaft setup.
func TestComposeKafkaKRaft(t *testing.T) {
	p := loadCompose(t)
	for _, name := range p.names() {
		s := p.Services[name]
		if !strings.Contains(s.Image, "kafka") {
			continue
		}
		env, _ := s.interpolatedEnv(t)
		roles := strings.Split(env["KAFKA_PROCESS_ROLES"], ",")
		if !slices.Contains(roles, "broker") || !slices.Contains(roles, "controller") {
			t.Errorf("%s: KAFKA_PROCESS_ROLES=%q, want broker,controller", name, env["KAFKA_PROCESS_ROLES"])
		}
		for _, k := range []string{"KAFKA_NODE_ID", "CLUSTER_ID", "KAFKA_CONTROLLER_LISTENER_NAMES", "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "KAFKA_INTER_BROKER_LISTENER_NAME"} {
			if env[k] == "" {
				t.Errorf("%s: %s is not set", name, k)
			}
		}
		if env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] != "1" {
			t.Errorf("%s: KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR=%q: one node needs 1", name, env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"])
		}
		listeners := listenerMap(env["KAFKA_LISTENERS"])
		advertised := listenerMap(env["KAFKA_ADVERTISED_LISTENERS"])
		ctrl := env["KAFKA_CONTROLLER_LISTENER_NAMES"]
		voter := env["KAFKA_NODE_ID"] + "@"
		ctrlAddr, ok := listeners[ctrl]
		if !ok {
			t.Errorf("%s: KAFKA_LISTENERS %q has no %s listener", name, env["KAFKA_LISTENERS"], ctrl)
		} else {
			_, ctrlPort, _ := net.SplitHostPort(ctrlAddr)
			voters := env["KAFKA_CONTROLLER_QUORUM_VOTERS"]
			h, port, err := net.SplitHostPort(strings.TrimPrefix(voters, voter))
			if !strings.HasPrefix(voters, voter) || err != nil || port != ctrlPort || !slices.Contains(s.hostNames(), h) {
				t.Errorf("%s: KAFKA_CONTROLLER_QUORUM_VOTERS=%q, want %s<one of %v>:%s", name, voters, voter, s.hostNames(), ctrlPort)
			}
		}
		ib := env["KAFKA_INTER_BROKER_LISTENER_NAME"]
		if _, ok := advertised[ib]; !ok {
			t.Errorf("%s: the inter-broker listener %s is not advertised (%q)", name, ib, env["KAFKA_ADVERTISED_LISTENERS"])
		}
		for l := range advertised {
			if _, ok := listeners[l]; !ok {
				t.Errorf("%s: advertised listener %s is not in KAFKA_LISTENERS", name, l)
			}
			if !strings.Contains(env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"], l+":") {
				t.Errorf("%s: listener %s has no protocol in KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", name, l)
			}
		}
	}
}

// TestNginxConf checks the load balancer's configuration on its own: it proxies WebSockets.
func TestNginxConf(t *testing.T) {
	conf := loadNginx(t)
	httpBlock := conf.one(t, "http")
	upstreams := map[string]*directive{}
	for _, u := range httpBlock.all("upstream") {
		if len(u.args) != 1 {
			t.Fatalf("upstream with arguments %q", u.args)
		}
		upstreams[u.args[0]] = u
		if len(u.all("server")) == 0 {
			t.Errorf("upstream %s has no server", u.args[0])
		}
		resolving := false
		for _, s := range u.all("server") {
			resolving = resolving || slices.Contains(s.args, "resolve")
		}
		if resolving {
			if len(u.all("zone")) == 0 {
				t.Errorf("upstream %s resolves its servers but has no zone (nginx refuses that)", u.args[0])
			}
			if len(u.all("resolver")) == 0 && len(httpBlock.all("resolver")) == 0 {
				t.Errorf("upstream %s resolves its servers but no resolver is set", u.args[0])
			}
		}
	}
	servers := httpBlock.all("server")
	if len(servers) == 0 {
		t.Fatal("no server block in http")
	}
	proxied := 0
	for _, srv := range servers {
		for _, loc := range srv.all("location") {
			pp := loc.all("proxy_pass")
			if len(pp) == 0 {
				continue
			}
			proxied++
			target := strings.TrimPrefix(pp[0].arg(0), "http://")
			if _, ok := upstreams[target]; !ok {
				t.Errorf("location %q proxies to %q, which is not an upstream", loc.args, pp[0].arg(0))
			}
			if v := loc.inherited("proxy_http_version"); v == nil || v.arg(0) != "1.1" {
				t.Errorf("location %q: proxy_http_version 1.1 is needed for the WebSocket upgrade", loc.args)
			}
			headers := map[string]string{}
			for _, h := range loc.inheritedAll("proxy_set_header") {
				headers[strings.ToLower(h.arg(0))] = h.arg(1)
			}
			if headers["upgrade"] != "$http_upgrade" {
				t.Errorf("location %q: proxy_set_header Upgrade $http_upgrade is missing (have %q)", loc.args, headers["upgrade"])
			}
			if c := headers["connection"]; !connectionUpgrades(httpBlock, c) {
				t.Errorf("location %q: proxy_set_header Connection %q does not pass \"upgrade\" on for a WebSocket handshake", loc.args, c)
			}
			if v := loc.inherited("proxy_read_timeout"); v == nil {
				t.Errorf("location %q: proxy_read_timeout is the default 60s; set it well above the ping interval", loc.args)
			} else if d, err := nginxDuration(v.arg(0)); err != nil {
				t.Errorf("location %q: proxy_read_timeout: %v", loc.args, err)
			} else if d < 2*configs.DefaultPingInterval {
				t.Errorf("location %q: proxy_read_timeout %q is not well above the gateway's ping interval %v", loc.args, v.arg(0), configs.DefaultPingInterval)
			}
		}
	}
	if proxied == 0 {
		t.Error("no location proxies to the gateways")
	}
}

// TestDockerfile checks the images: static builds of ./cmd/gateway and ./examples/echo, run by a
// non-root user; the last stage (the default target) is the gateway's image, and the echo image
// is a stage of its own that the gateway's does not need.
func TestDockerfile(t *testing.T) {
	df := loadDockerfile(t)
	if len(df.stages) < 2 {
		t.Fatalf("%s has %d stage(s), want a multi-stage build", dockerfilePath, len(df.stages))
	}
	for _, b := range df.goBuilds() {
		if base := b.stage.root(); !strings.HasPrefix(base, "golang:") {
			t.Errorf("go build %s: stage %s is FROM %s, want golang:<go version>", b.pkg, b.stage.label(), base)
		} else {
			checkGoImage(t, strings.TrimPrefix(base, "golang:"))
		}
		if !b.cgoOff {
			t.Errorf("go build %s does not run with CGO_ENABLED=0 (the binary would not be static)", b.pkg)
		}
		if !b.trimpath {
			t.Errorf("go build %s lacks -trimpath", b.pkg)
		}
		if !strings.Contains(" "+b.ldflags+" ", " -s ") || !strings.Contains(" "+b.ldflags+" ", " -w ") {
			t.Errorf("go build %s -ldflags %q, want -s -w", b.pkg, b.ldflags)
		}
		if !slices.Contains([]string{gatewayMain, echoMain}, b.pkg) {
			t.Errorf("go build builds %q, want %s or %s", b.pkg, gatewayMain, echoMain)
		}
	}
	b := df.buildStage(t)

	final := df.final()
	if final == b.stage {
		t.Fatal("the final stage is the builder stage")
	}
	bin := df.gatewayBinary(t)
	if len(df.entrypoint) == 0 || df.entrypoint[0] != bin {
		t.Errorf("ENTRYPOINT %q (exec form) does not start %s", df.entrypoint, bin)
	}
	u := final.last("USER")
	if u == nil {
		t.Error("the final stage has no USER: the gateway would run as root")
	} else if user, _, _ := strings.Cut(strings.TrimSpace(u.args), ":"); user == "" || user == "root" || user == "0" {
		t.Errorf("USER %s is root", u.args)
	}
	_, port, _ := net.SplitHostPort(configs.DefaultAddr)
	if !slices.Contains(df.expose, port) {
		t.Errorf("EXPOSE %v lacks the default port %s", df.expose, port)
	}
	if df.healthcheck == nil && !df.finalIsShellless() {
		t.Error("the final image has a shell but no HEALTHCHECK on /readyz")
	}
	if hc := df.healthcheck; hc != nil {
		if df.finalIsShellless() {
			t.Errorf("HEALTHCHECK runs %q, but %s has no program to run it", hc.Test.items, final.base)
		}
		if u := healthURL(hc.Test.items); u == nil || u.Path != "/readyz" || u.Port() != port {
			t.Errorf("HEALTHCHECK %q does not ask /readyz on port %s", hc.Test.items, port)
		}
	}
	for _, in := range final.instrs {
		if in.cmd == "ENV" && strings.Contains(in.args, configs.EnvPrefix) {
			t.Errorf("ENV %s in the image: the image must set no GATEWAY_* variable (an auth or broker setting turns off the development mode of a bare `docker run`)", in.args)
		}
	}

	// The example service: its own target, which `docker build .` neither builds nor ships.
	eb := df.buildOf(t, echoMain)
	if bin := df.binaryIn(final, eb); bin != "" {
		t.Errorf("the gateway image (final stage) also holds the echo binary %s", bin)
	}
	if slices.Contains(df.needs(final), eb.stage) {
		t.Errorf("the final stage needs stage %s, which compiles %s: `docker build .` would compile the example too", eb.stage.label(), echoMain)
	}
	flags := echoFlags(t)
	healthPath := echoHealthPath(t)
	var targets []string
	for _, st := range df.stages {
		bin := df.binaryIn(st, eb)
		if st == final || st.name == "" || bin == "" || len(st.img.entrypoint) == 0 || st.img.entrypoint[0] != bin {
			continue
		}
		targets = append(targets, st.name)
		if path.Base(bin) == "echo" {
			t.Errorf("stage %s: the binary %s shadows the shell's echo; name it otherwise", st.name, bin)
		}
		if u := st.lastInChain("USER"); u == nil {
			t.Errorf("stage %s has no USER: echo would run as root", st.name)
		} else if user, _, _ := strings.Cut(strings.TrimSpace(u.args), ":"); user == "" || user == "root" || user == "0" {
			t.Errorf("stage %s: USER %s is root", st.name, u.args)
		}
		healthAddr, err := checkEchoArgs(slices.Concat(st.img.entrypoint[1:], st.img.cmd), nil, flags)
		if err != nil {
			t.Errorf("stage %s: %v", st.name, err)
		}
		if hc := st.img.healthcheck; hc != nil {
			_, port, _ := net.SplitHostPort(healthAddr)
			if u := healthURL(hc.Test.items); healthAddr == "" || u == nil || u.Path != healthPath || u.Port() != port {
				t.Errorf("stage %s: HEALTHCHECK %q does not ask %s on the -health-addr %q that CMD %q gives", st.name, hc.Test.items, healthPath, healthAddr, st.img.cmd)
			}
			if tool := hc.tool(); tool != "" && !df.hasTool(st, tool) {
				t.Errorf("stage %s: HEALTHCHECK runs %s, which its image (FROM %s) does not have", st.name, tool, st.root())
			}
		}
		for s := st; s != nil; s = s.parent {
			for _, in := range s.instrs {
				if in.cmd == "ENV" && strings.Contains(in.args, configs.EnvPrefix) {
					t.Errorf("stage %s: ENV %s: echo takes its GATEWAY_* settings from where it runs, like the gateways it serves", st.name, in.args)
				}
			}
		}
	}
	if len(targets) == 0 {
		t.Errorf("no named stage (a --target) has the ENTRYPOINT of the echo binary that go build %s writes", echoMain)
	}
}

// TestDockerignore checks that the build context keeps everything each `go build` of the
// Dockerfile (./cmd/gateway, ./examples/echo) reads.
func TestDockerignore(t *testing.T) {
	ig, err := parseDockerignore(string(readFile(t, dockerignorePath)))
	if err != nil {
		t.Fatalf("%s: %v", dockerignorePath, err)
	}
	builds := loadDockerfile(t).goBuilds()
	if len(builds) == 0 {
		t.Fatalf("%s has no go build", dockerfilePath)
	}
	for _, b := range builds {
		files, err := goSources(b.pkg)
		if err != nil {
			t.Fatal(err)
		}
		if len(files) < 5 {
			t.Fatalf("found only %d source files of %s: the import walk is broken", len(files), b.pkg)
		}
		for _, f := range append([]string{"go.mod", "go.sum"}, files...) {
			if ig.excludes(f) {
				t.Errorf("%s excludes %s, which go build %s needs", dockerignorePath, f, b.pkg)
			}
		}
	}
	for _, f := range []string{".git/HEAD", "docker-compose.yml", "deploy/nginx.conf", "configs/config_test.go", "clients/js/package.json", "examples/echo/echo_test.go"} {
		if !ig.excludes(f) {
			t.Errorf("%s does not exclude %s (not needed by the build; it only busts the cache)", dockerignorePath, f)
		}
	}
}

// ----------------------------------------------------------------------------- gateway checks

// checkGatewayArgs accepts the arguments that make cmd/gateway serve: none, or -config FILE with
// FILE mounted into the container.
func checkGatewayArgs(args []string, s *service) error {
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") {
			return fmt.Errorf("argument %q: cmd/gateway takes no positional arguments", a)
		}
		switch name {
		case "config":
			if !hasVal {
				if i+1 >= len(args) {
					return errors.New("-config without a file")
				}
				i++
				val = args[i]
			}
			if !mounts(s, val) {
				return fmt.Errorf("-config %s: no volume mounts that file", val)
			}
		case "check-config", "token":
			return fmt.Errorf("flag %s makes the gateway exit instead of serving", a)
		default:
			return fmt.Errorf("flag %s is not one of cmd/gateway's", a)
		}
	}
	return nil
}

// serviceCommand resolves the Dockerfile stage whose image service s runs (checking its build
// spec), checks that the entrypoint starts, in exec form, the binary that build b installs in
// that image, and returns the stage and the arguments the binary gets. what names the program.
func serviceCommand(t *testing.T, p *project, s *service, built map[string]bool, b *goBuild, what string) (*stage, []string) {
	t.Helper()
	checkBuildSpec(t, s, built)
	st, err := p.imageStage(s)
	if err != nil {
		t.Fatal(err)
	}
	bin := p.df.binaryIn(st, b)
	if bin == "" {
		t.Fatalf("runs the image of stage %s of %s, which holds no %s binary (go build %s): build.target must name the stage that copies it", st.label(), dockerfilePath, what, b.pkg)
	}
	entry := st.img.entrypoint
	if s.Entrypoint.set {
		if s.Entrypoint.shell {
			t.Errorf("entrypoint %q is in shell form: the %s would not be PID 1 and would miss SIGTERM", strings.Join(s.Entrypoint.items, " "), what)
		}
		entry = s.Entrypoint.items
	}
	if len(entry) == 0 || entry[0] != bin {
		t.Errorf("entrypoint %q does not start the %s binary %s that stage %s of %s installs", entry, what, bin, st.label(), dockerfilePath)
	}
	args := slices.Clone(entry[min(1, len(entry)):])
	if s.Command.set {
		return st, append(args, s.Command.items...)
	}
	return st, append(args, st.img.cmd...)
}

// stopGrace is the service's stop_grace_period, or compose's default.
func stopGrace(t *testing.T, s *service) time.Duration {
	t.Helper()
	if s.StopGracePeriod == "" {
		return composeStopGrace
	}
	v, err := interpolate(s.StopGracePeriod)
	grace := time.Duration(0)
	if err == nil {
		grace, err = time.ParseDuration(v)
	}
	if err != nil {
		t.Fatalf("stop_grace_period %q: %v", s.StopGracePeriod, err)
	}
	return grace
}

// checkBuildSpec checks that the service builds from the repository's Dockerfile, or runs an image
// that another service of the file builds so.
func checkBuildSpec(t *testing.T, s *service, built map[string]bool) {
	t.Helper()
	if s.Build != nil {
		ctx := filepath.Clean(s.Build.Context)
		if ctx != "." {
			t.Errorf("build context is %q, want the repository root %q", s.Build.Context, ".")
		}
		if f := s.Build.Dockerfile; f != "" && filepath.Clean(f) != dockerfilePath {
			t.Errorf("build dockerfile is %q, want %q", f, dockerfilePath)
		}
	} else if !built[s.Image] {
		t.Errorf("image %q is not built from %s by any service of %s", s.Image, dockerfilePath, composePath)
	}
}

// checkEnvNames checks that every name is a GATEWAY_* variable the configs package reads.
func checkEnvNames(t *testing.T, env map[string]string, valid map[string]bool) {
	t.Helper()
	for _, k := range sortedKeys(env) {
		if !strings.HasPrefix(k, configs.EnvPrefix) {
			t.Errorf("environment %s: the gateway's configuration reads only %s* variables", k, configs.EnvPrefix)
		} else if !valid[k] {
			t.Errorf("environment %s: not a variable of the configs package (see configs/config.go)", k)
		}
	}
}

// isLoopback reports whether host names the container itself.
func isLoopback(host string) bool {
	return host == "127.0.0.1" || host == "localhost" || host == "::1"
}

// mounts reports whether a volume of the service (nil: none) holds file.
func mounts(s *service, file string) bool {
	if s == nil {
		return false
	}
	for _, v := range s.Volumes {
		if v.Target == file || strings.HasPrefix(file, strings.TrimSuffix(v.Target, "/")+"/") {
			return true
		}
	}
	return false
}

// checkEchoArgs accepts the arguments with which examples/echo serves the service's cluster:
// flags it defines (flags: name -> boolean), -config FILE with FILE mounted, a non-empty -group,
// and not -embedded, which runs a gateway of its own on an in-process broker instead. It returns
// the -health-addr value.
func checkEchoArgs(args []string, s *service, flags map[string]bool) (healthAddr string, err error) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" || !strings.HasPrefix(a, "-") || a == "-" {
			return "", fmt.Errorf("argument %q: %s takes no positional arguments (it exits 2)", a, echoMain)
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		isBool, ok := flags[name]
		if !ok {
			return "", fmt.Errorf("flag %s is not one of %s's (it defines %v)", a, echoMain, sortedKeys(flags))
		}
		if !isBool && !hasVal {
			if i+1 >= len(args) {
				return "", fmt.Errorf("flag %s without a value", a)
			}
			i++
			val = args[i]
		}
		switch name {
		case "embedded":
			if on, err := strconv.ParseBool(cmp.Or(val, "true")); err != nil || on {
				return "", fmt.Errorf("flag %s: echo would run a gateway of its own on an in-process broker, and answer none of the cluster's clients", a)
			}
		case "config":
			if !mounts(s, val) {
				return "", fmt.Errorf("-config %s: no volume mounts that file", val)
			}
		case "group":
			if val == "" {
				return "", errors.New("-group is empty (echo exits 2)")
			}
		case "health-addr":
			healthAddr = val
		}
	}
	return healthAddr, nil
}

// echoSources parses the non-test Go files of examples/echo.
func echoSources(t *testing.T) []*ast.File {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(repoRoot, filepath.FromSlash(strings.TrimPrefix(echoMain, "./")), "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var files []*ast.File
	for _, p := range paths {
		if strings.HasSuffix(p, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, p, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	if len(files) == 0 {
		t.Fatalf("no Go file in %s", echoMain)
	}
	return files
}

// echoFlags are the command-line flags examples/echo defines (name -> boolean), read from its
// source: the calls fs.String("name", ...), fs.Bool, fs.DurationVar(&v, "name", ...) and so on.
func echoFlags(t *testing.T) map[string]bool {
	t.Helper()
	// method -> index of the name argument, number of arguments
	defs := map[string][2]int{"Func": {0, 3}, "BoolFunc": {0, 3}, "Var": {1, 3}, "TextVar": {1, 4}}
	for _, k := range []string{"String", "Bool", "Int", "Int64", "Uint", "Uint64", "Float64", "Duration"} {
		defs[k] = [2]int{0, 3}
		defs[k+"Var"] = [2]int{1, 4}
	}
	flags := map[string]bool{}
	for _, f := range echoSources(t) {
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if _, ok := sel.X.(*ast.Ident); !ok {
				return true
			}
			def, ok := defs[sel.Sel.Name]
			if !ok || len(call.Args) != def[1] {
				return true
			}
			lit, ok := call.Args[def[0]].(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			name, err := strconv.Unquote(lit.Value)
			if err != nil {
				return true
			}
			flags[name] = strings.HasPrefix(sel.Sel.Name, "Bool")
			return true
		})
	}
	for _, want := range []string{"group", "health-addr"} {
		if _, ok := flags[want]; !ok {
			t.Fatalf("%s defines no -%s flag (found %v): the source walk is broken, or the flag is gone", echoMain, want, sortedKeys(flags))
		}
	}
	return flags
}

// echoHealthPath is the path examples/echo serves with -health-addr: its healthPath constant.
func echoHealthPath(t *testing.T) string {
	t.Helper()
	for _, f := range echoSources(t) {
		for _, d := range f.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.CONST {
				continue
			}
			for _, spec := range g.Specs {
				v := spec.(*ast.ValueSpec)
				for i, n := range v.Names {
					if n.Name != "healthPath" || i >= len(v.Values) {
						continue
					}
					if lit, ok := v.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
						if s, err := strconv.Unquote(lit.Value); err == nil && strings.HasPrefix(s, "/") {
							return s
						}
					}
				}
			}
		}
	}
	t.Fatalf("%s has no string constant healthPath (the path -health-addr serves)", echoMain)
	return ""
}

// checkBrokerAddress checks that the broker the gateway is configured for is a service of the
// same profile(s), of the right kind, on the port it listens on, and that the gateway waits for it.
func checkBrokerAddress(t *testing.T, p *project, s *service, cfg *configs.Config) {
	t.Helper()
	var addrs []string // host:port
	var kind, varName string
	switch cfg.Broker {
	case configs.BrokerMemory:
		return
	case configs.BrokerNATS, configs.BrokerJetStream:
		kind, varName = "nats", "GATEWAY_NATS_URL"
		for _, raw := range strings.Split(cfg.NATS.URL, ",") {
			u, err := url.Parse(strings.TrimSpace(raw))
			if err != nil || u.Scheme != "nats" || u.Port() == "" {
				t.Errorf("GATEWAY_NATS_URL entry %q is not nats://host:port", raw)
				continue
			}
			addrs = append(addrs, u.Host)
		}
	case configs.BrokerRedis:
		kind, varName = "redis", "GATEWAY_REDIS_ADDR"
		addrs = []string{cfg.Redis.Addr}
	case configs.BrokerKafka:
		kind, varName = "kafka", "GATEWAY_KAFKA_BROKERS"
		addrs = cfg.Kafka.Brokers
	}
	env, _ := s.interpolatedEnv(t)
	if env[varName] == "" {
		t.Errorf("GATEWAY_BROKER=%s but %s is not set: the default points at 127.0.0.1 inside the container", cfg.Broker, varName)
		return
	}
	for _, addr := range addrs {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			t.Errorf("%s: %q: %v", varName, addr, err)
			continue
		}
		for _, ctx := range s.contexts() {
			target, ok := p.hostIn(ctx, host)
			if !ok {
				t.Errorf("%s=%s: no service named %s runs in profile %q", varName, env[varName], host, ctx)
				continue
			}
			b := p.Services[target]
			if !strings.Contains(b.Image, kind) {
				t.Errorf("%s=%s names service %s (image %q), which is not %s", varName, env[varName], target, b.Image, kind)
			}
			if want := brokerPort(t, b, kind, host); want != "" && port != want {
				t.Errorf("%s=%s: %s listens on %s, not %s", varName, env[varName], target, want, port)
			}
			if cond, ok := s.DependsOn[target]; !ok || cond != "service_healthy" {
				t.Errorf("does not depend on %s with condition service_healthy", target)
			}
			if cfg.Broker == configs.BrokerJetStream && !slices.ContainsFunc(b.Command.items, func(a string) bool { return a == "-js" || a == "--jetstream" }) {
				t.Errorf("GATEWAY_BROKER=jetstream, but %s does not run nats-server with --jetstream (command %q)", target, b.Command.items)
			}
		}
	}
}

// brokerPort is the port the broker service listens on for the gateways.
func brokerPort(t *testing.T, b *service, kind, host string) string {
	switch kind {
	case "nats":
		for i, a := range b.Command.items {
			if (a == "-p" || a == "--port") && i+1 < len(b.Command.items) {
				return b.Command.items[i+1]
			}
		}
		return "4222"
	case "redis":
		for i, a := range b.Command.items {
			if a == "--port" && i+1 < len(b.Command.items) {
				return b.Command.items[i+1]
			}
		}
		return "6379"
	case "kafka":
		// The gateways must bootstrap from an advertised listener with that very host name, or
		// the metadata sends them elsewhere.
		env, _ := b.interpolatedEnv(t)
		for _, addr := range listenerMap(env["KAFKA_ADVERTISED_LISTENERS"]) {
			if h, p, err := net.SplitHostPort(addr); err == nil && h == host {
				return p
			}
		}
		t.Errorf("KAFKA_ADVERTISED_LISTENERS %q advertises no listener on %s", env["KAFKA_ADVERTISED_LISTENERS"], host)
	}
	return ""
}

// checkLoadBalancer checks the load balancer lb of profile ctx against its gateways and nginx.conf.
func checkLoadBalancer(t *testing.T, p *project, conf *directive, ctx, lb string, gws []string, cfgs map[string]*configs.Config) {
	t.Helper()
	s := p.Services[lb]
	mounted := false
	for _, v := range s.Volumes {
		if v.Target == nginxConfTarget && filepath.Clean(v.Source) == filepath.Clean(nginxConfPath) {
			mounted = true
		}
	}
	if !mounted {
		t.Errorf("%s does not mount ./%s at %s", lb, nginxConfPath, nginxConfTarget)
	}
	for _, g := range gws {
		if cond, ok := s.DependsOn[g]; !ok || cond != "service_healthy" {
			t.Errorf("%s does not wait for %s to be healthy", lb, g)
		}
	}

	httpBlock := conf.one(t, "http")
	if usesResolve(httpBlock) {
		// Open-source nginx has the "resolve" parameter of upstream servers since 1.27.3.
		_, tag, _ := strings.Cut(s.Image, ":")
		tag, _, _ = strings.Cut(tag, "-") // 1.27-alpine
		v := versionParts(tag)
		floating := len(v) == 2 // nginx:1.27 is the newest 1.27.x
		if len(v) < 2 || (floating && slices.Compare(v, []int{1, 27}) < 0) || (!floating && slices.Compare(v, []int{1, 27, 3}) < 0) {
			t.Errorf("%s: image %s: %s uses \"resolve\" in an upstream, which needs nginx 1.27.3 or later (pin a version tag)", lb, s.Image, nginxConfPath)
		}
	}
	srv := httpBlock.one(t, "server")
	listen := srv.one(t, "listen").arg(0)
	if i := strings.LastIndex(listen, ":"); i >= 0 {
		listen = listen[i+1:]
	}
	if !s.publishes(listen) {
		t.Errorf("%s does not publish nginx's port %s", lb, listen)
	}
	if hc := s.Healthcheck; hc != nil {
		if u := healthURL(hc.Test.items); u == nil || u.Port() != listen {
			t.Errorf("%s: healthcheck %q does not ask nginx on port %s", lb, hc.Test.items, listen)
		}
	}

	// Every upstream server is a gateway of this profile on its port, and every gateway is one.
	named := map[string]string{} // gateway service -> upstream server
	for _, up := range httpBlock.all("upstream") {
		for _, sv := range up.all("server") {
			host, port, err := net.SplitHostPort(sv.arg(0))
			if err != nil {
				t.Errorf("upstream %s: server %q is not host:port", up.arg(0), sv.arg(0))
				continue
			}
			g, ok := p.hostIn(ctx, host)
			if !ok || !slices.Contains(gws, g) {
				t.Errorf("upstream %s: server %s is not a gateway of the profile (gateways %v and their aliases)", up.arg(0), sv.arg(0), gws)
				continue
			}
			if _, gp, _ := net.SplitHostPort(cfgs[g].Addr); gp != port {
				t.Errorf("upstream %s: server %s, but %s listens on %s", up.arg(0), sv.arg(0), g, cfgs[g].Addr)
			}
			if prev, dup := named[g]; dup {
				t.Errorf("upstream %s: %s is named twice (%s, %s)", up.arg(0), g, prev, sv.arg(0))
			}
			named[g] = sv.arg(0)
		}
	}
	for _, g := range gws {
		if _, ok := named[g]; !ok {
			t.Errorf("%s: gateway %s (host names %v) is not an upstream server", nginxConfPath, g, p.Services[g].hostNames())
		}
	}
}

// usesResolve reports whether an upstream server of the http block has the resolve parameter.
func usesResolve(httpBlock *directive) bool {
	for _, u := range httpBlock.all("upstream") {
		for _, sv := range u.all("server") {
			if slices.Contains(sv.args, "resolve") {
				return true
			}
		}
	}
	return false
}

// connectionUpgrades reports whether the Connection header value v sends "upgrade" for a request
// that carries an Upgrade header: the literal, or a map of $http_upgrade whose default is upgrade.
func connectionUpgrades(httpBlock *directive, v string) bool {
	if strings.EqualFold(v, "upgrade") {
		return true
	}
	for _, m := range httpBlock.all("map") {
		if m.arg(0) != "$http_upgrade" || m.arg(1) != v {
			continue
		}
		for _, e := range m.block {
			if e.name == "default" && strings.EqualFold(e.arg(0), "upgrade") {
				return true
			}
		}
	}
	return false
}

// checkGoImage checks that the golang image tag can build the go directive of go.mod: the
// image sets GOTOOLCHAIN=local, so an older Go fails instead of downloading a newer one.
func checkGoImage(t *testing.T, tag string) {
	t.Helper()
	tag, _, _ = strings.Cut(tag, "-") // 1.26-bookworm
	var goVersion string
	for _, line := range strings.Split(string(readFile(t, "go.mod")), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "go "); ok {
			goVersion = strings.TrimSpace(v)
		}
	}
	want := versionParts(goVersion)
	have := versionParts(tag)
	if len(want) < 2 || len(have) < 2 {
		t.Errorf("cannot compare golang:%s with go.mod's go %s", tag, goVersion)
		return
	}
	if len(have) == 2 {
		// A floating minor tag (golang:1.26) is the newest patch release of that minor.
		want = want[:2]
	}
	if slices.Compare(have, want) < 0 {
		t.Errorf("golang:%s is older than go.mod's go %s", tag, goVersion)
	}
}

func versionParts(v string) []int {
	var out []int
	for _, f := range strings.Split(v, ".") {
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil
		}
		out = append(out, n)
	}
	return out
}

// ----------------------------------------------------------------------------- config reflection

// gatewayEnvNames is every environment variable the configs package reads, found the way
// caarlos0/env finds them: the env tag of each field after GATEWAY_ and the envPrefix tags of the
// structs around it.
func gatewayEnvNames() map[string]bool {
	out := map[string]bool{}
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			tag, _, _ := strings.Cut(f.Tag.Get("env"), ",")
			if f.Type.Kind() == reflect.Struct && tag == "" {
				walk(f.Type, prefix+f.Tag.Get("envPrefix"))
				continue
			}
			if tag != "" && tag != "-" {
				out[prefix+tag] = true
			}
		}
	}
	walk(reflect.TypeOf(configs.Config{}), configs.EnvPrefix)
	return out
}

func brokerNames() []string {
	return []string{configs.BrokerMemory, configs.BrokerNATS, configs.BrokerJetStream, configs.BrokerRedis, configs.BrokerKafka}
}

func brokerAddress(c *configs.Config) string {
	switch c.Broker {
	case configs.BrokerNATS, configs.BrokerJetStream:
		return c.NATS.URL
	case configs.BrokerRedis:
		return c.Redis.Addr
	case configs.BrokerKafka:
		return strings.Join(c.Kafka.Brokers, ",")
	}
	return ""
}

// ----------------------------------------------------------------------------- compose model

type project struct {
	Services map[string]*service `yaml:"services"`

	df    *dockerfile       // the repository's Dockerfile, which builds the images of the services below
	roles map[string]string // service -> roleGateway or roleEcho, for those that run such an image
}

// The roles of the services that run an image of the repository's Dockerfile.
const (
	roleGateway = "gateway"
	roleEcho    = "echo"
)

type service struct {
	Image           string       `yaml:"image"`
	Build           *buildSpec   `yaml:"build"`
	Entrypoint      stringList   `yaml:"entrypoint"`
	Command         stringList   `yaml:"command"`
	Environment     environment  `yaml:"environment"`
	Profiles        []string     `yaml:"profiles"`
	DependsOn       dependsOn    `yaml:"depends_on"`
	Healthcheck     *healthcheck `yaml:"healthcheck"`
	StopGracePeriod string       `yaml:"stop_grace_period"`
	Restart         string       `yaml:"restart"`
	Ports           []portSpec   `yaml:"ports"`
	Expose          []string     `yaml:"expose"`
	Volumes         []volumeSpec `yaml:"volumes"`
	Networks        networks     `yaml:"networks"`
	Hostname        string       `yaml:"hostname"`
	ContainerName   string       `yaml:"container_name"`

	name string
}

func loadCompose(t *testing.T) *project {
	t.Helper()
	var p project
	if err := yaml.Unmarshal(readFile(t, composePath), &p); err != nil {
		t.Fatalf("%s: %v", composePath, err)
	}
	for name, s := range p.Services {
		if s == nil {
			t.Fatalf("%s: service %s is empty", composePath, name)
		}
		s.name = name
	}
	p.df = loadDockerfile(t)
	p.classify()
	return &p
}

// classify sets the role of each service that builds from the repository, runs an image built so,
// or is configured with GATEWAY_* variables: echo when it starts a binary that a stage of the
// Dockerfile copies from the go build of ./examples/echo, or runs the image of a stage that holds
// echo and not the gateway; gateway otherwise (and the gateway checks then say what is wrong).
func (p *project) classify() {
	p.roles = map[string]string{}
	var echoBuild, gwBuild *goBuild
	for _, b := range p.df.goBuilds() {
		switch b.pkg {
		case echoMain:
			echoBuild = b
		case gatewayMain:
			gwBuild = b
		}
	}
	echoBins := map[string]bool{}
	for _, st := range p.df.stages {
		if echoBuild == nil {
			break
		}
		if bin := p.df.binaryIn(st, echoBuild); bin != "" {
			echoBins[bin] = true
		}
	}
	built := p.builtImages()
	for _, name := range p.names() {
		s := p.Services[name]
		ours := s.Build != nil || (s.Image != "" && built[s.Image])
		for k := range s.Environment {
			ours = ours || strings.HasPrefix(k, configs.EnvPrefix)
		}
		if !ours {
			continue
		}
		st, err := p.imageStage(s)
		entry := s.Entrypoint.items
		if !s.Entrypoint.set && err == nil {
			entry = st.img.entrypoint
		}
		switch {
		case len(entry) > 0 && echoBins[entry[0]]:
			p.roles[name] = roleEcho
		case err == nil && echoBuild != nil && p.df.binaryIn(st, echoBuild) != "" && (gwBuild == nil || p.df.binaryIn(st, gwBuild) == ""):
			p.roles[name] = roleEcho // the echo image, whatever it is told to start
		default:
			p.roles[name] = roleGateway
		}
	}
}

// imageStage is the Dockerfile stage whose image the service runs: its build target (the last
// stage when none is given), or that of the service that builds its image.
func (p *project) imageStage(s *service) (*stage, error) {
	b := s.Build
	if b == nil {
		for _, name := range p.names() {
			if o := p.Services[name]; o.Build != nil && o.Image == s.Image {
				b = o.Build
				break
			}
		}
		if b == nil {
			return nil, fmt.Errorf("image %q is not built from %s by any service of %s", s.Image, dockerfilePath, composePath)
		}
	}
	st := p.df.target(b.Target)
	if st == nil {
		return nil, fmt.Errorf("build target %q is not a stage of %s", b.Target, dockerfilePath)
	}
	return st, nil
}

func (p *project) names() []string { return sortedKeys(p.Services) }

// profiles is every profile named in the file, plus "" for the services without one.
func (p *project) profiles() []string {
	set := map[string]bool{}
	for _, s := range p.Services {
		for _, c := range s.contexts() {
			set[c] = true
		}
	}
	return sortedKeys(set)
}

// gateways are the services that run the gateway.
func (p *project) gateways() []string { return p.withRole(roleGateway) }

// echoes are the services that run the example service, examples/echo.
func (p *project) echoes() []string { return p.withRole(roleEcho) }

func (p *project) withRole(role string) []string {
	var out []string
	for _, name := range p.names() {
		if p.roles[name] == role {
			out = append(out, name)
		}
	}
	return out
}

// builtImages are the image names that services building from the repository tag.
func (p *project) builtImages() map[string]bool {
	out := map[string]bool{}
	for _, s := range p.Services {
		if s.Build != nil && s.Image != "" {
			out[s.Image] = true
		}
	}
	return out
}

// hostIn finds the service that host name means in a profile.
func (p *project) hostIn(ctx, host string) (string, bool) {
	for _, name := range p.names() {
		s := p.Services[name]
		if s.activeIn(ctx) && slices.Contains(s.hostNames(), host) {
			return name, true
		}
	}
	return "", false
}

// contexts are the profiles the service runs in, or "" (no profile: always).
func (s *service) contexts() []string {
	if len(s.Profiles) == 0 {
		return []string{""}
	}
	return s.Profiles
}

func (s *service) activeIn(ctx string) bool {
	return len(s.Profiles) == 0 || slices.Contains(s.Profiles, ctx)
}

// hostNames are the names other containers reach the service by.
func (s *service) hostNames() []string {
	out := []string{s.name}
	for _, h := range []string{s.Hostname, s.ContainerName} {
		if h != "" && !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	for _, aliases := range s.Networks {
		for _, a := range aliases {
			if !slices.Contains(out, a) {
				out = append(out, a)
			}
		}
	}
	return out
}

func (s *service) isLoadBalancer() bool {
	return strings.HasPrefix(s.Image, "nginx:") || s.Image == "nginx"
}

// publishes reports whether the service publishes container port port on the host.
func (s *service) publishes(port string) bool {
	for _, p := range s.Ports {
		if p.Target == port {
			return true
		}
	}
	return false
}

// interpolatedEnv is the service's environment with ${VAR:-default} replaced by its default, as a
// map and as KEY=VALUE lines for configs.Load.
func (s *service) interpolatedEnv(t *testing.T) (map[string]string, []string) {
	t.Helper()
	env := map[string]string{}
	var environ []string
	for _, k := range sortedKeys(s.Environment) {
		v := s.Environment[k]
		if v == nil {
			t.Errorf("%s: environment %s has no value (it would be copied from the shell running compose)", s.name, k)
			continue
		}
		val, err := interpolate(*v)
		if err != nil {
			t.Errorf("%s: environment %s: %v", s.name, k, err)
		}
		env[k] = val
		environ = append(environ, k+"="+val)
	}
	return env, environ
}

type buildSpec struct {
	Context    string `yaml:"context"`
	Dockerfile string `yaml:"dockerfile"`
	Target     string `yaml:"target"`
}

func (b *buildSpec) UnmarshalYAML(n *yaml.Node) error {
	n = deref(n)
	if n.Kind == yaml.ScalarNode {
		b.Context = n.Value
		return nil
	}
	type plain buildSpec
	return n.Decode((*plain)(b))
}

// stringList is a command: a list (exec form) or a string (shell form).
type stringList struct {
	set   bool
	shell bool
	items []string
}

func (l *stringList) UnmarshalYAML(n *yaml.Node) error {
	n = deref(n)
	l.set = true
	switch n.Kind {
	case yaml.ScalarNode:
		l.shell = true
		l.items = strings.Fields(n.Value)
		return nil
	case yaml.SequenceNode:
		return n.Decode(&l.items)
	}
	return fmt.Errorf("line %d: want a string or a list", n.Line)
}

// environment maps names to values; nil is a name without value.
type environment map[string]*string

func (e *environment) UnmarshalYAML(n *yaml.Node) error {
	n = deref(n)
	out := environment{}
	switch n.Kind {
	case yaml.MappingNode:
		var m map[string]any
		if err := n.Decode(&m); err != nil {
			return err
		}
		for k, v := range m {
			if v == nil {
				out[k] = nil
				continue
			}
			s := fmt.Sprint(v)
			out[k] = &s
		}
	case yaml.SequenceNode:
		var l []string
		if err := n.Decode(&l); err != nil {
			return err
		}
		for _, kv := range l {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				out[k] = nil
				continue
			}
			out[k] = &v
		}
	default:
		return fmt.Errorf("line %d: environment must be a map or a list", n.Line)
	}
	*e = out
	return nil
}

// dependsOn maps a dependency to its condition.
type dependsOn map[string]string

func (d *dependsOn) UnmarshalYAML(n *yaml.Node) error {
	n = deref(n)
	out := dependsOn{}
	switch n.Kind {
	case yaml.SequenceNode:
		var l []string
		if err := n.Decode(&l); err != nil {
			return err
		}
		for _, s := range l {
			out[s] = "service_started"
		}
	case yaml.MappingNode:
		var m map[string]struct {
			Condition string `yaml:"condition"`
		}
		if err := n.Decode(&m); err != nil {
			return err
		}
		for k, v := range m {
			if v.Condition == "" {
				v.Condition = "service_started"
			}
			out[k] = v.Condition
		}
	default:
		return fmt.Errorf("line %d: depends_on must be a list or a map", n.Line)
	}
	*d = out
	return nil
}

// networks maps a network to the service's aliases on it.
type networks map[string][]string

func (nw *networks) UnmarshalYAML(n *yaml.Node) error {
	n = deref(n)
	out := networks{}
	switch n.Kind {
	case yaml.SequenceNode:
		var l []string
		if err := n.Decode(&l); err != nil {
			return err
		}
		for _, s := range l {
			out[s] = nil
		}
	case yaml.MappingNode:
		var m map[string]*struct {
			Aliases []string `yaml:"aliases"`
		}
		if err := n.Decode(&m); err != nil {
			return err
		}
		for k, v := range m {
			if v != nil {
				out[k] = v.Aliases
			} else {
				out[k] = nil
			}
		}
	default:
		return fmt.Errorf("line %d: networks must be a list or a map", n.Line)
	}
	*nw = out
	return nil
}

type healthcheck struct {
	Test    stringList `yaml:"test"`
	Disable bool       `yaml:"disable"`
}

// tool is the program the healthcheck runs in the container.
func (h *healthcheck) tool() string {
	items := h.Test.items
	if len(items) == 0 {
		return ""
	}
	switch {
	case h.Test.shell, items[0] == "CMD-SHELL":
		return "/bin/sh"
	case items[0] == "CMD" && len(items) > 1:
		return items[1]
	}
	return ""
}

// healthURL is the first http URL in a healthcheck command.
func healthURL(items []string) *url.URL {
	for _, it := range items {
		for _, f := range strings.Fields(it) {
			if strings.HasPrefix(f, "http://") {
				if u, err := url.Parse(f); err == nil {
					return u
				}
			}
		}
	}
	return nil
}

// portSpec is a published port; Target is the container's port.
type portSpec struct {
	Target string
}

func (p *portSpec) UnmarshalYAML(n *yaml.Node) error {
	n = deref(n)
	if n.Kind == yaml.MappingNode {
		var m struct {
			Target int `yaml:"target"`
		}
		if err := n.Decode(&m); err != nil {
			return err
		}
		p.Target = strconv.Itoa(m.Target)
		return nil
	}
	s, _, _ := strings.Cut(n.Value, "/") // [[ip:]host:]container[/proto]
	if i := strings.LastIndex(s, ":"); i >= 0 {
		s = s[i+1:]
	}
	p.Target = s
	return nil
}

// volumeSpec is a mount: Source (a host path or a volume name) at Target.
type volumeSpec struct {
	Source, Target string
}

func (v *volumeSpec) UnmarshalYAML(n *yaml.Node) error {
	n = deref(n)
	if n.Kind == yaml.MappingNode {
		var m struct {
			Source string `yaml:"source"`
			Target string `yaml:"target"`
		}
		if err := n.Decode(&m); err != nil {
			return err
		}
		v.Source, v.Target = m.Source, m.Target
		return nil
	}
	parts := strings.Split(n.Value, ":") // [source:]target[:mode]
	if len(parts) == 1 {
		v.Target = parts[0]
	} else {
		v.Source, v.Target = parts[0], parts[1]
	}
	return nil
}

func deref(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// ----------------------------------------------------------------------------- interpolation

var varRef = regexp.MustCompile(`\$(\$|\{[^}]*\}|[A-Za-z_][A-Za-z0-9_]*)`)
var varName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// interpolate replaces compose's variable references as compose does with no variable set:
// ${NAME:-default} and ${NAME-default} become default, ${NAME:+x} nothing, $$ a dollar. A
// reference without a default is an error.
func interpolate(s string) (string, error) {
	var errs []error
	out := varRef.ReplaceAllStringFunc(s, func(m string) string {
		if m == "$$" {
			return "$"
		}
		body := m[1:]
		if !strings.HasPrefix(body, "{") {
			errs = append(errs, fmt.Errorf("%s has no default: write ${%s:-default}", m, body))
			return ""
		}
		body = body[1 : len(body)-1]
		i := strings.IndexAny(body, ":-?+")
		if i < 0 {
			errs = append(errs, fmt.Errorf("%s has no default: write ${%s:-default}", m, body))
			return ""
		}
		if !varName.MatchString(body[:i]) {
			errs = append(errs, fmt.Errorf("%s: bad variable name", m))
			return ""
		}
		op := strings.TrimPrefix(body[i:], ":")
		switch op[0] {
		case '-':
			return op[1:]
		case '+':
			return ""
		}
		errs = append(errs, fmt.Errorf("%s requires the variable to be set", m))
		return ""
	})
	return out, errors.Join(errs...)
}

// walkStrings calls f with every string (keys too) of a decoded YAML document.
func walkStrings(v any, where string, f func(where, s string)) {
	switch v := v.(type) {
	case map[string]any:
		for _, k := range sortedKeys(v) {
			f(where+"/"+k, k)
			walkStrings(v[k], where+"/"+k, f)
		}
	case []any:
		for i, e := range v {
			walkStrings(e, fmt.Sprintf("%s[%d]", where, i), f)
		}
	case string:
		f(where, v)
	}
}

// ----------------------------------------------------------------------------- Dockerfile

type dockerfile struct {
	stages []*stage
	// The final stage's image configuration (the image `docker build .` makes).
	entrypoint  []string // exec form of ENTRYPOINT
	cmd         []string
	expose      []string
	healthcheck *healthcheck
}

type stage struct {
	base, name string
	index      int
	parent     *stage // the earlier stage FROM names; nil when FROM names an image
	instrs     []instr
	img        imageConfig // what the stage's image runs, with what it inherits from parent
}

// imageConfig is the part of an image's configuration the tests check.
type imageConfig struct {
	entrypoint  []string
	cmd         []string
	expose      []string
	healthcheck *healthcheck
}

type instr struct {
	cmd, args string
}

func (s *stage) last(cmd string) *instr {
	for i := len(s.instrs) - 1; i >= 0; i-- {
		if s.instrs[i].cmd == cmd {
			return &s.instrs[i]
		}
	}
	return nil
}

// lastInChain is the stage's last cmd instruction, or its parent stage's.
func (s *stage) lastInChain(cmd string) *instr {
	for st := s; st != nil; st = st.parent {
		if in := st.last(cmd); in != nil {
			return in
		}
	}
	return nil
}

// root is the image the stage starts from, through the stages it is FROM.
func (s *stage) root() string {
	for s.parent != nil {
		s = s.parent
	}
	return s.base
}

// label names the stage in messages.
func (s *stage) label() string {
	if s.name != "" {
		return s.name
	}
	return "#" + strconv.Itoa(s.index)
}

// shellless reports whether the stage's image has no programs of its own to run a healthcheck with.
func (s *stage) shellless() bool {
	b := s.root()
	return b == "scratch" || strings.Contains(b, "distroless")
}

// busyboxTools are the programs of an Alpine image a healthcheck can run (busybox applets).
var busyboxTools = []string{"wget", "nc", "sh", "/bin/sh"}

// hasTool reports whether program can run in the stage's image: one the Dockerfile copies into
// it, or one its base image has (for Alpine, busybox's; other bases are trusted).
func (d *dockerfile) hasTool(st *stage, program string) bool {
	for s := st; s != nil; s = s.parent {
		for _, c := range d.copies(s) {
			if c.dst == program || path.Base(c.dst) == program {
				return true
			}
		}
	}
	switch b := st.root(); {
	case b == "scratch" || strings.Contains(b, "distroless"):
		return false
	case strings.HasPrefix(b, "alpine"):
		return slices.Contains(busyboxTools, program) || slices.Contains(busyboxTools, path.Base(program))
	}
	return true
}

func (d *dockerfile) final() *stage { return d.stages[len(d.stages)-1] }

// finalIsShellless reports whether the final image has no programs of its own to run a
// healthcheck with.
func (d *dockerfile) finalIsShellless() bool { return d.final().shellless() }

// stageRef is the stage a --from, FROM or --target names: its name or its index.
func (d *dockerfile) stageRef(ref string) *stage {
	for _, st := range d.stages {
		if st.name != "" && strings.EqualFold(st.name, ref) {
			return st
		}
	}
	if i, err := strconv.Atoi(ref); err == nil && i >= 0 && i < len(d.stages) {
		return d.stages[i]
	}
	return nil
}

// target is the stage `docker build --target ref` builds; "" is the final stage.
func (d *dockerfile) target(ref string) *stage {
	if ref == "" {
		return d.final()
	}
	for _, st := range d.stages {
		if strings.EqualFold(st.name, ref) {
			return st
		}
	}
	return nil
}

// needs is every stage building st needs: st, the stages it is FROM and those it copies from,
// transitively.
func (d *dockerfile) needs(st *stage) []*stage {
	var out []*stage
	var visit func(s *stage)
	visit = func(s *stage) {
		if s == nil || slices.Contains(out, s) {
			return
		}
		out = append(out, s)
		visit(s.parent)
		for _, c := range d.copies(s) {
			visit(c.from)
		}
	}
	visit(st)
	return out
}

func loadDockerfile(t *testing.T) *dockerfile {
	t.Helper()
	d, err := parseDockerfile(string(readFile(t, dockerfilePath)))
	if err != nil {
		t.Fatalf("%s: %v", dockerfilePath, err)
	}
	return d
}

var argRef = regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?`)

func parseDockerfile(src string) (*dockerfile, error) {
	var lines []string
	cur := ""
	for _, line := range strings.Split(src, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur == "") {
			continue
		}
		if strings.HasSuffix(trimmed, `\`) {
			cur += strings.TrimSuffix(trimmed, `\`) + " "
			continue
		}
		lines = append(lines, cur+trimmed)
		cur = ""
	}
	if cur != "" {
		lines = append(lines, cur)
	}
	d := &dockerfile{}
	globalArgs := map[string]string{}
	for _, line := range lines {
		if line == "" {
			continue
		}
		cmd, args, _ := strings.Cut(line, " ")
		cmd = strings.ToUpper(cmd)
		args = strings.TrimSpace(args)
		if cmd == "FROM" {
			fields := strings.Fields(args)
			for len(fields) > 0 && strings.HasPrefix(fields[0], "--") {
				fields = fields[1:]
			}
			if len(fields) == 0 {
				return nil, errors.New("FROM without an image")
			}
			st := &stage{index: len(d.stages), base: argRef.ReplaceAllStringFunc(fields[0], func(m string) string {
				return globalArgs[argRef.FindStringSubmatch(m)[1]]
			})}
			switch {
			case len(fields) == 3 && strings.EqualFold(fields[1], "AS"):
				st.name = strings.ToLower(fields[2])
				if d.target(st.name) != nil {
					return nil, fmt.Errorf("two stages are named %s", st.name)
				}
			case len(fields) != 1:
				return nil, fmt.Errorf("FROM %s: want FROM IMAGE [AS NAME]", args)
			}
			for _, prev := range d.stages {
				if prev.name != "" && strings.EqualFold(prev.name, st.base) {
					st.parent = prev
				}
			}
			d.stages = append(d.stages, st)
			continue
		}
		if len(d.stages) == 0 {
			if cmd == "ARG" {
				k, v, _ := strings.Cut(args, "=")
				globalArgs[k] = strings.Trim(v, `"`)
			}
			continue
		}
		st := d.stages[len(d.stages)-1]
		st.instrs = append(st.instrs, instr{cmd: cmd, args: args})
	}
	if len(d.stages) == 0 {
		return nil, errors.New("no FROM")
	}
	for _, st := range d.stages {
		if err := d.resolveImage(st); err != nil {
			return nil, fmt.Errorf("stage %s: %w", st.label(), err)
		}
	}
	final := d.final().img
	d.entrypoint, d.cmd, d.expose, d.healthcheck = final.entrypoint, final.cmd, final.expose, final.healthcheck
	return d, nil
}

// resolveImage sets st.img from its parent stage's and its own instructions, as Docker does: a
// stage's ENTRYPOINT drops the CMD it inherited.
func (d *dockerfile) resolveImage(st *stage) error {
	var img imageConfig
	if st.parent != nil {
		img = st.parent.img
		img.entrypoint = slices.Clone(img.entrypoint)
		img.cmd = slices.Clone(img.cmd)
		img.expose = slices.Clone(img.expose)
	}
	ownCmd := false
	for _, in := range st.instrs {
		switch in.cmd {
		case "ENTRYPOINT":
			img.entrypoint = nil
			if err := json.Unmarshal([]byte(in.args), &img.entrypoint); err != nil {
				return fmt.Errorf("ENTRYPOINT %s is not in exec form: the program would not get SIGTERM as PID 1", in.args)
			}
			if !ownCmd {
				img.cmd = nil
			}
		case "CMD":
			ownCmd = true
			img.cmd = nil
			if err := json.Unmarshal([]byte(in.args), &img.cmd); err != nil {
				img.cmd = strings.Fields(in.args)
			}
		case "EXPOSE":
			for _, p := range strings.Fields(in.args) {
				p, _, _ = strings.Cut(p, "/")
				img.expose = append(img.expose, p)
			}
		case "HEALTHCHECK":
			fields := strings.Fields(in.args)
			for len(fields) > 0 && strings.HasPrefix(fields[0], "--") {
				fields = fields[1:]
			}
			if len(fields) == 0 || strings.ToUpper(fields[0]) != "CMD" {
				img.healthcheck = nil // HEALTHCHECK NONE
				continue
			}
			rest := strings.TrimSpace(in.args[strings.Index(in.args, fields[0])+len(fields[0]):])
			hc := &healthcheck{}
			var items []string
			if err := json.Unmarshal([]byte(rest), &items); err == nil {
				hc.Test = stringList{set: true, items: append([]string{"CMD"}, items...)}
			} else {
				hc.Test = stringList{set: true, shell: true, items: strings.Fields(rest)}
			}
			img.healthcheck = hc
		}
	}
	st.img = img
	return nil
}

// copyInstr is a COPY of the stage: src from the stage from (nil: the build context or an image) to dst.
type copyInstr struct {
	fromRef  string
	from     *stage
	src, dst string
}

// copies are the stage's COPY instructions of one source.
func (d *dockerfile) copies(st *stage) []copyInstr {
	var out []copyInstr
	for _, in := range st.instrs {
		if in.cmd != "COPY" {
			continue
		}
		var c copyInstr
		var paths []string
		for _, w := range shellWords(in.args) {
			if v, ok := strings.CutPrefix(w, "--from="); ok {
				c.fromRef = v
			} else if !strings.HasPrefix(w, "--") {
				paths = append(paths, w)
			}
		}
		if len(paths) != 2 {
			continue
		}
		if c.fromRef != "" {
			if from := d.stageRef(c.fromRef); from != nil && from.index < st.index {
				c.from = from
			}
		}
		c.src, c.dst = path.Clean(paths[0]), paths[1]
		if strings.HasSuffix(c.dst, "/") {
			c.dst += path.Base(c.src)
		}
		c.dst = path.Clean(c.dst)
		out = append(out, c)
	}
	return out
}

// goBuild is a `go build` of a main package in the Dockerfile.
type goBuild struct {
	stage    *stage
	out, pkg string
	ldflags  string
	cgoOff   bool
	trimpath bool
}

// goBuilds are the Dockerfile's `go build` commands, in order (several in one RUN too).
func (d *dockerfile) goBuilds() []*goBuild {
	isSep := func(w string) bool { return w == "&&" || w == ";" || w == "||" || w == "|" }
	var out []*goBuild
	for _, st := range d.stages {
		for _, in := range st.instrs {
			if in.cmd != "RUN" || !strings.Contains(in.args, "go build") {
				continue
			}
			words := shellWords(in.args)
			start := 0 // first word of the current command
			for i := 0; i+1 < len(words); i++ {
				if isSep(words[i]) {
					start = i + 1
					continue
				}
				if words[i] != "go" || words[i+1] != "build" {
					continue
				}
				b := &goBuild{stage: st}
				// Environment assignments on the same command line, or ENV in the stage (or those it is FROM).
				for _, w := range words[start:i] {
					b.cgoOff = b.cgoOff || w == "CGO_ENABLED=0"
				}
				for s := st; s != nil; s = s.parent {
					for _, e := range s.instrs {
						b.cgoOff = b.cgoOff || (e.cmd == "ENV" && strings.Contains(e.args, "CGO_ENABLED=0"))
					}
				}
				args := words[i+2:]
				for k := 0; k < len(args) && !isSep(args[k]); k++ {
					switch a := args[k]; {
					case a == "-trimpath":
						b.trimpath = true
					case a == "-o" && k+1 < len(args):
						k++
						b.out = args[k]
					case a == "-ldflags" && k+1 < len(args):
						k++
						b.ldflags = args[k]
					case strings.HasPrefix(a, "-ldflags="):
						b.ldflags = strings.TrimPrefix(a, "-ldflags=")
					case strings.HasPrefix(a, "-o="):
						b.out = strings.TrimPrefix(a, "-o=")
					case !strings.HasPrefix(a, "-"):
						b.pkg = a
					}
				}
				out = append(out, b)
				i++
			}
		}
	}
	return out
}

// buildOf is the go build of the main package pkg (./cmd/gateway).
func (d *dockerfile) buildOf(t *testing.T, pkg string) *goBuild {
	t.Helper()
	var found []*goBuild
	for _, b := range d.goBuilds() {
		if b.pkg == pkg {
			found = append(found, b)
		}
	}
	switch {
	case len(found) == 0:
		t.Fatalf("%s: no RUN go build of %s", dockerfilePath, pkg)
	case len(found) > 1:
		t.Fatalf("%s: %d go builds of %s, want one", dockerfilePath, len(found), pkg)
	case found[0].out == "":
		t.Fatalf("%s: go build %s has no -o", dockerfilePath, pkg)
	case found[0].stage == d.final():
		t.Fatalf("%s: go build %s runs in the final stage: the image would hold the Go toolchain", dockerfilePath, pkg)
	}
	return found[0]
}

// buildStage is the go build of the gateway.
func (d *dockerfile) buildStage(t *testing.T) *goBuild {
	t.Helper()
	return d.buildOf(t, gatewayMain)
}

// binaryIn is where the image of stage st holds the binary that b writes ("" when it does not):
// a COPY --from a stage that ran b (or is FROM one that did), into st or a stage st is FROM.
func (d *dockerfile) binaryIn(st *stage, b *goBuild) string {
	for s := st; s != nil; s = s.parent {
		if s == b.stage {
			return b.out // built right there (no multi-stage)
		}
		cs := d.copies(s)
		for i := len(cs) - 1; i >= 0; i-- {
			c := cs[i]
			if c.from == nil || c.src != path.Clean(b.out) {
				continue
			}
			for f := c.from; f != nil; f = f.parent {
				if f == b.stage {
					return c.dst
				}
			}
		}
	}
	return ""
}

// gatewayBinary is where the final stage puts the binary that the builder's go build writes.
func (d *dockerfile) gatewayBinary(t *testing.T) string {
	t.Helper()
	b := d.buildStage(t)
	bin := d.binaryIn(d.final(), b)
	if bin == "" {
		t.Fatalf("%s: the final stage does not COPY --from=%s %s", dockerfilePath, b.stage.label(), b.out)
	}
	return bin
}

// shellWords splits a shell command line into words, honouring quotes.
func shellWords(s string) []string {
	var out []string
	var cur strings.Builder
	inWord := false
	var quote rune
	for _, r := range s {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '"' || r == '\'':
			quote = r
			inWord = true
		case r == ' ' || r == '\t' || r == '\n':
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out
}

// ----------------------------------------------------------------------------- .dockerignore

type ignoreRule struct {
	re     *regexp.Regexp
	except bool
}

type dockerignoreRules []ignoreRule

// parseDockerignore reads .dockerignore patterns with Docker's semantics: relative to the context
// root, * and ? within a path element, ** across elements, ! to re-include, the last match wins,
// and a pattern that matches a directory excludes what is in it.
func parseDockerignore(src string) (dockerignoreRules, error) {
	var rules dockerignoreRules
	for _, line := range strings.Split(src, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		r := ignoreRule{}
		if rest, ok := strings.CutPrefix(line, "!"); ok {
			r.except, line = true, strings.TrimSpace(rest)
		}
		line = strings.TrimPrefix(path.Clean(line), "/")
		var re strings.Builder
		re.WriteString("^")
		for i := 0; i < len(line); i++ {
			switch c := line[i]; {
			case strings.HasPrefix(line[i:], "**/"):
				re.WriteString("(.*/)?")
				i += 2
			case strings.HasPrefix(line[i:], "**"):
				re.WriteString(".*")
				i++
			case c == '*':
				re.WriteString("[^/]*")
			case c == '?':
				re.WriteString("[^/]")
			default:
				re.WriteString(regexp.QuoteMeta(string(c)))
			}
		}
		re.WriteString("$")
		var err error
		if r.re, err = regexp.Compile(re.String()); err != nil {
			return nil, fmt.Errorf("pattern %q: %v", line, err)
		}
		rules = append(rules, r)
	}
	return rules, nil
}

// excludes reports whether file (slash-separated, relative to the context) stays out of the context.
func (rules dockerignoreRules) excludes(file string) bool {
	parts := strings.Split(file, "/")
	excluded := false
	for _, r := range rules {
		for i := 1; i <= len(parts); i++ {
			if r.re.MatchString(strings.Join(parts[:i], "/")) {
				excluded = !r.except
				break
			}
		}
	}
	return excluded
}

// goSources lists, relative to the repository root, go.mod's module's Go files (and embedded
// files) that building the main package main (./cmd/gateway) for linux without cgo reads.
func goSources(main string) ([]string, error) {
	mod := ""
	raw, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "module "); ok {
			mod = strings.TrimSpace(v)
		}
	}
	if mod == "" {
		return nil, errors.New("go.mod has no module line")
	}
	ctxt := build.Default
	ctxt.GOOS, ctxt.GOARCH, ctxt.CgoEnabled = "linux", "amd64", false
	var files []string
	seen := map[string]bool{}
	var visit func(rel string) error
	visit = func(rel string) error {
		if seen[rel] {
			return nil
		}
		seen[rel] = true
		pkg, err := ctxt.ImportDir(filepath.Join(repoRoot, filepath.FromSlash(rel)), 0)
		if err != nil {
			return fmt.Errorf("package %s: %w", rel, err)
		}
		for _, f := range slices.Concat(pkg.GoFiles, pkg.SFiles, pkg.HFiles) {
			files = append(files, path.Join(rel, f))
		}
		for _, pat := range pkg.EmbedPatterns {
			matches, _ := filepath.Glob(filepath.Join(repoRoot, filepath.FromSlash(rel), filepath.FromSlash(pat)))
			for _, m := range matches {
				r, _ := filepath.Rel(repoRoot, m)
				files = append(files, filepath.ToSlash(r))
			}
		}
		for _, imp := range pkg.Imports {
			if imp == mod {
				if err := visit("."); err != nil {
					return err
				}
			} else if sub, ok := strings.CutPrefix(imp, mod+"/"); ok {
				if err := visit(sub); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := visit(strings.TrimPrefix(main, "./")); err != nil {
		return nil, err
	}
	for i, f := range files {
		files[i] = strings.TrimPrefix(f, "./")
	}
	return files, nil
}

// ----------------------------------------------------------------------------- nginx.conf

// directive is one nginx directive, with its block when it has one.
type directive struct {
	name   string
	args   []string
	block  []*directive
	parent *directive
}

func loadNginx(t *testing.T) *directive {
	t.Helper()
	root, err := parseNginx(string(readFile(t, nginxConfPath)))
	if err != nil {
		t.Fatalf("%s: %v", nginxConfPath, err)
	}
	return root
}

func (d *directive) arg(i int) string {
	if i < len(d.args) {
		return d.args[i]
	}
	return ""
}

func (d *directive) all(name string) []*directive {
	var out []*directive
	for _, c := range d.block {
		if c.name == name {
			out = append(out, c)
		}
	}
	return out
}

func (d *directive) one(t *testing.T, name string) *directive {
	t.Helper()
	all := d.all(name)
	if len(all) != 1 {
		t.Fatalf("%s: want one %s in %s %q, found %d", nginxConfPath, name, d.name, d.args, len(all))
	}
	return all[0]
}

// inherited is the directive as in force in d's block: its own, or its enclosing blocks'.
func (d *directive) inherited(name string) *directive {
	for b := d; b != nil; b = b.parent {
		if all := b.all(name); len(all) > 0 {
			return all[len(all)-1]
		}
	}
	return nil
}

// inheritedAll is like inherited for array directives (proxy_set_header): the innermost level that
// sets any of them.
func (d *directive) inheritedAll(name string) []*directive {
	for b := d; b != nil; b = b.parent {
		if all := b.all(name); len(all) > 0 {
			return all
		}
	}
	return nil
}

type nginxToken struct {
	s     string
	punct bool
}

func parseNginx(src string) (*directive, error) {
	var toks []nginxToken
	for i := 0; i < len(src); {
		c := src[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '#':
			for i < len(src) && src[i] != '\n' {
				i++
			}
		case c == '{' || c == '}' || c == ';':
			toks = append(toks, nginxToken{s: string(c), punct: true})
			i++
		case c == '"' || c == '\'':
			j := i + 1
			var b strings.Builder
			for j < len(src) && src[j] != c {
				if src[j] == '\\' && j+1 < len(src) {
					j++
				}
				b.WriteByte(src[j])
				j++
			}
			if j >= len(src) {
				return nil, errors.New("unterminated quote")
			}
			toks = append(toks, nginxToken{s: b.String()})
			i = j + 1
		default:
			j := i
			for j < len(src) && !strings.ContainsRune(" \t\r\n;{}", rune(src[j])) {
				j++
			}
			toks = append(toks, nginxToken{s: src[i:j]})
			i = j
		}
	}
	root := &directive{name: "main"}
	pos := 0
	var parseBlock func(parent *directive, top bool) error
	parseBlock = func(parent *directive, top bool) error {
		var cur *directive
		for pos < len(toks) {
			tk := toks[pos]
			pos++
			switch {
			case tk.punct && tk.s == "}":
				if top || cur != nil {
					return errors.New("unexpected }")
				}
				return nil
			case tk.punct && tk.s == ";":
				if cur == nil {
					return errors.New("empty directive")
				}
				parent.block = append(parent.block, cur)
				cur = nil
			case tk.punct && tk.s == "{":
				if cur == nil {
					return errors.New("block without a directive")
				}
				parent.block = append(parent.block, cur)
				b := cur
				cur = nil
				b.block = []*directive{}
				if err := parseBlock(b, false); err != nil {
					return err
				}
			default:
				if cur == nil {
					cur = &directive{name: tk.s, parent: parent}
				} else {
					cur.args = append(cur.args, tk.s)
				}
			}
		}
		if !top || cur != nil {
			return errors.New("unexpected end of file")
		}
		return nil
	}
	if err := parseBlock(root, true); err != nil {
		return nil, err
	}
	return root, nil
}

var nginxTime = regexp.MustCompile(`^(\d+)(ms|s|m|h|d|w)?`)

// nginxDuration parses an nginx time like 1h, 90s, 3600 or 1h30m.
func nginxDuration(s string) (time.Duration, error) {
	units := map[string]time.Duration{"": time.Second, "ms": time.Millisecond, "s": time.Second,
		"m": time.Minute, "h": time.Hour, "d": 24 * time.Hour, "w": 7 * 24 * time.Hour}
	s = strings.ReplaceAll(s, " ", "")
	if s == "" {
		return 0, errors.New("empty time")
	}
	var total time.Duration
	for s != "" {
		m := nginxTime.FindStringSubmatch(s)
		if m == nil {
			return 0, fmt.Errorf("bad time %q", s)
		}
		n, _ := strconv.Atoi(m[1])
		total += time.Duration(n) * units[m[2]]
		s = s[len(m[0]):]
	}
	return total, nil
}

// listenerMap parses Kafka listeners, NAME://host:port,..., into NAME -> host:port.
func listenerMap(s string) map[string]string {
	out := map[string]string{}
	for _, l := range strings.Split(s, ",") {
		name, addr, ok := strings.Cut(strings.TrimSpace(l), "://")
		if ok {
			out[name] = addr
		}
	}
	return out
}

// ----------------------------------------------------------------------------- helpers

func readFile(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
