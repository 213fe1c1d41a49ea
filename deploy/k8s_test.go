package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/wsgateway/gateway/configs"
	"github.com/wsgateway/gateway/internal/testcert"
)

// The Kubernetes manifests, relative to the repository root.
const (
	k8sDir = "deploy/k8s"
	// k8sGraceMargin is what terminationGracePeriodSeconds must leave beyond the preStop sleep,
	// the drain and the HTTP shutdown: closing the router (up to publish timeout + 5s when a
	// publish is in flight), the events and the broker.
	k8sGraceMargin = 10 * time.Second
)

// goRuntimeEnv are the variables besides GATEWAY_* that the manifests may set: the Go runtime's.
var goRuntimeEnv = []string{"GOMEMLIMIT", "GOMAXPROCS", "GOGC", "GODEBUG"}

// ----------------------------------------------------------------------------- the tests

// TestK8sKustomization: kustomization.yaml lists exactly the manifests of the folder, and each
// component it offers exists with its patches.
func TestK8sKustomization(t *testing.T) {
	k := loadKustomization(t, k8sDir)
	if k.Kind != "Kustomization" {
		t.Fatalf("%s/kustomization.yaml is a %q", k8sDir, k.Kind)
	}
	files, err := filepath.Glob(filepath.Join(repoRoot, k8sDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, f := range files {
		if b := filepath.Base(f); b != "kustomization.yaml" {
			want = append(want, b)
		}
	}
	got := slices.Sorted(slices.Values(k.Resources))
	if !slices.Equal(got, want) {
		t.Errorf("kustomization resources %v, want every manifest of %s %v", got, k8sDir, want)
	}
	// Components: the enabled ones and those offered in comments.
	comps := slices.Clone(k.Components)
	for _, m := range regexp.MustCompile(`(?m)^\s*#\s*-\s*(components/\S+)`).FindAllStringSubmatch(string(readFile(t, k8sDir+"/kustomization.yaml")), -1) {
		comps = append(comps, m[1])
	}
	dirs, _ := filepath.Glob(filepath.Join(repoRoot, k8sDir, "components", "*"))
	if len(comps) != len(dirs) {
		t.Errorf("kustomization.yaml offers components %v; the folder has %v", comps, dirs)
	}
	for _, c := range comps {
		ck := loadKustomization(t, path.Join(k8sDir, c))
		if ck.Kind != "Component" {
			t.Errorf("%s is a %q, want a Component", c, ck.Kind)
		}
		for _, p := range ck.Patches {
			if p.Path == "" {
				continue
			}
			var docs []any
			if err := decodeAll(readFile(t, path.Join(k8sDir, c, p.Path)), func(n *yaml.Node) error {
				var v any
				docs = append(docs, v)
				return n.Decode(&v)
			}); err != nil || len(docs) == 0 {
				t.Errorf("%s: patch %s: %v (%d documents)", c, p.Path, err, len(docs))
			}
		}
	}
	if k.Namespace != "" {
		if objs := loadK8sFiles(t); objs.find("Namespace", k.Namespace) == nil {
			t.Logf("namespace %s is not created by the manifests (optional)", k.Namespace)
		}
	}
}

// TestK8sManifests checks the manifests as written.
func TestK8sManifests(t *testing.T) {
	objs := loadK8sFiles(t)
	checkK8s(t, objs)
	// The committed secret holds placeholders only.
	for _, o := range objs.all("Secret") {
		if len(o.Data) > 0 {
			t.Errorf("secret %s has base64 data: keep placeholders in stringData", o.Metadata.Name)
		}
		for k, v := range o.StringData {
			if !strings.Contains(v, "REPLACE-ME") {
				t.Errorf("secret %s: %s is not a REPLACE-ME placeholder: never commit a real secret", o.Metadata.Name, k)
			}
		}
	}
}

// TestK8sRendered renders the kustomization with kubectl (when installed), alone and with every
// component, and checks the result like the files.
func TestK8sRendered(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl is not installed: the rendered kustomization is not checked")
	}
	root, err := filepath.Abs(filepath.Join(repoRoot, k8sDir))
	if err != nil {
		t.Fatal(err)
	}
	render := func(t *testing.T, dir string) k8sObjects {
		t.Helper()
		out, err := exec.Command(kubectl, "kustomize", dir).Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, ee.Stderr)
			}
			t.Fatal(err)
		}
		objs, err := parseK8s(out, "kubectl kustomize "+dir)
		if err != nil {
			t.Fatal(err)
		}
		return objs
	}
	t.Run("base", func(t *testing.T) {
		objs := render(t, root)
		checkK8s(t, objs)
		ns := loadKustomization(t, k8sDir).Namespace
		for _, o := range objs {
			if o.Kind != "Namespace" && o.Metadata.Namespace != ns {
				t.Errorf("%s %s rendered in namespace %q, want %q", o.Kind, o.Metadata.Name, o.Metadata.Namespace, ns)
			}
		}
	})
	comps, _ := filepath.Glob(filepath.Join(root, "components", "*"))
	for _, c := range append(comps, "all") {
		t.Run("component="+filepath.Base(c), func(t *testing.T) {
			// An overlay outside the base (kustomize refuses a root inside another).
			dir := t.TempDir()
			rel, err := filepath.Rel(dir, root)
			if err != nil {
				t.Fatal(err)
			}
			var use []string
			for _, c2 := range comps {
				if c == "all" || c2 == c {
					r, _ := filepath.Rel(dir, c2)
					use = append(use, r)
				}
			}
			k := fmt.Sprintf("resources: [%q]\ncomponents: [%s]\n", rel, quoteAll(use))
			if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o600); err != nil {
				t.Fatal(err)
			}
			objs := render(t, dir)
			checkK8s(t, objs)
			if strings.Contains(c, "hpa-connections") || c == "all" {
				hpa := objs.find("HorizontalPodAutoscaler", "gateway")
				if hpa == nil || !slices.Contains(hpa.hpa(t).podsMetrics(), "gateway_connections") {
					t.Error("the hpa-connections component does not scale on gateway_connections")
				}
			}
			if strings.Contains(c, "tls") || c == "all" {
				if env := objs.gateway(t).environ(t, objs); env["GATEWAY_TLS_CERT_FILE"] == "" {
					t.Error("the tls component does not set GATEWAY_TLS_CERT_FILE")
				}
			}
		})
	}
}

// ----------------------------------------------------------------------------- the checks

// checkK8s checks a set of manifests: the gateway Deployment against the Dockerfile and the
// configs package, and the Service, PodDisruptionBudget, HorizontalPodAutoscaler and broker
// around it.
func checkK8s(t *testing.T, objs k8sObjects) {
	t.Helper()
	for _, o := range objs {
		if o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "" {
			t.Errorf("%s: a document without apiVersion, kind or metadata.name", o.source)
		}
	}
	dep := objs.gateway(t)
	spec := dep.workload(t)
	pod := spec.Template.Spec
	c := dep.gatewayContainer(t)
	where := "deployment " + dep.Metadata.Name

	// Three replicas, selected by the template's own labels.
	replicas := 1 // Kubernetes' default
	if spec.Replicas != nil {
		replicas = *spec.Replicas
	}
	if replicas != 3 {
		t.Errorf("%s: replicas %d, want 3", where, replicas)
	}
	if !spec.Selector.matches(spec.Template.Metadata.Labels) {
		t.Errorf("%s: selector %v does not match its pod labels %v", where, spec.Selector.MatchLabels, spec.Template.Metadata.Labels)
	}

	// The image and the command of the Dockerfile.
	df := loadDockerfile(t)
	if repo := imageRepo(c.Image); repo != dockerImageName(t) {
		t.Errorf("%s: image %q, want the image the Dockerfile builds (%s)", where, c.Image, dockerImageName(t))
	}
	if len(c.Command) > 0 && c.Command[0] != df.gatewayBinary(t) {
		t.Errorf("%s: command %q does not start the gateway binary %s", where, c.Command, df.gatewayBinary(t))
	}
	if len(c.Args) > 0 {
		t.Errorf("%s: args %q: configure the gateway through the environment", where, c.Args)
	}

	// Non-root, as the Dockerfile's USER.
	uid := dockerfileUID(t, df)
	runAsNonRoot := firstBool(c.SecurityContext.RunAsNonRoot, pod.SecurityContext.RunAsNonRoot)
	runAsUser := firstInt(c.SecurityContext.RunAsUser, pod.SecurityContext.RunAsUser)
	if runAsNonRoot == nil || !*runAsNonRoot {
		t.Errorf("%s: runAsNonRoot is not true", where)
	}
	if runAsUser == nil {
		t.Errorf("%s: no runAsUser, want the Dockerfile's USER %d", where, uid)
	} else if *runAsUser != uid {
		t.Errorf("%s: runAsUser %d, want the Dockerfile's USER %d", where, *runAsUser, uid)
	}
	sc := c.SecurityContext
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("%s: allowPrivilegeEscalation is not false", where)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("%s: readOnlyRootFilesystem is not true", where)
	}
	if !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Errorf("%s: capabilities.drop %v lacks ALL", where, sc.Capabilities.Drop)
	}

	// The environment: names the configs package reads, values it accepts.
	env := dep.environ(t, objs)
	valid := gatewayEnvNames()
	var environ []string
	for _, k := range sortedKeys(env) {
		switch {
		case strings.HasPrefix(k, configs.EnvPrefix) && !valid[k]:
			t.Errorf("%s: environment %s is not a variable of the configs package (see configs/config.go)", where, k)
		case !strings.HasPrefix(k, configs.EnvPrefix) && !slices.Contains(goRuntimeEnv, k):
			t.Errorf("%s: environment %s is neither a GATEWAY_* variable nor one of the Go runtime's %v", where, k, goRuntimeEnv)
		}
		environ = append(environ, k+"="+env[k])
	}
	if src := c.envSource("GATEWAY_NODE_ID"); src != "fieldRef:metadata.name" {
		t.Errorf("%s: GATEWAY_NODE_ID comes from %q, want the pod name (valueFrom.fieldRef metadata.name): each replica needs its own", where, src)
	}
	tlsOn := env["GATEWAY_TLS_CERT_FILE"] != ""
	if tlsOn {
		checkTLSMount(t, where, pod, c, env)
		// The files exist only in the pod: load the configuration with a certificate of the test.
		cert := testcert.New(t)
		environ = append(environ, "GATEWAY_TLS_CERT_FILE="+cert.CertFile, "GATEWAY_TLS_KEY_FILE="+cert.KeyFile)
	}
	cfg, err := configs.Load("", environ)
	if err != nil {
		t.Fatalf("%s: configs.Load with the pod's environment: %v", where, err)
	}
	if cfg.Development {
		t.Errorf("%s: configs.Load ran in development mode", where)
	}
	if cfg.Broker != configs.BrokerRedis && cfg.Broker != configs.BrokerJetStream {
		t.Errorf("%s: broker %q, want redis or jetstream (a cluster that resumes clients)", where, cfg.Broker)
	}
	checkK8sBroker(t, objs, cfg)

	// The port the node listens on, its probes, its Service.
	_, portStr, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		t.Fatalf("GATEWAY_ADDR %q: %v", cfg.Addr, err)
	}
	port, _ := strconv.Atoi(portStr)
	if c.portNumber(intOrString("http")) != port && !slices.ContainsFunc(c.Ports, func(p containerPort) bool { return p.ContainerPort == port }) {
		t.Errorf("%s: no containerPort %d (GATEWAY_ADDR %s)", where, port, cfg.Addr)
	}
	if cfg.Admin.Addr != "" {
		if h, _, _ := net.SplitHostPort(cfg.Admin.Addr); h != "127.0.0.1" && h != "localhost" && h != "::1" {
			t.Logf("%s: the admin listener %s (pprof) is reachable from the cluster network", where, cfg.Admin.Addr)
		}
	}
	scheme := "HTTP"
	if tlsOn {
		scheme = "HTTPS"
	}
	for _, p := range []struct {
		name, path string
		probe      *probe
	}{{"readinessProbe", "/readyz", c.ReadinessProbe}, {"livenessProbe", "/healthz", c.LivenessProbe}} {
		switch {
		case p.probe == nil || p.probe.HTTPGet == nil:
			t.Errorf("%s: no %s with httpGet %s", where, p.name, p.path)
		case p.probe.HTTPGet.Path != p.path:
			t.Errorf("%s: %s asks %s, want %s", where, p.name, p.probe.HTTPGet.Path, p.path)
		case c.portNumber(p.probe.HTTPGet.Port) != port:
			t.Errorf("%s: %s asks port %q, the node listens on %d", where, p.name, p.probe.HTTPGet.Port, port)
		case strings.ToUpper(cmpOr(p.probe.HTTPGet.Scheme, "HTTP")) != scheme:
			t.Errorf("%s: %s scheme %q, want %s (TLS is %v)", where, p.name, p.probe.HTTPGet.Scheme, scheme, tlsOn)
		}
	}
	podLabels := spec.Template.Metadata.Labels
	services := 0
	for _, s := range objs.all("Service") {
		ss := s.service(t)
		if len(ss.Selector) == 0 || !(labelSelector{MatchLabels: ss.Selector}).matches(podLabels) {
			continue
		}
		services++
		for _, sp := range ss.Ports {
			target := sp.TargetPort
			if target == "" {
				target = intOrString(strconv.Itoa(sp.Port))
			}
			if c.portNumber(target) != port {
				t.Errorf("service %s: port %d targets %q, the node listens on %d", s.Metadata.Name, sp.Port, target, port)
			}
		}
	}
	if services == 0 {
		t.Errorf("no Service selects the gateway's pods %v", podLabels)
	}

	// Shutdown: preStop, then SIGTERM drains; the grace period (counted from preStop) covers it.
	preStop := c.preStopSleep(t)
	if preStop <= 0 {
		t.Errorf("%s: no preStop sleep: pods would drain while still receiving new connections", where)
	}
	need := preStop + cfg.Drain.Period + cfg.WebSocket.WriteTimeout + time.Second + httpShutdownTimeout + k8sGraceMargin
	grace := 30 * time.Second // Kubernetes' default
	if pod.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
	}
	if grace < need {
		t.Errorf("%s: terminationGracePeriodSeconds %v < %v = preStop %v + drain period %v + write timeout %v + 1s + HTTP shutdown %v + margin %v: the pod would be killed mid-drain",
			where, grace, need, preStop, cfg.Drain.Period, cfg.WebSocket.WriteTimeout, httpShutdownTimeout, k8sGraceMargin)
	}

	// Resources: requests for the scheduler and the HPA, a memory limit, GOMEMLIMIT under it.
	for _, r := range []string{"cpu", "memory"} {
		req, ok := c.Resources.Requests[r]
		if !ok {
			t.Errorf("%s: no %s request", where, r)
			continue
		}
		rq, err := parseQuantity(req)
		if err != nil || rq <= 0 {
			t.Errorf("%s: %s request %q: %v", where, r, req, err)
			continue
		}
		if lim, ok := c.Resources.Limits[r]; ok {
			if l, err := parseQuantity(lim); err != nil || l < rq {
				t.Errorf("%s: %s limit %q is below the request %q (%v)", where, r, lim, req, err)
			}
		}
	}
	memLimit, err := parseQuantity(c.Resources.Limits["memory"])
	if err != nil || memLimit <= 0 {
		t.Errorf("%s: memory limit %q: %v", where, c.Resources.Limits["memory"], err)
	}
	if v := env["GOMEMLIMIT"]; v != "" {
		if m, err := parseQuantity(strings.TrimSuffix(v, "B")); err != nil || m >= memLimit {
			t.Errorf("%s: GOMEMLIMIT %s is not below the memory limit %s (%v)", where, v, c.Resources.Limits["memory"], err)
		}
	}

	// PodDisruptionBudget: selects the pods and lets one go at a time.
	pdbs := 0
	for _, o := range objs.all("PodDisruptionBudget") {
		p := o.pdb(t)
		if !p.Selector.matches(podLabels) {
			continue
		}
		pdbs++
		if o.APIVersion != "policy/v1" {
			t.Errorf("pdb %s: apiVersion %s, want policy/v1", o.Metadata.Name, o.APIVersion)
		}
		switch {
		case p.MaxUnavailable != nil:
			if n, err := strconv.Atoi(string(*p.MaxUnavailable)); err == nil && n < 1 {
				t.Errorf("pdb %s: maxUnavailable %d blocks every node drain", o.Metadata.Name, n)
			}
		case p.MinAvailable != nil:
			if n, err := strconv.Atoi(string(*p.MinAvailable)); err == nil && n >= replicas {
				t.Errorf("pdb %s: minAvailable %d with %d replicas blocks every node drain", o.Metadata.Name, n, replicas)
			}
		default:
			t.Errorf("pdb %s: neither minAvailable nor maxUnavailable", o.Metadata.Name)
		}
	}
	if pdbs != 1 {
		t.Errorf("%d PodDisruptionBudgets select the gateway's pods %v, want 1", pdbs, podLabels)
	}

	// HorizontalPodAutoscaler: scales this Deployment, from at least its replica count.
	hpas := 0
	for _, o := range objs.all("HorizontalPodAutoscaler") {
		h := o.hpa(t)
		ref := h.ScaleTargetRef
		if ref.Kind != "Deployment" || ref.Name != dep.Metadata.Name {
			continue
		}
		hpas++
		if o.APIVersion != "autoscaling/v2" || ref.APIVersion != "apps/v1" {
			t.Errorf("hpa %s: apiVersion %s, target %s: want autoscaling/v2 over apps/v1", o.Metadata.Name, o.APIVersion, ref.APIVersion)
		}
		minReplicas := 1 // Kubernetes' default
		if h.MinReplicas != nil {
			minReplicas = *h.MinReplicas
		}
		if minReplicas < 2 || minReplicas > replicas || h.MaxReplicas < replicas {
			t.Errorf("hpa %s: min %d, max %d around %d replicas: want 2 <= min <= replicas <= max", o.Metadata.Name, minReplicas, h.MaxReplicas, replicas)
		}
		if len(h.Metrics) == 0 {
			t.Errorf("hpa %s: no metrics", o.Metadata.Name)
		}
		for _, m := range h.Metrics {
			switch {
			case m.Type == "Resource" && m.Resource != nil && m.Resource.Name == "cpu":
				if m.Resource.Target.Type == "Utilization" && c.Resources.Requests["cpu"] == "" {
					t.Errorf("hpa %s: CPU utilization needs a CPU request", o.Metadata.Name)
				}
			case m.Type == "Pods" && m.Pods != nil:
				if !strings.HasPrefix(m.Pods.Metric.Name, "gateway_") {
					t.Errorf("hpa %s: pods metric %q is not one of the gateway's", o.Metadata.Name, m.Pods.Metric.Name)
				}
			default:
				t.Errorf("hpa %s: metric %+v: want CPU or a gateway metric per pod", o.Metadata.Name, m)
			}
		}
	}
	if hpas != 1 {
		t.Errorf("%d HorizontalPodAutoscalers scale deployment %s, want 1", hpas, dep.Metadata.Name)
	}
}

// checkTLSMount: the certificate files are in a volume from a secret mounted into the container.
func checkTLSMount(t *testing.T, where string, pod podSpec, c *container, env map[string]string) {
	t.Helper()
	for _, k := range []string{"GATEWAY_TLS_CERT_FILE", "GATEWAY_TLS_KEY_FILE"} {
		f := env[k]
		ok := false
		for _, m := range c.VolumeMounts {
			if !strings.HasPrefix(f, strings.TrimSuffix(m.MountPath, "/")+"/") {
				continue
			}
			for _, v := range pod.Volumes {
				ok = ok || v.Name == m.Name && v.Secret != nil && v.Secret.SecretName != ""
			}
		}
		if !ok {
			t.Errorf("%s: %s=%s is not in a secret volume mounted into the container", where, k, f)
		}
	}
}

// checkK8sBroker: the broker address names a Service of the manifests, on a port that reaches a
// container of the pods it selects.
func checkK8sBroker(t *testing.T, objs k8sObjects, cfg *configs.Config) {
	t.Helper()
	addr := brokerAddress(cfg)
	if u, err := url.Parse(addr); err == nil && u.Host != "" {
		addr = u.Host
	}
	host, portStr, err := net.SplitHostPort(strings.Split(addr, ",")[0])
	if err != nil {
		t.Errorf("broker address %q: %v", brokerAddress(cfg), err)
		return
	}
	host = strings.Split(host, ".")[0] // redis.wsgateway.svc.cluster.local -> redis
	svc := objs.find("Service", host)
	if svc == nil {
		t.Logf("broker %s is not a Service of the manifests: an external broker", addr)
		return
	}
	port, _ := strconv.Atoi(portStr)
	s := svc.service(t)
	i := slices.IndexFunc(s.Ports, func(p servicePort) bool { return p.Port == port })
	if i < 0 {
		t.Errorf("broker address %s: service %s has no port %d", addr, host, port)
		return
	}
	target := cmpOr(s.Ports[i].TargetPort, intOrString(portStr))
	for _, o := range objs {
		if o.Kind != "Deployment" && o.Kind != "StatefulSet" {
			continue
		}
		w := o.workload(t)
		if !(labelSelector{MatchLabels: s.Selector}).matches(w.Template.Metadata.Labels) {
			continue
		}
		for i := range w.Template.Spec.Containers {
			if w.Template.Spec.Containers[i].portNumber(target) > 0 {
				return
			}
		}
	}
	t.Errorf("broker service %s selects no pod with a container port %q", host, target)
}

// ----------------------------------------------------------------------------- the model

type objectMeta struct {
	Name        string            `yaml:"name"`
	Namespace   string            `yaml:"namespace"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type k8sObject struct {
	APIVersion string            `yaml:"apiVersion"`
	Kind       string            `yaml:"kind"`
	Metadata   objectMeta        `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
	StringData map[string]string `yaml:"stringData"`
	Spec       yaml.Node         `yaml:"spec"`
	source     string
}

type k8sObjects []*k8sObject

func (objs k8sObjects) all(kind string) k8sObjects {
	var out k8sObjects
	for _, o := range objs {
		if o.Kind == kind {
			out = append(out, o)
		}
	}
	return out
}

func (objs k8sObjects) find(kind, name string) *k8sObject {
	for _, o := range objs {
		if o.Kind == kind && o.Metadata.Name == name {
			return o
		}
	}
	return nil
}

// gateway is the one Deployment that runs the gateway's image.
func (objs k8sObjects) gateway(t *testing.T) *k8sObject {
	t.Helper()
	var found k8sObjects
	for _, o := range objs.all("Deployment") {
		for _, c := range o.workload(t).Template.Spec.Containers {
			if imageRepo(c.Image) == dockerImageName(t) {
				found = append(found, o)
				break
			}
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d Deployments run the image %s, want 1", len(found), dockerImageName(t))
	}
	return found[0]
}

func (o *k8sObject) decodeSpec(t *testing.T, v any) {
	t.Helper()
	if err := o.Spec.Decode(v); err != nil {
		t.Fatalf("%s: %s %s: spec: %v", o.source, o.Kind, o.Metadata.Name, err)
	}
}

type workloadSpec struct {
	Replicas *int          `yaml:"replicas"`
	Selector labelSelector `yaml:"selector"`
	Template struct {
		Metadata objectMeta `yaml:"metadata"`
		Spec     podSpec    `yaml:"spec"`
	} `yaml:"template"`
}

func (o *k8sObject) workload(t *testing.T) *workloadSpec {
	var w workloadSpec
	o.decodeSpec(t, &w)
	return &w
}

type podSecurityContext struct {
	RunAsNonRoot *bool  `yaml:"runAsNonRoot"`
	RunAsUser    *int64 `yaml:"runAsUser"`
}

type podSpec struct {
	TerminationGracePeriodSeconds *int64             `yaml:"terminationGracePeriodSeconds"`
	SecurityContext               podSecurityContext `yaml:"securityContext"`
	Containers                    []container        `yaml:"containers"`
	Volumes                       []struct {
		Name   string `yaml:"name"`
		Secret *struct {
			SecretName string `yaml:"secretName"`
		} `yaml:"secret"`
	} `yaml:"volumes"`
}

type containerPort struct {
	Name          string `yaml:"name"`
	ContainerPort int    `yaml:"containerPort"`
}

type container struct {
	Name    string          `yaml:"name"`
	Image   string          `yaml:"image"`
	Command []string        `yaml:"command"`
	Args    []string        `yaml:"args"`
	Ports   []containerPort `yaml:"ports"`
	Env     []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			FieldRef *struct {
				FieldPath string `yaml:"fieldPath"`
			} `yaml:"fieldRef"`
			SecretKeyRef    *keyRef `yaml:"secretKeyRef"`
			ConfigMapKeyRef *keyRef `yaml:"configMapKeyRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	EnvFrom []struct {
		Prefix       string   `yaml:"prefix"`
		ConfigMapRef *nameRef `yaml:"configMapRef"`
		SecretRef    *nameRef `yaml:"secretRef"`
	} `yaml:"envFrom"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	Lifecycle      struct {
		PreStop *struct {
			Sleep *struct {
				Seconds int64 `yaml:"seconds"`
			} `yaml:"sleep"`
			Exec *struct {
				Command []string `yaml:"command"`
			} `yaml:"exec"`
		} `yaml:"preStop"`
	} `yaml:"lifecycle"`
	Resources struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext struct {
		podSecurityContext       `yaml:",inline"`
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
}

type nameRef struct {
	Name string `yaml:"name"`
}

type keyRef struct {
	Name string `yaml:"name"`
	Key  string `yaml:"key"`
}

type probe struct {
	HTTPGet *struct {
		Path   string      `yaml:"path"`
		Port   intOrString `yaml:"port"`
		Scheme string      `yaml:"scheme"`
	} `yaml:"httpGet"`
}

// intOrString is a port or a port's name, as written.
type intOrString string

func (v *intOrString) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a number or a name", n.Line)
	}
	*v = intOrString(n.Value)
	return nil
}

// portNumber resolves a port (a number or the name of one of the container's ports); 0 when
// it names no port of the container.
func (c *container) portNumber(p intOrString) int {
	if n, err := strconv.Atoi(string(p)); err == nil {
		return n
	}
	for _, cp := range c.Ports {
		if cp.Name == string(p) {
			return cp.ContainerPort
		}
	}
	return 0
}

// envSource says where variable k comes from: "value", "fieldRef:PATH", "secret", "configMap"
// or "" when it is not in env.
func (c *container) envSource(k string) string {
	for _, e := range c.Env {
		if e.Name != k {
			continue
		}
		switch {
		case e.ValueFrom == nil:
			return "value"
		case e.ValueFrom.FieldRef != nil:
			return "fieldRef:" + e.ValueFrom.FieldRef.FieldPath
		case e.ValueFrom.SecretKeyRef != nil:
			return "secret"
		case e.ValueFrom.ConfigMapKeyRef != nil:
			return "configMap"
		}
	}
	return ""
}

// preStopSleep is how long the preStop hook sleeps: a sleep action or exec ["sleep", N].
func (c *container) preStopSleep(t *testing.T) time.Duration {
	t.Helper()
	ps := c.Lifecycle.PreStop
	switch {
	case ps == nil:
		return 0
	case ps.Sleep != nil:
		return time.Duration(ps.Sleep.Seconds) * time.Second
	case ps.Exec != nil && len(ps.Exec.Command) == 2 && path.Base(ps.Exec.Command[0]) == "sleep":
		n, err := strconv.Atoi(ps.Exec.Command[1])
		if err != nil {
			t.Errorf("preStop %q: %v", ps.Exec.Command, err)
		}
		return time.Duration(n) * time.Second
	}
	t.Errorf("preStop is neither a sleep action nor exec sleep N")
	return 0
}

func (o *k8sObject) gatewayContainer(t *testing.T) *container {
	t.Helper()
	w := o.workload(t)
	for i, c := range w.Template.Spec.Containers {
		if imageRepo(c.Image) == dockerImageName(t) {
			return &w.Template.Spec.Containers[i]
		}
	}
	t.Fatalf("deployment %s has no container of %s", o.Metadata.Name, dockerImageName(t))
	return nil
}

// environ is the gateway container's environment as the kubelet builds it: envFrom (ConfigMaps
// and Secrets of the manifests), then env; a value from the pod's fields is made up.
func (o *k8sObject) environ(t *testing.T, objs k8sObjects) map[string]string {
	t.Helper()
	c := o.gatewayContainer(t)
	env := map[string]string{}
	source := func(kind, name string) map[string]string {
		src := objs.find(kind, name)
		if src == nil {
			t.Errorf("deployment %s: envFrom %s %s is not in the manifests", o.Metadata.Name, kind, name)
			return nil
		}
		out := map[string]string{}
		for k, v := range src.Data {
			out[k] = v
		}
		for k, v := range src.StringData {
			out[k] = v
		}
		return out
	}
	for _, ef := range c.EnvFrom {
		var vars map[string]string
		switch {
		case ef.ConfigMapRef != nil:
			vars = source("ConfigMap", ef.ConfigMapRef.Name)
		case ef.SecretRef != nil:
			vars = source("Secret", ef.SecretRef.Name)
		}
		for k, v := range vars {
			env[ef.Prefix+k] = v
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.FieldRef != nil:
			env[e.Name] = "gateway-7d9f8b6c5-x2x4z" // a pod name
		case e.ValueFrom.SecretKeyRef != nil:
			env[e.Name] = source("Secret", e.ValueFrom.SecretKeyRef.Name)[e.ValueFrom.SecretKeyRef.Key]
		case e.ValueFrom.ConfigMapKeyRef != nil:
			env[e.Name] = source("ConfigMap", e.ValueFrom.ConfigMapKeyRef.Name)[e.ValueFrom.ConfigMapKeyRef.Key]
		}
	}
	return env
}

type labelSelector struct {
	MatchLabels      map[string]string `yaml:"matchLabels"`
	MatchExpressions []any             `yaml:"matchExpressions"`
}

// matches reports whether the selector (matchLabels only) selects labels.
func (s labelSelector) matches(labels map[string]string) bool {
	if len(s.MatchLabels) == 0 || len(s.MatchExpressions) > 0 {
		return false
	}
	for k, v := range s.MatchLabels {
		if labels[k] != v {
			return false
		}
	}
	return true
}

type servicePort struct {
	Name       string      `yaml:"name"`
	Port       int         `yaml:"port"`
	TargetPort intOrString `yaml:"targetPort"`
}

type serviceSpec struct {
	Selector map[string]string `yaml:"selector"`
	Ports    []servicePort     `yaml:"ports"`
}

func (o *k8sObject) service(t *testing.T) *serviceSpec {
	var s serviceSpec
	o.decodeSpec(t, &s)
	return &s
}

type pdbSpec struct {
	Selector       labelSelector `yaml:"selector"`
	MinAvailable   *intOrString  `yaml:"minAvailable"`
	MaxUnavailable *intOrString  `yaml:"maxUnavailable"`
}

func (o *k8sObject) pdb(t *testing.T) *pdbSpec {
	var p pdbSpec
	o.decodeSpec(t, &p)
	return &p
}

type hpaSpec struct {
	ScaleTargetRef struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
		Name       string `yaml:"name"`
	} `yaml:"scaleTargetRef"`
	MinReplicas *int `yaml:"minReplicas"`
	MaxReplicas int  `yaml:"maxReplicas"`
	Metrics     []struct {
		Type     string `yaml:"type"`
		Resource *struct {
			Name   string `yaml:"name"`
			Target struct {
				Type string `yaml:"type"`
			} `yaml:"target"`
		} `yaml:"resource"`
		Pods *struct {
			Metric struct {
				Name string `yaml:"name"`
			} `yaml:"metric"`
		} `yaml:"pods"`
	} `yaml:"metrics"`
}

func (o *k8sObject) hpa(t *testing.T) *hpaSpec {
	var h hpaSpec
	o.decodeSpec(t, &h)
	return &h
}

func (h *hpaSpec) podsMetrics() []string {
	var out []string
	for _, m := range h.Metrics {
		if m.Pods != nil {
			out = append(out, m.Pods.Metric.Name)
		}
	}
	return out
}

type kustomization struct {
	Kind       string   `yaml:"kind"`
	Namespace  string   `yaml:"namespace"`
	Resources  []string `yaml:"resources"`
	Components []string `yaml:"components"`
	Patches    []struct {
		Path string `yaml:"path"`
	} `yaml:"patches"`
}

func loadKustomization(t *testing.T, dir string) *kustomization {
	t.Helper()
	var k kustomization
	if err := yaml.Unmarshal(readFile(t, path.Join(dir, "kustomization.yaml")), &k); err != nil {
		t.Fatalf("%s/kustomization.yaml: %v", dir, err)
	}
	return &k
}

// loadK8sFiles parses every manifest the kustomization lists.
func loadK8sFiles(t *testing.T) k8sObjects {
	t.Helper()
	var objs k8sObjects
	for _, r := range loadKustomization(t, k8sDir).Resources {
		o, err := parseK8s(readFile(t, path.Join(k8sDir, r)), path.Join(k8sDir, r))
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, o...)
	}
	return objs
}

// parseK8s decodes every document of a multi-document YAML stream.
func parseK8s(src []byte, source string) (k8sObjects, error) {
	var objs k8sObjects
	err := decodeAll(src, func(n *yaml.Node) error {
		o := &k8sObject{source: source}
		if err := n.Decode(o); err != nil {
			return err
		}
		objs = append(objs, o)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	return objs, nil
}

func decodeAll(src []byte, f func(*yaml.Node) error) error {
	dec := yaml.NewDecoder(bytes.NewReader(src))
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if len(n.Content) == 0 || n.Content[0].Kind == yaml.ScalarNode && n.Content[0].Tag == "!!null" {
			continue // an empty document
		}
		if err := f(&n); err != nil {
			return err
		}
	}
}

// ----------------------------------------------------------------------------- helpers

// dockerImageName is the name the Dockerfile's usage comment builds (`docker build -t NAME .`).
func dockerImageName(t *testing.T) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^#\s+docker build -t (\S+) \.\s*$`).FindSubmatch(readFile(t, dockerfilePath))
	if m == nil {
		t.Fatalf("%s does not say which image it builds (a `docker build -t NAME .` comment)", dockerfilePath)
	}
	return string(m[1])
}

// imageRepo is an image reference without its tag or digest.
func imageRepo(image string) string {
	image, _, _ = strings.Cut(image, "@")
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		image = image[:i]
	}
	return image
}

// dockerfileUID is the numeric user of the final stage's USER.
func dockerfileUID(t *testing.T, df *dockerfile) int64 {
	t.Helper()
	u := df.final().last("USER")
	if u == nil {
		t.Fatalf("%s has no USER", dockerfilePath)
	}
	user, _, _ := strings.Cut(strings.TrimSpace(u.args), ":")
	uid, err := strconv.ParseInt(user, 10, 64)
	if err != nil {
		t.Fatalf("%s: USER %s is not numeric (runAsNonRoot cannot check a name)", dockerfilePath, u.args)
	}
	return uid
}

// parseQuantity reads a Kubernetes quantity ("250m", "2", "256Mi", "1G") or a Go memory limit
// without its B ("900Mi").
func parseQuantity(s string) (float64, error) {
	if s == "" {
		return 0, errors.New("empty quantity")
	}
	mult := map[string]float64{
		"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
		"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
	}
	num := strings.TrimRight(s, "kmMGTi")
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("quantity %q: %w", s, err)
	}
	if suf := s[len(num):]; suf != "" {
		m, ok := mult[suf]
		if !ok {
			return 0, fmt.Errorf("quantity %q: unknown suffix %q", s, suf)
		}
		f *= m
	}
	return f, nil
}

func firstBool(vs ...*bool) *bool {
	for _, v := range vs {
		if v != nil {
			return v
		}
	}
	return nil
}

func firstInt(vs ...*int64) *int64 {
	for _, v := range vs {
		if v != nil {
			return v
		}
	}
	return nil
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

func quoteAll(s []string) string {
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = strconv.Quote(v)
	}
	return strings.Join(q, ", ")
}
