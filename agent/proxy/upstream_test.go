package proxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/flotilla-proxy/flotilla/agent/proxy"
	"github.com/flotilla-proxy/flotilla/agent/runtime/runtimetest"
	"github.com/flotilla-proxy/flotilla/agent/upstream"
)

// named returns a backend handler that first writes the backend's name and a newline, then
// echoes.
func named(name string) func(*net.TCPConn) {
	return func(c *net.TCPConn) {
		if _, err := io.WriteString(c, name+"\n"); err != nil {
			return
		}
		echo(c)
	}
}

// whoFrom connects to the listener from the loopback address src (127.0.0.x, "" for any)
// and returns the name the backend announces. The connection is closed.
func whoFrom(t testing.TB, m *proxy.Manager, listener, src string) string {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	c, err := d.Dial("tcp4", m.Addr(listener).String())
	if err != nil {
		t.Fatalf("dial from %s: %v", src, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("read the backend's name (from %s): %v", src, err)
	}
	return strings.TrimSpace(line)
}

// namedBackends starts n named backends "b0".."bn-1" and returns their addresses and a
// name → backend map.
func namedBackends(t testing.TB, n int) ([]string, map[string]*backend) {
	addrs := make([]string, n)
	byName := map[string]*backend{}
	for i := range n {
		name := fmt.Sprintf("b%d", i)
		b := startBackend(t, named(name))
		addrs[i] = b.addr
		byName[name] = b
	}
	return addrs, byName
}

func TestLoadBalancingPolicies(t *testing.T) {
	for _, policy := range []clusterv3.Cluster_LbPolicy{clusterv3.Cluster_RING_HASH, clusterv3.Cluster_MAGLEV} {
		t.Run(policy.String()+" keeps a client on its backend", func(t *testing.T) {
			addrs, _ := namedBackends(t, 3)
			m, _ := newManager(t, proxy.Options{})
			cl := cluster("pool", addrs...)
			cl.LbPolicy = policy
			l := tcpListener("lb", 0, "pool", func(tp *tcpproxyv3.TcpProxy) { runtimetest.HashSourceIP(tp) })
			apply(t, m, graph(t, []*listenerv3.Listener{l}, cl))

			seen := map[string]bool{}
			for i := 1; i <= 20; i++ {
				src := fmt.Sprintf("127.0.0.%d", i)
				first := whoFrom(t, m, "lb", src)
				seen[first] = true
				for range 3 {
					if got := whoFrom(t, m, "lb", src); got != first {
						t.Fatalf("client %s went to %s, then to %s", src, first, got)
					}
				}
			}
			if len(seen) < 2 {
				t.Errorf("20 client addresses all went to %v", seen)
			}
		})
	}

	t.Run("LEAST_REQUEST spreads held connections evenly", func(t *testing.T) {
		addrs, byName := namedBackends(t, 2)
		m, _ := newManager(t, proxy.Options{})
		cl := cluster("pool", addrs...)
		cl.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
		apply(t, m, graph(t, []*listenerv3.Listener{tcpListener("lb", 0, "pool", nil)}, cl))
		for i := range 40 {
			c := dialListener(t, m, "lb") // held open until the test ends
			if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
				t.Fatalf("connection %d: %v", i, err)
			}
		}
		a, b := byName["b0"].open.Load(), byName["b1"].open.Load()
		if a+b != 40 || a < 14 || b < 14 {
			t.Errorf("open connections per backend = %d, %d; want 40 spread evenly", a, b)
		}
	})

	t.Run("RANDOM reaches every backend", func(t *testing.T) {
		addrs, _ := namedBackends(t, 2)
		m, _ := newManager(t, proxy.Options{})
		cl := cluster("pool", addrs...)
		cl.LbPolicy = clusterv3.Cluster_RANDOM
		apply(t, m, graph(t, []*listenerv3.Listener{tcpListener("lb", 0, "pool", nil)}, cl))
		seen := map[string]int{}
		for range 40 {
			seen[whoFrom(t, m, "lb", "")]++
		}
		if len(seen) != 2 {
			t.Errorf("40 connections went to %v, want both backends", seen)
		}
	})
}

// httpBackend is an HTTP server whose /healthz answers 200 or 503 as told and whose other
// paths answer its name.
type httpBackend struct {
	name    string
	addr    string
	healthy atomic.Bool
}

func startHTTPBackend(t testing.TB, name string) *httpBackend {
	t.Helper()
	b := &httpBackend{name: name}
	b.healthy.Store(true)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.addr = ln.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			if !b.healthy.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
			return
		}
		io.WriteString(w, b.name)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return b
}

// get sends one HTTP/1.0 request through the listener and returns the body.
func get(t testing.TB, m *proxy.Manager, listener string) string {
	t.Helper()
	c := dialListener(t, m, listener)
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.0\r\nHost: test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// hostHealth returns the health of the cluster's host at addr.
func hostHealth(m *proxy.Manager, cluster, addr string) upstream.Health {
	c := m.Upstreams().Cluster(cluster)
	if c == nil {
		return -1
	}
	for _, h := range c.Hosts() {
		if h.Addr.String() == addr {
			return h.Health
		}
	}
	return -1
}

func TestHealthCheckEjectsAndReturns(t *testing.T) {
	a, b := startHTTPBackend(t, "a"), startHTTPBackend(t, "b")
	m, _ := newManager(t, proxy.Options{})
	cl := cluster("web", a.addr, b.addr)
	cl.HealthChecks = append(cl.HealthChecks, runtimetest.HTTPHealthCheck(runtimetest.HealthCheck(20*time.Millisecond, 1, 1), "/healthz"))
	lis := []*listenerv3.Listener{tcpListener("web", 0, "web", nil)}
	apply(t, m, graph(t, lis, cl))
	waitFor(t, 5*time.Second, "both backends healthy", func() bool {
		return hostHealth(m, "web", a.addr) == upstream.Healthy && hostHealth(m, "web", b.addr) == upstream.Healthy
	})

	a.healthy.Store(false)
	waitFor(t, 5*time.Second, "a unhealthy", func() bool { return hostHealth(m, "web", a.addr) == upstream.Unhealthy })
	for i := range 6 {
		if got := get(t, m, "web"); got != "b" {
			t.Fatalf("request %d went to %q while a is unhealthy", i, got)
		}
	}

	// An unrelated change keeps the health state: a stays out, b stays in, at once.
	other := startBackend(t, echo)
	lis2 := append(lis, tcpListener("other", 0, "other", nil))
	apply(t, m, graph(t, lis2, cl, cluster("other", other.addr)))
	if h := hostHealth(m, "web", a.addr); h != upstream.Unhealthy {
		t.Fatalf("after an unrelated Apply, a is %v, want unhealthy", h)
	}
	if h := hostHealth(m, "web", b.addr); h != upstream.Healthy {
		t.Fatalf("after an unrelated Apply, b is %v, want healthy", h)
	}
	if got := get(t, m, "web"); got != "b" {
		t.Fatalf("after an unrelated Apply, a request went to %q", got)
	}

	a.healthy.Store(true)
	waitFor(t, 5*time.Second, "a back", func() bool { return hostHealth(m, "web", a.addr) == upstream.Healthy })
	seen := map[string]bool{}
	for range 4 {
		seen[get(t, m, "web")] = true
	}
	if !seen["a"] || !seen["b"] {
		t.Errorf("after a returned, requests went to %v, want both", seen)
	}
}

func TestOutlierEjectsAfterConnectFailures(t *testing.T) {
	live := startBackend(t, echo)
	dead := deadAddr(t)
	m, reg := newManager(t, proxy.Options{})
	cl := cluster("db", dead, live.addr)
	cl.OutlierDetection = runtimetest.OutlierDetection(2, time.Minute, 10)
	l := tcpListener("db", 0, "db", func(tp *tcpproxyv3.TcpProxy) { tp.MaxConnectAttempts = wrapperspb.UInt32(1) })
	apply(t, m, graph(t, []*listenerv3.Listener{l}, cl))

	// Round robin alternates: connections 0 and 2 go to the dead endpoint, which the second
	// failure in a row ejects.
	for i := range 4 {
		c := dialListener(t, m, "db")
		tryRoundTrip(c, fmt.Sprint(i))
		c.Close()
	}
	waitFor(t, 5*time.Second, "dead endpoint ejected", func() bool {
		return hostHealth(m, "db", dead) == upstream.Ejected
	})
	if got := metric(t, reg, "flotilla_agent_outlier_detection_ejections_enforced_total", dead); got != 1 {
		t.Errorf("ejections of %s = %v, want 1", dead, got)
	}
	for i := range 6 {
		roundTrip(t, dialListener(t, m, "db"), fmt.Sprint("after ejection ", i))
	}
	if got := metric(t, reg, "flotilla_agent_upstream_cx_connect_fail", "db"); got != 2 {
		t.Errorf("connect failures = %v, want 2 (none after the ejection)", got)
	}
}

func TestCircuitBreakerOverflow(t *testing.T) {
	b := startBackend(t, echo)
	m, reg := newManager(t, proxy.Options{})
	cl := cluster("db", b.addr)
	cl.CircuitBreakers = runtimetest.CircuitBreakers(1)
	apply(t, m, graph(t, []*listenerv3.Listener{tcpListener("db", 0, "db", nil)}, cl))

	first := dialListener(t, m, "db")
	roundTrip(t, first, "holds the only slot")
	second := dialListener(t, m, "db")
	if !closedByPeer(second, 5*time.Second) {
		t.Fatal("a connection over max_connections stays open")
	}
	if got := metric(t, reg, "flotilla_agent_upstream_cx_overflow", "db"); got != 1 {
		t.Errorf("upstream_cx_overflow = %v, want 1", got)
	}
	first.Close()
	waitFor(t, 5*time.Second, "slot released", func() bool { return m.Upstreams().Cluster("db").ActiveConnections() == 0 })
	roundTrip(t, dialListener(t, m, "db"), "slot free again")
}

func TestListenerConnectionLimit(t *testing.T) {
	b := startBackend(t, echo)
	m, reg := newManager(t, proxy.Options{})
	l := runtimetest.WithConnectionLimit(tcpListener("db", 0, "db", nil), 2)
	apply(t, m, graph(t, []*listenerv3.Listener{l}, cluster("db", b.addr)))

	held := []net.Conn{dialListener(t, m, "db"), dialListener(t, m, "db")}
	for i, c := range held {
		roundTrip(t, c, fmt.Sprint("held ", i))
	}
	over := dialListener(t, m, "db")
	if !closedByPeer(over, 5*time.Second) {
		t.Fatal("a connection over the listener's limit stays open")
	}
	for _, name := range []string{"flotilla_agent_downstream_cx_overflow", "flotilla_agent_connection_limit_limited_connections"} {
		if got := metric(t, reg, name, "db"); got != 1 {
			t.Errorf("%s = %v, want 1", name, got)
		}
	}
	if got := b.accepted.Load(); got != 2 {
		t.Errorf("backend accepted %d connections, want 2", got)
	}
	held[0].Close()
	waitFor(t, 5*time.Second, "a slot frees", func() bool {
		return metric(t, reg, "flotilla_agent_downstream_cx_active", "db") == 1
	})
	roundTrip(t, dialListener(t, m, "db"), "under the limit again")
}
