package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/flotilla-proxy/flotilla/agent/proxy"
	"github.com/flotilla-proxy/flotilla/agent/runtime"
	"github.com/flotilla-proxy/flotilla/agent/runtime/runtimetest"
)

func TestProxiesTraffic(t *testing.T) {
	b := startBackend(t, echo)
	m, reg := newManager(t, proxy.Options{})
	apply(t, m, graph(t, []*listenerv3.Listener{tcpListener("echo", 0, "echo", nil)}, cluster("echo", b.addr)))

	c := dialListener(t, m, "echo")
	roundTrip(t, c, "hello")
	roundTrip(t, c, strings.Repeat("x", 1<<20)) // large enough for several splice rounds
	c.Close()

	waitFor(t, 5*time.Second, "connection accounted", func() bool {
		return metric(t, reg, "flotilla_agent_downstream_cx_active", "echo") == 0 &&
			metric(t, reg, "flotilla_agent_upstream_cx_tx_bytes_total", "echo") == 5+1<<20
	})
	for _, tt := range []struct {
		name, label string
		want        float64
	}{
		{"flotilla_agent_downstream_cx_total", "echo", 1},
		{"flotilla_agent_upstream_cx_total", "echo", 1},
		{"flotilla_agent_upstream_cx_active", "echo", 0},
		{"flotilla_agent_upstream_cx_connect_fail", "echo", 0},
		{"flotilla_agent_upstream_cx_rx_bytes_total", "echo", 5 + 1<<20},
	} {
		if got := metric(t, reg, tt.name, tt.label); got != tt.want {
			t.Errorf("%s{%q} = %v, want %v", tt.name, tt.label, got, tt.want)
		}
	}
}

func TestIPv6Listeners(t *testing.T) {
	b := startBackend(t, echo)
	m, _ := newManager(t, proxy.Options{})
	v6only := runtimetest.Listener("v6only", "::", 0, "echo")
	v6only.Address.GetSocketAddress().Ipv4Compat = false
	apply(t, m, graph(t, []*listenerv3.Listener{
		runtimetest.Listener("dual", "::", 0, "echo"), // ipv4_compat: true
		v6only,
	}, cluster("echo", b.addr)))

	tests := []struct {
		listener string
		client   string
		works    bool
	}{
		{"dual", "::1", true},
		{"dual", "127.0.0.1", true},
		{"v6only", "::1", true},
		{"v6only", "127.0.0.1", false},
	}
	for _, tt := range tests {
		t.Run(tt.listener+" from "+tt.client, func(t *testing.T) {
			addr := net.JoinHostPort(tt.client, fmt.Sprint(portOf(t, m.Addr(tt.listener).String())))
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if !tt.works {
				if err == nil {
					c.Close()
					t.Fatalf("dial %s succeeded on an IPv6-only listener", addr)
				}
				return
			}
			if err != nil {
				t.Fatalf("dial %s: %v", addr, err)
			}
			defer c.Close()
			roundTrip(t, c, "hi")
		})
	}
}

func TestWeightedRoundRobin(t *testing.T) {
	light := startBackend(t, echo)
	heavy := startBackend(t, echo)
	m, _ := newManager(t, proxy.Options{})
	cl := runtimetest.StaticCluster("pool",
		runtimetest.Endpoint(light.addr, 1),
		runtimetest.Endpoint(heavy.addr, 3))
	apply(t, m, graph(t, []*listenerv3.Listener{tcpListener("lb", 0, "pool", nil)}, cl))

	for i := range 40 {
		c := dialListener(t, m, "lb")
		roundTrip(t, c, fmt.Sprint(i))
		c.Close()
	}
	if got, want := [2]int64{light.accepted.Load(), heavy.accepted.Load()}, [2]int64{10, 30}; got != want {
		t.Fatalf("connections per backend (weights 1, 3) = %v, want %v", got, want)
	}
}

func TestRetriesOnNextEndpoint(t *testing.T) {
	tests := []struct {
		attempts uint32
		// The round robin starts on the dead endpoint. Every pick, retries included, moves
		// it on (as in Envoy), and a retry avoids the endpoint already tried: with one
		// attempt, connections alternate; with more, each starts on the dead endpoint and
		// retries on the live one.
		wantOK, wantConnectFail int
	}{
		{attempts: 1, wantOK: 2, wantConnectFail: 2},
		{attempts: 2, wantOK: 4, wantConnectFail: 4},
		{attempts: 3, wantOK: 4, wantConnectFail: 4},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("max_connect_attempts=%d", tt.attempts), func(t *testing.T) {
			live := startBackend(t, echo)
			m, reg := newManager(t, proxy.Options{})
			l := tcpListener("db", 0, "db", func(tp *tcpproxyv3.TcpProxy) {
				tp.MaxConnectAttempts = wrapperspb.UInt32(tt.attempts)
			})
			apply(t, m, graph(t, []*listenerv3.Listener{l}, cluster("db", deadAddr(t), live.addr)))

			ok := 0
			for i := range 4 {
				c := dialListener(t, m, "db")
				if err := tryRoundTrip(c, fmt.Sprint("ping ", i)); err == nil {
					ok++
				}
				c.Close()
			}
			if ok != tt.wantOK {
				t.Errorf("%d of 4 connections worked, want %d", ok, tt.wantOK)
			}
			waitFor(t, 5*time.Second, "connect failures counted", func() bool {
				return metric(t, reg, "flotilla_agent_upstream_cx_connect_fail", "db") == float64(tt.wantConnectFail)
			})
		})
	}
}

func TestHalfClose(t *testing.T) {
	// The backend reads the whole request, sees EOF, and only then replies.
	b := startBackend(t, func(c *net.TCPConn) {
		n, err := io.Copy(io.Discard, c)
		if err != nil {
			return
		}
		fmt.Fprintf(c, "received %d bytes", n)
		c.CloseWrite()
	})
	m, _ := newManager(t, proxy.Options{})
	apply(t, m, graph(t, []*listenerv3.Listener{tcpListener("req", 0, "req", nil)}, cluster("req", b.addr)))

	c := dialListener(t, m, "req")
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(make([]byte, 100_000)); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	reply, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read reply after half-close: %v", err)
	}
	if string(reply) != "received 100000 bytes" {
		t.Fatalf("reply = %q", reply)
	}
}

func TestConnectionKeepsConfigAcrossApply(t *testing.T) {
	old := startBackend(t, echo)
	next := startBackend(t, echo)
	m, _ := newManager(t, proxy.Options{})
	apply(t, m, graph(t, []*listenerv3.Listener{tcpListener("app", 0, "app", nil)}, cluster("app", old.addr)))
	addr := m.Addr("app").String()

	long := dialListener(t, m, "app")
	roundTrip(t, long, "before")

	apply(t, m, graph(t, []*listenerv3.Listener{tcpListener("app", 0, "app", nil)}, cluster("app", next.addr)))
	if got := m.Addr("app").String(); got != addr {
		t.Fatalf("listener moved from %s to %s on an endpoint change", addr, got)
	}
	roundTrip(t, long, "after") // still proxied to the old endpoint

	fresh := dialListener(t, m, "app")
	roundTrip(t, fresh, "new")
	if old.accepted.Load() != 1 || next.accepted.Load() != 1 {
		t.Fatalf("accepted: old endpoint %d, new endpoint %d; want 1 and 1", old.accepted.Load(), next.accepted.Load())
	}
	roundTrip(t, long, "still")
}

func TestRemovedListenerDrains(t *testing.T) {
	b := startBackend(t, echo)
	const drain = 500 * time.Millisecond
	m, reg := newManager(t, proxy.Options{DrainTimeout: drain})
	apply(t, m, graph(t, []*listenerv3.Listener{
		tcpListener("gone", 0, "svc", nil),
		tcpListener("stays", 0, "svc", nil),
	}, cluster("svc", b.addr)))
	goneAddr := m.Addr("gone").String()

	c := dialListener(t, m, "gone")
	roundTrip(t, c, "before")

	removedAt := time.Now()
	apply(t, m, graph(t, []*listenerv3.Listener{tcpListener("stays", 0, "svc", nil)}, cluster("svc", b.addr)))
	if m.Addr("gone") != nil {
		t.Fatal("removed listener still has an address")
	}
	if nc, err := net.DialTimeout("tcp", goneAddr, time.Second); err == nil {
		nc.Close()
		t.Fatal("removed listener still accepts connections")
	}
	roundTrip(t, c, "draining") // established connection keeps working

	waitFor(t, 5*time.Second, "drained connection closed", func() bool { return closedByPeer(c, 50*time.Millisecond) })
	if since := time.Since(removedAt); since < drain {
		t.Fatalf("connection closed after %v, before the %v drain timeout", since, drain)
	}
	waitFor(t, 5*time.Second, "drain counted", func() bool {
		return metric(t, reg, "flotilla_agent_downstream_cx_destroy_drain", "gone") == 1 && b.open.Load() == 0
	})
	roundTrip(t, dialListener(t, m, "stays"), "other listener unaffected")
}

func TestApplyFailsOnTakenPort(t *testing.T) {
	b := startBackend(t, echo)
	m, _ := newManager(t, proxy.Options{})
	running := graph(t, []*listenerv3.Listener{tcpListener("a", 0, "svc", nil)}, cluster("svc", b.addr))
	apply(t, m, running)
	addr := m.Addr("a").String()
	c := dialListener(t, m, "a")
	roundTrip(t, c, "before")

	taken, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	free := deadAddr(t)
	freePort := portOf(t, free)

	// "b" binds a free port first, then "c" hits the taken one: Apply must undo "b".
	bad := graph(t, []*listenerv3.Listener{
		tcpListener("a", 0, "other", nil),
		tcpListener("b", freePort, "other", nil),
		tcpListener("c", portOf(t, taken.Addr().String()), "other", nil),
	}, cluster("svc", b.addr), cluster("other", deadAddr(t)))
	err = m.Apply(bad)
	var re *runtime.ResourceError
	if !errors.As(err, &re) {
		t.Fatalf("Apply() = %v, want a *runtime.ResourceError", err)
	}
	if re.TypeURL != resourcev3.ListenerType || re.Name != "c" {
		t.Fatalf("ResourceError{TypeURL: %q, Name: %q}, want the listener type and %q", re.TypeURL, re.Name, "c")
	}
	if !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("error %q does not say why", err)
	}
	if m.Addr("b") != nil || m.Addr("c") != nil {
		t.Fatal("a failed Apply left new listeners behind")
	}
	if ln, err := net.Listen("tcp4", free); err != nil {
		t.Fatalf("the socket bound for \"b\" was not closed: %v", err)
	} else {
		ln.Close()
	}
	if got := m.Addr("a").String(); got != addr {
		t.Fatalf("listener a moved to %s", got)
	}
	roundTrip(t, c, "after") // untouched, and still on its old cluster
	roundTrip(t, dialListener(t, m, "a"), "new connection on the old config")
}

func TestUnchangedListenerKeepsSocket(t *testing.T) {
	b := startBackend(t, echo)
	m, _ := newManager(t, proxy.Options{})
	withIdle := func(d time.Duration) *runtime.Graph {
		return graph(t, []*listenerv3.Listener{tcpListener("web", 0, "web", func(tp *tcpproxyv3.TcpProxy) {
			tp.IdleTimeout = durationpb.New(d)
		})}, cluster("web", b.addr))
	}
	apply(t, m, withIdle(time.Hour))
	addr := m.Addr("web").String()

	// Connections keep being accepted while Apply runs again and again.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		wg     sync.WaitGroup
		served atomic.Int64
	)
	errs := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err == nil {
				err = tryRoundTrip(c, fmt.Sprint("req ", i))
				c.Close()
			}
			if err != nil {
				errs <- err
				return
			}
			served.Add(1)
		}
	}()
	for i := range 30 {
		before := served.Load()
		apply(t, m, withIdle(time.Hour+time.Duration(i)*time.Second)) // changed config, same address
		apply(t, m, withIdle(time.Hour))                              // unchanged
		if got := m.Addr("web").String(); got != addr {
			t.Fatalf("listener moved from %s to %s", addr, got)
		}
		waitFor(t, 5*time.Second, "a connection between applies", func() bool {
			select {
			case err := <-errs:
				t.Fatalf("a connection failed during Apply: %v", err)
			default:
			}
			return served.Load() > before
		})
	}
	cancel()
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatalf("a connection failed during Apply: %v", err)
	default:
	}
}

func TestRenamedListenerTakesOverSocket(t *testing.T) {
	b := startBackend(t, echo)
	m, _ := newManager(t, proxy.Options{DrainTimeout: 5 * time.Second})
	p := portOf(t, deadAddr(t))
	apply(t, m, graph(t, []*listenerv3.Listener{tcpListener("old-name", p, "svc", nil)}, cluster("svc", b.addr)))
	c := dialListener(t, m, "old-name")
	roundTrip(t, c, "before")

	apply(t, m, graph(t, []*listenerv3.Listener{tcpListener("new-name", p, "svc", nil)}, cluster("svc", b.addr)))
	if m.Addr("old-name") != nil || m.Addr("new-name") == nil || portOf(t, m.Addr("new-name").String()) != p {
		t.Fatalf("after rename: old-name at %v, new-name at %v; want new-name on port %d", m.Addr("old-name"), m.Addr("new-name"), p)
	}
	roundTrip(t, dialListener(t, m, "new-name"), "renamed")
	roundTrip(t, c, "old connection drains")
}

func TestIdleTimeout(t *testing.T) {
	echoer := startBackend(t, echo)
	sink := startBackend(t, func(c *net.TCPConn) { io.Copy(io.Discard, c) })
	const idle = 300 * time.Millisecond
	withIdle := func(tp *tcpproxyv3.TcpProxy) { tp.IdleTimeout = durationpb.New(idle) }
	m, _ := newManager(t, proxy.Options{})
	apply(t, m, graph(t, []*listenerv3.Listener{
		tcpListener("echo", 0, "echo", withIdle),
		tcpListener("upload", 0, "sink", withIdle),
	}, cluster("echo", echoer.addr), cluster("sink", sink.addr)))

	t.Run("idle connection is closed", func(t *testing.T) {
		t.Parallel()
		c := dialListener(t, m, "echo")
		// The last byte moves during the round trip; the kernel clocks idleness in jiffies
		// (up to 10ms each).
		before := time.Now()
		roundTrip(t, c, "hi")
		waitFor(t, 5*time.Second, "idle connection closed", func() bool { return closedByPeer(c, 50*time.Millisecond) })
		if since := time.Since(before); since < idle-10*time.Millisecond {
			t.Fatalf("closed %v after the last byte, before the %v idle timeout", since, idle)
		}
	})

	t.Run("busy connection stays open", func(t *testing.T) {
		t.Parallel()
		c := dialListener(t, m, "echo")
		for i := range 12 { // 12 round trips 100ms apart: four idle timeouts
			roundTrip(t, c, fmt.Sprint("tick ", i))
			if closedByPeer(c, 100*time.Millisecond) {
				t.Fatalf("busy connection closed after %d round trips", i+1)
			}
		}
	})

	t.Run("bytes in one direction keep it open", func(t *testing.T) {
		t.Parallel()
		c := dialListener(t, m, "upload")
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for end := time.Now().Add(4 * idle); time.Now().Before(end); <-tick.C {
			if _, err := c.Write([]byte("upload")); err != nil {
				t.Fatalf("write: %v", err)
			}
		}
		if closedByPeer(c, 10*time.Millisecond) {
			t.Fatal("connection uploading every 50ms was closed as idle")
		}
	})
}

func TestNoHealthyUpstream(t *testing.T) {
	m, reg := newManager(t, proxy.Options{})
	down := runtimetest.Endpoint("192.0.2.1:9", 1)
	down.HealthStatus = corev3.HealthStatus_UNHEALTHY
	apply(t, m, graph(t, []*listenerv3.Listener{tcpListener("x", 0, "empty", nil)},
		runtimetest.StaticCluster("empty", down)))
	c := dialListener(t, m, "x")
	if !closedByPeer(c, 5*time.Second) {
		t.Fatal("connection to a cluster without endpoints stays open")
	}
	waitFor(t, 5*time.Second, "no_healthy_upstream counted", func() bool {
		return metric(t, reg, "flotilla_agent_no_healthy_upstream", "empty") == 1
	})
}

func TestEDSCluster(t *testing.T) {
	b := startBackend(t, echo)
	m, _ := newManager(t, proxy.Options{})
	g, err := runtime.Build(&runtime.Resources{
		Listeners: map[string]*listenerv3.Listener{"l": runtimetest.Listener("l", "127.0.0.1", 0, "c")},
		Clusters:  map[string]*clusterv3.Cluster{"c": runtimetest.EDSCluster("c")},
		Endpoints: map[string]*endpointv3.ClusterLoadAssignment{"c": runtimetest.LoadAssignment("c", runtimetest.Endpoint(b.addr, 1))},
	})
	if err != nil {
		t.Fatal(err)
	}
	apply(t, m, g)
	roundTrip(t, dialListener(t, m, "l"), "eds")
}

func TestShutdown(t *testing.T) {
	t.Run("waits for connections", func(t *testing.T) {
		b := startBackend(t, echo)
		m, _ := newManager(t, proxy.Options{})
		apply(t, m, graph(t, []*listenerv3.Listener{tcpListener("s", 0, "svc", nil)}, cluster("svc", b.addr)))
		addr := m.Addr("s").String()
		c := dialListener(t, m, "s")
		roundTrip(t, c, "hi")

		done := make(chan error, 1)
		go func() { done <- m.Shutdown(context.Background()) }()
		waitFor(t, 5*time.Second, "listener closed", func() bool {
			nc, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				nc.Close()
			}
			return err != nil
		})
		roundTrip(t, c, "still served")
		select {
		case err := <-done:
			t.Fatalf("Shutdown returned %v with a connection open", err)
		default:
		}
		c.Close()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Shutdown() = %v, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Shutdown did not return after the last connection closed")
		}
		if err := m.Apply(graph(t, nil)); err == nil {
			t.Fatal("Apply after Shutdown succeeded")
		}
	})

	t.Run("closes connections at the deadline", func(t *testing.T) {
		b := startBackend(t, echo)
		m, _ := newManager(t, proxy.Options{})
		apply(t, m, graph(t, []*listenerv3.Listener{tcpListener("s", 0, "svc", nil)}, cluster("svc", b.addr)))
		c := dialListener(t, m, "s")
		roundTrip(t, c, "hi")
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		if err := m.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Shutdown() = %v, want DeadlineExceeded", err)
		}
		if !closedByPeer(c, 5*time.Second) {
			t.Fatal("connection still open after Shutdown's deadline")
		}
	})
}

// BenchmarkApplyEndpointChange applies graphs of 100 listeners in which only the
// endpoints change: every listener keeps its socket and gets a new config.
func BenchmarkApplyEndpointChange(b *testing.B) {
	m, _ := newManager(b, proxy.Options{})
	graphs := make([]*runtime.Graph, 2)
	for v := range graphs {
		var (
			ls []*listenerv3.Listener
			cs []*clusterv3.Cluster
		)
		for i := range 100 {
			name := fmt.Sprintf("svc-%03d", i)
			ls = append(ls, runtimetest.Listener(name, "127.0.0.1", 0, name))
			cs = append(cs, runtimetest.StaticCluster(name,
				runtimetest.Endpoint(fmt.Sprintf("10.%d.0.%d:8080", v, i+1), 1),
				runtimetest.Endpoint(fmt.Sprintf("10.%d.1.%d:8080", v, i+1), 2)))
		}
		graphs[v] = graph(b, ls, cs...)
	}
	apply(b, m, graphs[0])
	addr := m.Addr("svc-042").String()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if err := m.Apply(graphs[i%2]); err != nil {
			b.Fatal(err)
		}
	}
	if got := m.Addr("svc-042").String(); got != addr {
		b.Fatalf("listener moved from %s to %s", addr, got)
	}
}

// BenchmarkProxyThroughput streams through one proxied connection to a backend that
// discards what it reads (1 MiB per iteration).
func BenchmarkProxyThroughput(b *testing.B) {
	got := make(chan int64, 1)
	sink := startBackend(b, func(c *net.TCPConn) {
		n, _ := io.Copy(io.Discard, c)
		got <- n
	})
	m, _ := newManager(b, proxy.Options{})
	apply(b, m, graph(b, []*listenerv3.Listener{tcpListener("bulk", 0, "sink", nil)}, cluster("sink", sink.addr)))
	c := dialListener(b, m, "bulk")
	chunk := make([]byte, 1<<20)
	b.SetBytes(int64(len(chunk)))
	for b.Loop() {
		if _, err := c.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	c.CloseWrite()
	if n := <-got; n != int64(b.N)*int64(len(chunk)) {
		b.Fatalf("backend received %d bytes, want %d", n, int64(b.N)*int64(len(chunk)))
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestConnectionLog(t *testing.T) {
	for _, level := range []slog.Level{slog.LevelDebug, slog.LevelInfo} {
		t.Run(level.String(), func(t *testing.T) {
			b := startBackend(t, echo)
			var out syncBuffer
			m, reg := newManager(t, proxy.Options{Logger: slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: level}))})
			apply(t, m, graph(t, []*listenerv3.Listener{tcpListener("logged", 0, "svc", nil)}, cluster("svc", b.addr)))
			for range 2 {
				c := dialListener(t, m, "logged")
				roundTrip(t, c, "hi")
				c.Close()
			}
			want := 0
			if level == slog.LevelDebug {
				want = 2
			}
			waitFor(t, 5*time.Second, "connections finished", func() bool {
				return metric(t, reg, "flotilla_agent_downstream_cx_total", "logged") == 2 &&
					metric(t, reg, "flotilla_agent_downstream_cx_active", "logged") == 0
			})
			if got := strings.Count(out.String(), "msg=connection "); got != want {
				t.Fatalf("%d per-connection log lines at level %s, want %d:\n%s", got, level, want, out.String())
			}
			if want > 0 && !strings.Contains(out.String(), "listener=logged cluster=svc") {
				t.Errorf("connection line lacks listener and cluster:\n%s", out.String())
			}
		})
	}
}
