package deploy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"

	"go.yaml.in/yaml/v3"

	"github.com/wsgateway/gateway/configs"
	"github.com/wsgateway/gateway/internal/auth"
	"github.com/wsgateway/gateway/internal/nodetest"
	"github.com/wsgateway/gateway/internal/wstest"
)

// The monitoring files, relative to the repository root.
const (
	dashboardPath = "deploy/grafana/gateway-dashboard.json"
	alertsPath    = "deploy/prometheus/alerts.yml"
	adapterPath   = "deploy/k8s/components/hpa-connections/prometheus-adapter-values.yaml"
	hpaPatchPath  = "deploy/k8s/components/hpa-connections/hpa-metrics.yaml"
)

// targetLabels are added by Prometheus (the scrape and Kubernetes discovery), not by the node.
var targetLabels = []string{"job", "instance", "namespace", "pod", "container", "service", "endpoint", "node"}

// TestMonitoringMetricsExist scrapes a real node and checks that every metric (and label) the
// dashboard, the alerts and the autoscaler use is one the node exports.
func TestMonitoringMetricsExist(t *testing.T) {
	scraped := scrapeNode(t)
	if len(scraped) < 20 {
		t.Fatalf("scraped only %d metric families", len(scraped))
	}
	var exprs []sourcedExpr
	for _, p := range dashboardPanels(t, loadDashboard(t)) {
		for _, tg := range p.Targets {
			exprs = append(exprs, sourcedExpr{fmt.Sprintf("%s panel %q %s", dashboardPath, p.Title, tg.RefID), tg.Expr})
		}
	}
	for _, v := range loadDashboard(t).Templating.List {
		if v.Type == "query" {
			exprs = append(exprs, sourcedExpr{dashboardPath + " variable " + v.Name, labelValuesSelector(v.Definition)})
		}
	}
	for _, r := range loadAlerts(t).rules() {
		exprs = append(exprs, sourcedExpr{alertsPath + " " + r.Alert, r.Expr})
	}
	for _, r := range loadAdapter(t).Rules.Custom {
		exprs = append(exprs, sourcedExpr{adapterPath + " seriesQuery", r.SeriesQuery})
	}
	var patch []struct {
		Value []struct {
			Pods *struct {
				Metric struct{ Name string } `yaml:"metric"`
			} `yaml:"pods"`
		} `yaml:"value"`
	}
	if err := yaml.Unmarshal(readFile(t, hpaPatchPath), &patch); err != nil {
		t.Fatalf("%s: %v", hpaPatchPath, err)
	}
	for _, op := range patch {
		for _, m := range op.Value {
			if m.Pods != nil {
				exprs = append(exprs, sourcedExpr{hpaPatchPath, m.Pods.Metric.Name})
			}
		}
	}
	if len(exprs) < 40 {
		t.Fatalf("only %d expressions found", len(exprs))
	}
	used := map[string]bool{}
	for _, e := range exprs {
		sels, err := promSelectors(e.expr)
		if err != nil {
			t.Errorf("%s: %v in %q", e.where, err, e.expr)
			continue
		}
		if len(sels) == 0 {
			t.Errorf("%s: no metric in %q", e.where, e.expr)
		}
		for _, s := range sels {
			fam, ok := scraped.family(s.name)
			if !ok {
				t.Errorf("%s: metric %s is not exported by a gateway node", e.where, s.name)
				continue
			}
			used[fam.name] = true
			for _, l := range s.labels {
				if !fam.labels[l] && !slices.Contains(targetLabels, l) && !(l == "le" && fam.typ == "histogram") && !(l == "quantile" && fam.typ == "summary") {
					t.Errorf("%s: metric %s has no label %q (it has %v)", e.where, s.name, l, sortedKeys(fam.labels))
				}
			}
		}
	}
	// The dashboard covers what the brief promises: every gateway metric but one or two.
	var unused []string
	for name := range scraped {
		if strings.HasPrefix(name, "gateway_") && !used[name] {
			unused = append(unused, name)
		}
	}
	if len(unused) > 0 {
		t.Errorf("gateway metrics used by neither the dashboard nor the alerts: %v", unused)
	}
}

// TestDashboard checks the dashboard's structure: panels that do not overlap, unique ids, every
// query on the data source variable, every variable it uses defined.
func TestDashboard(t *testing.T) {
	d := loadDashboard(t)
	if d.UID == "" || d.Title == "" || d.SchemaVersion < 30 {
		t.Errorf("uid %q, title %q, schemaVersion %d", d.UID, d.Title, d.SchemaVersion)
	}
	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
	}
	if !vars["datasource"] {
		t.Error("no datasource variable: the dashboard would be tied to one Prometheus")
	}
	ids := map[int]string{}
	panels := dashboardPanels(t, d)
	var boxes []dashPanel
	for _, p := range d.Panels {
		boxes = append(boxes, p)
	}
	titles := map[string]bool{}
	for _, p := range panels {
		titles[strings.ToLower(p.Title)] = true
		if other, dup := ids[p.ID]; dup {
			t.Errorf("panels %q and %q share id %d", other, p.Title, p.ID)
		}
		ids[p.ID] = p.Title
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		if p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q uses data source %q, want ${datasource}", p.Title, p.Datasource.UID)
		}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q target %s has no expr", p.Title, tg.RefID)
			}
			for _, m := range regexp.MustCompile(`\$\{?(\w+)`).FindAllStringSubmatch(tg.Expr, -1) {
				if !vars[m[1]] && !strings.HasPrefix(m[1], "__") {
					t.Errorf("panel %q uses $%s, which is not a variable of the dashboard", p.Title, m[1])
				}
			}
		}
	}
	for i, a := range boxes {
		g := a.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v outside the 24 columns", a.Title, g)
		}
		for _, b := range boxes[i+1:] {
			h := b.GridPos
			if g.X < h.X+h.W && h.X < g.X+g.W && g.Y < h.Y+h.H && h.Y < g.Y+g.H {
				t.Errorf("panels %q %+v and %q %+v overlap", a.Title, g, b.Title, h)
			}
		}
	}
	for _, want := range []string{"connections", "subscriptions", "deliveries/s", "publish latency", "slow-consumer disconnects/s",
		"broker errors/s", "router retries, poison, signatures", "drain: shutdown disconnects/s", "goroutines"} {
		if !titles[want] {
			t.Errorf("no panel %q", want)
		}
	}
}

// TestAlerts checks the rules' structure: what Prometheus requires and what a receiver needs.
func TestAlerts(t *testing.T) {
	a := loadAlerts(t)
	if len(a.Groups) == 0 {
		t.Fatal("no rule group")
	}
	seen := map[string]bool{}
	for _, r := range a.rules() {
		if r.Alert == "" || r.Record != "" {
			t.Errorf("rule %q/%q: want alerting rules only", r.Alert, r.Record)
			continue
		}
		if seen[r.Alert] {
			t.Errorf("alert %s is defined twice", r.Alert)
		}
		seen[r.Alert] = true
		if strings.TrimSpace(r.Expr) == "" {
			t.Errorf("alert %s has no expr", r.Alert)
		}
		if r.For != "" {
			if _, err := time.ParseDuration(r.For); err != nil {
				t.Errorf("alert %s: for %q: %v", r.Alert, r.For, err)
			}
		}
		if s := r.Labels["severity"]; s != "critical" && s != "warning" && s != "info" {
			t.Errorf("alert %s: severity %q, want critical, warning or info", r.Alert, s)
		}
		if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
			t.Errorf("alert %s: needs a summary and a description", r.Alert)
		}
		for k, v := range r.Annotations {
			if strings.Count(v, "{{") != strings.Count(v, "}}") {
				t.Errorf("alert %s: annotation %s has unbalanced {{ }}", r.Alert, k)
			}
		}
	}
	for _, want := range []string{"GatewayAllNodesDown", "GatewayNodeDown", "GatewayPublishUnavailable", "GatewayBrokerErrors",
		"GatewaySlowConsumers", "GatewayPublishLatencyHigh", "GatewayRouterRetrying", "GatewayPoisonedMessages", "GatewayDrainTooLong"} {
		if !seen[want] {
			t.Errorf("no alert %s", want)
		}
	}
}

// TestAlertsPromtool checks the rules with Prometheus' own promtool and runs their unit tests
// (prometheus/alerts_test.yml), when promtool is installed.
func TestAlertsPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool is not installed (go install github.com/prometheus/prometheus/cmd/promtool@latest)")
	}
	for _, args := range [][]string{{"check", "rules", "alerts.yml"}, {"test", "rules", "alerts_test.yml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = filepath.Join(repoRoot, "deploy", "prometheus")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestPromSelectors pins the expression scanner the metric check relies on.
func TestPromSelectors(t *testing.T) {
	for _, tt := range []struct {
		expr string
		want []string // name{label,label}
	}{
		{`up`, []string{"up{}"}},
		{`sum by (instance) (rate(gateway_frames_in_total{job=~"$job",instance=~"$instance"}[$__rate_interval]))`, []string{"gateway_frames_in_total{job,instance}"}},
		{`histogram_quantile(0.99, sum by (le, handler) (rate(x_bucket{handler="inbound"}[5m]))) > 0.5`, []string{"x_bucket{handler}"}},
		{`(up == 0) and on (job, instance) max_over_time(g[1h]) >= 0`, []string{"up{}", "g{}"}},
		{`sum(a) by (job) < 0.5 * sum by (job) (a offset 10m) and sum(b offset 1h) > 1e3`, []string{"a{}", "a{}", "b{}"}},
		{`a / ignoring(code) group_left b{c!~"x,y}z"}`, []string{"a{}", "b{c}"}},
		{labelValuesSelector(`label_values(m{job=~"$job"}, instance)`), []string{"m{job}"}},
		{`absent(gateway_connections)`, []string{"gateway_connections{}"}},
		{`sum by (code) (rate(m[5m])) > bool 1 unless on() vector(1)`, []string{"m{}"}},
	} {
		sels, err := promSelectors(tt.expr)
		if err != nil {
			t.Errorf("%q: %v", tt.expr, err)
			continue
		}
		var got []string
		for _, s := range sels {
			got = append(got, s.name+"{"+strings.Join(s.labels, ",")+"}")
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("%q: %v, want %v", tt.expr, got, tt.want)
		}
	}
	for _, bad := range []string{`{__name__="x"}`, `rate(x[5m]`, `x{a="b"`} {
		if _, err := promSelectors(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// ----------------------------------------------------------------------------- scraping

type metricFamily struct {
	name, typ string
	labels    map[string]bool
}

type metricFamilies map[string]*metricFamily

// family finds the family of a series name: itself, or a histogram's or summary's _bucket,
// _sum, _count.
func (m metricFamilies) family(name string) (*metricFamily, bool) {
	if name == "up" {
		return &metricFamily{name: "up", typ: "gauge", labels: map[string]bool{}}, true
	}
	if f, ok := m[name]; ok {
		return f, true
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suf)
		if f, found := m[base]; ok && found && (f.typ == "histogram" || f.typ == "summary" && suf != "_bucket") {
			return f, true
		}
	}
	return nil, false
}

// scrapeNode starts an in-process node, makes it use every code path that creates labelled
// series (a client publishing and receiving, a refused upgrade, a refused frame, the API), and
// parses its /metrics.
func scrapeNode(t *testing.T) metricFamilies {
	t.Helper()
	secret := "observability-test-secret-0123456789"
	apiKey := "observability-api-key-0123"
	cfg, err := configs.Load("", []string{"GATEWAY_JWT_SECRET=" + secret, "GATEWAY_API_KEY=" + apiKey,
		"GATEWAY_TOPIC_PREFIX=obs" + fmt.Sprint(time.Now().UnixNano()%1e6), "GATEWAY_DRAIN_PERIOD=100ms"})
	if err != nil {
		t.Fatal(err)
	}
	_, base := nodetest.InProcess(t, cfg)
	tok, err := auth.SignHS256([]byte(secret), "alice", time.Hour, []string{"*"}, []string{"*"})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := wstest.Dial(t, base, tok)
	c.Subscribe("news")
	c.Send(`{"type":"publish","id":"p1","channel":"news","data":{"n":1},"msg_id":"m1"}`)
	c.ExpectAll("ack", "message")
	c.Send(`{"type":"subscribe","id":"x","channel":"bad channel!"}`)
	if f := c.Expect("error"); f.Str("code") != "bad_request" {
		t.Fatalf("bad subscribe: %v", f)
	}
	req, _ := http.NewRequest("POST", base+"/api/publish", strings.NewReader(`{"channel":"news","data":2}`))
	req.Header.Set("Authorization", "Bearer "+apiKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if _, resp, err := wstest.TryDial(t, base, "not-a-token", nil); err == nil || resp == nil || resp.StatusCode != 401 {
		t.Fatalf("upgrade with a bad token: %v", err)
	}

	var out metricFamilies
	wstest.WaitFor(t, func() error {
		resp, err := http.Get(base + "/metrics")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if out, err = parseExposition(resp.Body); err != nil {
			return err
		}
		// The labelled series of the traffic above.
		for _, want := range []string{"gateway_router_handling_seconds", "gateway_router_messages_total", "gateway_upgrades_refused_total"} {
			if f := out[want]; f == nil || len(f.labels) == 0 {
				return fmt.Errorf("%s has no series yet", want)
			}
		}
		return nil
	})
	return out
}

var labelName = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="(?:[^"\\]|\\.)*"`)

// parseExposition reads the Prometheus text format: the families and the labels of their series.
func parseExposition(r io.Reader) (metricFamilies, error) {
	out := metricFamilies{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if f, ok := strings.CutPrefix(line, "# TYPE "); ok {
			parts := strings.Fields(f)
			if len(parts) != 2 {
				return nil, fmt.Errorf("bad TYPE line %q", line)
			}
			out[parts[0]] = &metricFamily{name: parts[0], typ: parts[1], labels: map[string]bool{}}
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, rest, _ := strings.Cut(line, "{")
		name = strings.Fields(name)[0]
		f, ok := out[name]
		if !ok {
			f, ok = out.family(name)
		}
		if !ok {
			return nil, fmt.Errorf("series %s before its TYPE line", name)
		}
		if i := strings.LastIndex(rest, "}"); i >= 0 {
			for _, m := range labelName.FindAllStringSubmatch(rest[:i], -1) {
				f.labels[m[1]] = true
			}
		}
	}
	return out, sc.Err()
}

// ----------------------------------------------------------------------------- PromQL scanning

type promSelector struct {
	name   string
	labels []string // label names of its matchers, in order
}

type sourcedExpr struct{ where, expr string }

// promKeywords are identifiers of PromQL that are not metric names.
var promKeywords = []string{"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset", "inf", "nan"}

// promAggregations may be followed by a grouping clause before their parenthesis.
var promAggregations = []string{"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio"}

// promSelectors finds the metric selectors of a PromQL expression (a scanner, not a parser: it
// knows strings, label matchers, ranges, function calls, grouping lists, offsets and Grafana
// variables, which is all the files here use).
func promSelectors(expr string) ([]promSelector, error) {
	var out []promSelector
	rs := []rune(expr)
	depth := 0
	skipString := func(i int) (int, error) {
		q := rs[i]
		for j := i + 1; j < len(rs); j++ {
			if rs[j] == '\\' && q != '`' {
				j++
				continue
			}
			if rs[j] == q {
				return j + 1, nil
			}
		}
		return 0, fmt.Errorf("unterminated string at %d", i)
	}
	skipSpace := func(i int) int {
		for i < len(rs) && unicode.IsSpace(rs[i]) {
			i++
		}
		return i
	}
	isIdent := func(r rune, first bool) bool {
		return r == '_' || r == ':' || unicode.IsLetter(r) || !first && unicode.IsDigit(r)
	}
	for i := 0; i < len(rs); {
		r := rs[i]
		switch {
		case unicode.IsSpace(r):
			i++
		case r == '"' || r == '\'' || r == '`':
			j, err := skipString(i)
			if err != nil {
				return nil, err
			}
			i = j
		case r == '(':
			depth++
			i++
		case r == ')':
			if depth--; depth < 0 {
				return nil, fmt.Errorf("unbalanced ) at %d", i)
			}
			i++
		case r == '[':
			j := strings.IndexRune(string(rs[i:]), ']')
			if j < 0 {
				return nil, fmt.Errorf("unterminated range at %d", i)
			}
			i += len([]rune(string(rs[i:])[:j])) + 1
		case r == '{':
			return nil, fmt.Errorf("a selector without a metric name at %d", i)
		case r == '$':
			i++
			for i < len(rs) && (rs[i] == '{' || rs[i] == '}' || isIdent(rs[i], false)) {
				i++
			}
		case unicode.IsDigit(r) || r == '.':
			for i < len(rs) && (unicode.IsDigit(rs[i]) || unicode.IsLetter(rs[i]) || rs[i] == '.') {
				i++
			}
		case isIdent(r, true):
			j := i
			for j < len(rs) && isIdent(rs[j], false) {
				j++
			}
			word := string(rs[i:j])
			k := skipSpace(j)
			switch {
			case slices.Contains([]string{"by", "without", "on", "ignoring", "group_left", "group_right"}, word):
				// A grouping list of label names, possibly empty.
				if k < len(rs) && rs[k] == '(' {
					e := strings.IndexRune(string(rs[k:]), ')')
					if e < 0 {
						return nil, fmt.Errorf("unterminated %s list", word)
					}
					k += len([]rune(string(rs[k:])[:e])) + 1
				}
				i = k
			case word == "offset":
				// offset 10m
				for k < len(rs) && (unicode.IsDigit(rs[k]) || unicode.IsLetter(rs[k]) || rs[k] == '-') {
					k++
				}
				i = k
			case slices.Contains(promKeywords, strings.ToLower(word)), slices.Contains(promAggregations, word):
				i = j
			case k < len(rs) && rs[k] == '(':
				i = j // a function call
			default:
				sel := promSelector{name: word}
				i = j
				if k < len(rs) && rs[k] == '{' {
					e, labels, err := scanMatchers(rs, k)
					if err != nil {
						return nil, err
					}
					sel.labels, i = labels, e
				}
				out = append(out, sel)
			}
		default:
			i++
		}
	}
	if depth != 0 {
		return nil, fmt.Errorf("unbalanced parentheses")
	}
	return out, nil
}

// scanMatchers reads {a="x", b=~"y"} from rs[i] == '{' and returns the index after it and the
// label names.
func scanMatchers(rs []rune, i int) (int, []string, error) {
	var labels []string
	i++
	for {
		for i < len(rs) && (unicode.IsSpace(rs[i]) || rs[i] == ',') {
			i++
		}
		if i >= len(rs) {
			return 0, nil, fmt.Errorf("unterminated label matchers")
		}
		if rs[i] == '}' {
			return i + 1, labels, nil
		}
		j := i
		for j < len(rs) && (rs[j] == '_' || unicode.IsLetter(rs[j]) || unicode.IsDigit(rs[j])) {
			j++
		}
		if j == i {
			return 0, nil, fmt.Errorf("bad label matcher at %d", i)
		}
		labels = append(labels, string(rs[i:j]))
		for j < len(rs) && strings.ContainsRune("=!~ ", rs[j]) {
			j++
		}
		if j >= len(rs) || rs[j] != '"' && rs[j] != '\'' && rs[j] != '`' {
			return 0, nil, fmt.Errorf("label %s without a quoted value", labels[len(labels)-1])
		}
		q := rs[j]
		j++
		for j < len(rs) && rs[j] != q {
			if rs[j] == '\\' {
				j++
			}
			j++
		}
		if j >= len(rs) {
			return 0, nil, fmt.Errorf("unterminated label value")
		}
		i = j + 1
	}
}

// labelValuesSelector is the selector of a Grafana label_values(selector, label) query.
func labelValuesSelector(def string) string {
	inner, ok := strings.CutPrefix(strings.TrimSpace(def), "label_values(")
	if !ok {
		return def
	}
	inner = strings.TrimSuffix(inner, ")")
	if i := strings.LastIndex(inner, ","); i >= 0 {
		inner = inner[:i]
	}
	return inner
}

// ----------------------------------------------------------------------------- the files

type dashTarget struct {
	RefID string `json:"refId"`
	Expr  string `json:"expr"`
}

type dashPanel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	GridPos struct {
		H int `json:"h"`
		W int `json:"w"`
		X int `json:"x"`
		Y int `json:"y"`
	} `json:"gridPos"`
	Targets []dashTarget `json:"targets"`
	Panels  []dashPanel  `json:"panels"` // of a collapsed row
}

type dashboard struct {
	UID           string      `json:"uid"`
	Title         string      `json:"title"`
	SchemaVersion int         `json:"schemaVersion"`
	Panels        []dashPanel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string `json:"name"`
			Type       string `json:"type"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

func loadDashboard(t *testing.T) *dashboard {
	t.Helper()
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(string(readFile(t, dashboardPath))))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	return &d
}

// dashboardPanels are the panels with queries, inside rows too.
func dashboardPanels(t *testing.T, d *dashboard) []dashPanel {
	t.Helper()
	var out []dashPanel
	var walk func([]dashPanel)
	walk = func(ps []dashPanel) {
		for _, p := range ps {
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			out = append(out, p)
		}
	}
	walk(d.Panels)
	if len(out) == 0 {
		t.Fatalf("%s has no panel", dashboardPath)
	}
	return out
}

type alertRule struct {
	Alert       string            `yaml:"alert"`
	Record      string            `yaml:"record"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type alertFile struct {
	Groups []struct {
		Name  string      `yaml:"name"`
		Rules []alertRule `yaml:"rules"`
	} `yaml:"groups"`
}

func (a *alertFile) rules() []alertRule {
	var out []alertRule
	for _, g := range a.Groups {
		out = append(out, g.Rules...)
	}
	return out
}

func loadAlerts(t *testing.T) *alertFile {
	t.Helper()
	var a alertFile
	dec := yaml.NewDecoder(strings.NewReader(string(readFile(t, alertsPath))))
	dec.KnownFields(true)
	if err := dec.Decode(&a); err != nil {
		t.Fatalf("%s: %v", alertsPath, err)
	}
	return &a
}

type adapterValues struct {
	Rules struct {
		Custom []struct {
			SeriesQuery  string `yaml:"seriesQuery"`
			MetricsQuery string `yaml:"metricsQuery"`
			Name         struct {
				As string `yaml:"as"`
			} `yaml:"name"`
		} `yaml:"custom"`
	} `yaml:"rules"`
}

func loadAdapter(t *testing.T) *adapterValues {
	t.Helper()
	var a adapterValues
	if err := yaml.Unmarshal(readFile(t, adapterPath), &a); err != nil {
		t.Fatalf("%s: %v", adapterPath, err)
	}
	if len(a.Rules.Custom) == 0 {
		t.Fatalf("%s has no custom rule", adapterPath)
	}
	return &a
}
