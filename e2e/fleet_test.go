package e2e

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
)

// Deadlines for the things tests wait on.
const (
	startTimeout    = 20 * time.Second // a process serves its ports
	convergeTimeout = 45 * time.Second // agents run a new version (covers reconnect backoff)
)

// controlPlane is a flotilla-controlplane process with fixed ports and data
// directory, so it can be killed and started again as the same server.
type controlPlane struct {
	xdsAddr, adminAddr, dataDir string
	metricsAddr                 string // Prometheus /metrics
	proc                        *process
	starts                      int
}

// startControlPlane starts a control plane on free ports with an empty store.
func startControlPlane(t *testing.T) *controlPlane {
	t.Helper()
	requireBinaries(t, controlplaneBin, flotctlBin)
	cp := &controlPlane{xdsAddr: freeAddr(t), adminAddr: freeAddr(t), metricsAddr: freeAddr(t), dataDir: t.TempDir()}
	cp.start(t)
	return cp
}

// start starts the process and waits until both of its ports accept connections.
func (cp *controlPlane) start(t *testing.T) {
	t.Helper()
	cp.starts++
	cp.proc = startProcess(t, fmt.Sprintf("controlplane-%d", cp.starts), controlplaneBin.path,
		"--xds-addr", cp.xdsAddr, "--admin-addr", cp.adminAddr, "--metrics-addr", cp.metricsAddr,
		"--data-dir", cp.dataDir, "--log-level", "info")
	waitFor(t, startTimeout, "the control plane to serve its ports", func() error {
		if cp.proc.exited() {
			t.Fatalf("the control plane exited: %v\n%s", cp.proc.waitErr, cp.proc.tail(20))
		}
		if err := dialable(cp.adminAddr); err != nil {
			return err
		}
		return dialable(cp.xdsAddr)
	})
}

// flotctl runs flotctl against this control plane.
func (cp *controlPlane) flotctl(t *testing.T, args ...string) cliResult {
	t.Helper()
	return runFlotctl(t, cp.adminAddr, args...)
}

// apply applies the config at path and returns the new version number.
func (cp *controlPlane) apply(t *testing.T, path, message string) uint64 {
	t.Helper()
	r := cp.flotctl(t, "apply", path, "-m", message, "-o", "json")
	if r.code != 0 {
		t.Fatalf("flotctl apply %s: %s", path, r)
	}
	var resp adminv1.ApplyResponse
	if err := protojson.Unmarshal([]byte(r.stdout), &resp); err != nil {
		t.Fatalf("flotctl apply -o json: %v\n%s", err, r.stdout)
	}
	if resp.GetUnchanged() {
		t.Fatalf("flotctl apply %s stored nothing: the latest version already has this content", path)
	}
	return resp.GetVersion().GetNumber()
}

// agents returns the fleet as `flotctl agents -o json` shows it.
func (cp *controlPlane) agents(t *testing.T) (*adminv1.ListAgentsResponse, error) {
	t.Helper()
	r := cp.flotctl(t, "agents", "-o", "json")
	if r.code != 0 {
		return nil, fmt.Errorf("flotctl agents: %s", r)
	}
	var resp adminv1.ListAgentsResponse
	if err := protojson.Unmarshal([]byte(r.stdout), &resp); err != nil {
		return nil, fmt.Errorf("flotctl agents -o json: %v\n%s", err, r.stdout)
	}
	return &resp, nil
}

// syncedTypes are the types every agent must have SYNCED.
var syncedTypes = []string{"CDS", "EDS", "LDS"}

// waitSynced waits until `flotctl agents` lists exactly the given nodes, each
// SYNCED for CDS, EDS and LDS with the acknowledged version equal to the
// desired one. With latest > 0 every desired version must also be latest
// (true after a control plane start: it versions every type with the
// version it serves).
func (cp *controlPlane) waitSynced(t *testing.T, latest uint64, nodes ...string) *adminv1.ListAgentsResponse {
	t.Helper()
	var last *adminv1.ListAgentsResponse
	waitFor(t, convergeTimeout, fmt.Sprintf("agents %v to be SYNCED", nodes), func() error {
		resp, err := cp.agents(t)
		if err != nil {
			return err
		}
		last = resp
		return checkSynced(resp, latest, nodes)
	})
	return last
}

// checkSynced returns nil when resp lists exactly nodes, all synced.
func checkSynced(resp *adminv1.ListAgentsResponse, latest uint64, nodes []string) error {
	var got []string
	for _, a := range resp.GetAgents() {
		got = append(got, a.GetNodeId())
	}
	if !slices.Equal(got, nodes) {
		return fmt.Errorf("agents %v, want %v", got, nodes)
	}
	for _, a := range resp.GetAgents() {
		byShort := make(map[string]*adminv1.ResourceStatus)
		for _, rs := range a.GetResources() {
			byShort[rs.GetShort()] = rs
		}
		for _, short := range syncedTypes {
			rs := byShort[short]
			switch {
			case rs == nil:
				return fmt.Errorf("%s has no %s status", a.GetNodeId(), short)
			case rs.GetState() != adminv1.SyncState_SYNC_STATE_SYNCED || rs.GetAcked() != rs.GetDesired():
				return fmt.Errorf("%s %s is %s (desired %q, sent %q, acked %q, last NACK %q)", a.GetNodeId(), short,
					rs.GetState(), rs.GetDesired(), rs.GetSent(), rs.GetAcked(), rs.GetLastNack().GetMessage())
			case latest > 0 && rs.GetDesired() != strconv.FormatUint(latest, 10):
				return fmt.Errorf("%s %s runs version %q, want the latest, %d", a.GetNodeId(), short, rs.GetDesired(), latest)
			}
		}
	}
	return nil
}

// agent is a flotilla-agent process with a fixed node id, ports and data
// directory, so it can be stopped and started again as the same agent.
type agent struct {
	id, labels         string
	cp                 *controlPlane
	adminAddr, dataDir string
	proc               *process
	starts             int
}

// startAgent starts an agent connected to cp. labels is "k=v,k=v".
func startAgent(t *testing.T, cp *controlPlane, id, labels string) *agent {
	t.Helper()
	requireBinaries(t, agentBin)
	a := &agent{id: id, labels: labels, cp: cp, adminAddr: freeAddr(t), dataDir: t.TempDir()}
	a.start(t)
	return a
}

// start starts the process and waits until its admin port accepts connections.
func (a *agent) start(t *testing.T) {
	t.Helper()
	a.starts++
	a.proc = startProcess(t, fmt.Sprintf("agent-%s-%d", a.id, a.starts), agentBin.path,
		"--control-plane", a.cp.xdsAddr, "--node-id", a.id, "--labels", a.labels,
		"--data-dir", a.dataDir, "--admin-addr", a.adminAddr, "--drain-timeout", "2s", "--log-level", "info")
	waitFor(t, startTimeout, "agent "+a.id+" to serve its admin port", func() error {
		if a.proc.exited() {
			t.Fatalf("agent %s exited: %v\n%s", a.id, a.proc.waitErr, a.proc.tail(20))
		}
		return dialable(a.adminAddr)
	})
}

// stop stops the agent with SIGTERM; it must exit 0.
func (a *agent) stop(t *testing.T) {
	t.Helper()
	a.proc.stop(t)
	a.proc.killed = true // stopped and checked: nothing left for cleanup
}

// get fetches a path of the agent's admin HTTP server.
func (a *agent) get(path string) (int, string, error) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + a.adminAddr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// ready returns nil once /ready answers 200.
func (a *agent) ready() error {
	code, body, err := a.get("/ready")
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("agent %s /ready: %d %s", a.id, code, strings.TrimSpace(body))
	}
	return nil
}

// waitReady waits for /ready to answer 200.
func (a *agent) waitReady(t *testing.T) {
	t.Helper()
	waitFor(t, convergeTimeout, "agent "+a.id+" to be ready", a.ready)
}

// metric returns the sum of the samples of a metric on /metrics whose
// labels contain every one of labels (e.g. `result="nack"`).
func (a *agent) metric(name string, labels ...string) (float64, error) {
	code, body, err := a.get("/metrics")
	if err != nil {
		return 0, err
	}
	if code != http.StatusOK {
		return 0, fmt.Errorf("agent %s /metrics: %d", a.id, code)
	}
	var sum float64
	found := false
	for _, line := range strings.Split(body, "\n") {
		series, value, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		metric, lbls, _ := strings.Cut(series, "{")
		if metric != name || !containsAll(lbls, labels) {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return 0, fmt.Errorf("agent %s /metrics line %q: %v", a.id, line, err)
		}
		sum += v
		found = true
	}
	if !found {
		return 0, fmt.Errorf("agent %s /metrics has no %s{%s}", a.id, name, strings.Join(labels, ","))
	}
	return sum, nil
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// backend is an in-process TCP echo server that prefixes every reply line
// with its id and a colon, so tests see which backend answered.
type backend struct {
	id   string
	addr string
	ln   net.Listener

	mu    sync.Mutex
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

// startBackend starts an echo backend on a free loopback port.
func startBackend(t *testing.T, id string) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{id: id, addr: ln.Addr().String(), ln: ln, conns: make(map[net.Conn]bool)}
	b.wg.Add(1)
	go b.serve()
	t.Cleanup(b.close)
	return b
}

func (b *backend) serve() {
	defer b.wg.Done()
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.mu.Lock()
		b.conns[c] = true
		b.mu.Unlock()
		b.wg.Add(1)
		go b.echo(c)
	}
}

// echo answers each line read from c with "<id>:<line>".
func (b *backend) echo(c net.Conn) {
	defer b.wg.Done()
	defer func() {
		b.mu.Lock()
		delete(b.conns, c)
		b.mu.Unlock()
		c.Close()
	}()
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if _, err := io.WriteString(c, b.id+":"+line); err != nil {
			return
		}
	}
}

func (b *backend) close() {
	b.ln.Close()
	b.mu.Lock()
	for c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// echoConn is a client connection through a proxy to an echo backend.
type echoConn struct {
	c net.Conn
	r *bufio.Reader
}

// dialEcho connects to addr; the connection is closed at cleanup.
func dialEcho(t *testing.T, addr string) (*echoConn, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	return &echoConn{c: c, r: bufio.NewReader(c)}, nil
}

// say sends one line and returns the reply line without its newline.
func (e *echoConn) say(msg string) (string, error) {
	e.c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(e.c, msg+"\n"); err != nil {
		return "", err
	}
	line, err := e.r.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read reply to %q: %w", msg, err)
	}
	return strings.TrimSuffix(line, "\n"), nil
}

// echoOnce opens a connection to addr, exchanges one line and closes it. It
// returns the reply, e.g. "b1:hello".
func echoOnce(addr, msg string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	e := &echoConn{c: c, r: bufio.NewReader(c)}
	return e.say(msg)
}

// expectEcho returns a condition that holds when a new connection to addr is
// answered by backend id.
func expectEcho(addr, id string) func() error {
	return func() error {
		got, err := echoOnce(addr, "ping")
		if err != nil {
			return fmt.Errorf("through %s: %w", addr, err)
		}
		if want := id + ":ping"; got != want {
			return fmt.Errorf("through %s: got %q, want %q", addr, got, want)
		}
		return nil
	}
}

// config is a bundle for the tests: listeners and clusters.
type config struct {
	listeners []listener
	clusters  map[string][]string // cluster name → endpoint addresses
}

// listener is one listener of a test config, for the agents with one label.
type listener struct {
	name, address, cluster string
	node                   string // only agents labelled node=<node>; "" for all
}

// yaml renders c in the syntax people write.
func (c config) yaml() string {
	var b strings.Builder
	b.WriteString("listeners:\n")
	for _, l := range c.listeners {
		fmt.Fprintf(&b, "  - name: %s\n    address: %q\n    tcp: { cluster: %s }\n", l.name, l.address, l.cluster)
		if l.node != "" {
			fmt.Fprintf(&b, "    agents: { node: %s }\n", l.node)
		}
	}
	b.WriteString("clusters:\n")
	for _, name := range slices.Sorted(maps.Keys(c.clusters)) {
		fmt.Fprintf(&b, "  - name: %s\n    endpoints:\n", name)
		for _, e := range c.clusters[name] {
			fmt.Fprintf(&b, "      - %q\n", e)
		}
	}
	return b.String()
}

// write writes c to a new file and returns its path.
func (c config) write(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(c.yaml()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// fleet is a control plane, a backend b1 and agents a1…aN, each with its own
// listener l-aN (selected by the label node=aN) on its own port, all proxying
// to cluster echo → b1, applied as version 1 and serving traffic.
type fleet struct {
	cp     *controlPlane
	b1     *backend
	agents []*agent
	ports  map[string]string // agent id → its listener's address
	cfg    config
}

// startFleet starts a fleet of n agents and waits until traffic flows
// through every one of them.
func startFleet(t *testing.T, n int) *fleet {
	t.Helper()
	requireBinaries(t, controlplaneBin, agentBin, flotctlBin)
	f := &fleet{
		cp:    startControlPlane(t),
		b1:    startBackend(t, "b1"),
		ports: make(map[string]string),
	}
	f.cfg = config{clusters: map[string][]string{"echo": {f.b1.addr}}}
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("a%d", i)
		f.ports[id] = freeAddr(t)
		f.cfg.listeners = append(f.cfg.listeners, listener{name: "l-" + id, address: f.ports[id], cluster: "echo", node: id})
		f.agents = append(f.agents, startAgent(t, f.cp, id, "node="+id+",dc=ams"))
	}
	if v := f.cp.apply(t, f.cfg.write(t, "v1.yaml"), "first"); v != 1 {
		t.Fatalf("first apply stored version %d, want 1", v)
	}
	for _, a := range f.agents {
		a.waitReady(t)
		waitFor(t, convergeTimeout, "traffic through "+a.id, expectEcho(f.ports[a.id], "b1"))
	}
	return f
}

// nodes returns the fleet's node ids.
func (f *fleet) nodes() []string {
	var ids []string
	for _, a := range f.agents {
		ids = append(ids, a.id)
	}
	return ids
}
