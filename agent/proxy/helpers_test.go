package proxy_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flotilla-proxy/flotilla/agent/proxy"
	"github.com/flotilla-proxy/flotilla/agent/runtime"
	"github.com/flotilla-proxy/flotilla/agent/runtime/runtimetest"
)

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// backend is an upstream server on 127.0.0.1:0 that counts the connections it accepts and
// serves each with handle.
type backend struct {
	addr     string
	accepted atomic.Int64
	open     atomic.Int64

	mu    sync.Mutex
	conns []net.Conn
}

// echo copies what it reads back and passes EOF on.
func echo(c *net.TCPConn) {
	io.Copy(c, c)
	c.CloseWrite()
}

// startBackend starts a backend; t.Cleanup stops it and closes its connections.
func startBackend(t testing.TB, handle func(*net.TCPConn)) *backend {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		b.mu.Lock()
		for _, c := range b.conns {
			c.Close()
		}
		b.mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.accepted.Add(1)
			b.open.Add(1)
			b.mu.Lock()
			b.conns = append(b.conns, c)
			b.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer b.open.Add(-1)
				defer c.Close()
				handle(c.(*net.TCPConn))
			}()
		}
	}()
	return b
}

// deadAddr returns a loopback address where nothing listens (connections are refused).
func deadAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// newManager returns a Manager shut down at the end of the test, with a fresh registry.
func newManager(t testing.TB, opts proxy.Options) (*proxy.Manager, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	opts.Registerer = reg
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	m := proxy.NewManager(opts)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		m.Shutdown(ctx)
	})
	return m, reg
}

// graph builds a graph or fails the test.
func graph(t testing.TB, ls []*listenerv3.Listener, cs ...*clusterv3.Cluster) *runtime.Graph {
	t.Helper()
	r := &runtime.Resources{
		Listeners: map[string]*listenerv3.Listener{},
		Clusters:  map[string]*clusterv3.Cluster{},
	}
	for _, l := range ls {
		r.Listeners[l.GetName()] = l
	}
	for _, c := range cs {
		r.Clusters[c.GetName()] = c
	}
	g, err := runtime.Build(r)
	if err != nil {
		t.Fatalf("runtime.Build: %v", err)
	}
	return g
}

// cluster returns a STATIC cluster with the backends at weight 1.
func cluster(name string, backends ...string) *clusterv3.Cluster {
	var eps []*endpointv3.LbEndpoint
	for _, b := range backends {
		eps = append(eps, runtimetest.Endpoint(b, 1))
	}
	return runtimetest.StaticCluster(name, eps...)
}

// tcpListener returns a listener on 127.0.0.1:port to cluster with the tcp_proxy edited.
func tcpListener(name string, port uint32, cluster string, edit func(*tcpproxyv3.TcpProxy)) *listenerv3.Listener {
	tp := runtimetest.TCPProxy(cluster)
	if edit != nil {
		edit(tp)
	}
	return runtimetest.ListenerTCP(name, "127.0.0.1", port, tp)
}

// apply applies g or fails the test.
func apply(t testing.TB, m *proxy.Manager, g *runtime.Graph) {
	t.Helper()
	if err := m.Apply(g); err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

// dial connects to addr; t.Cleanup closes the connection.
func dial(t testing.TB, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// dialListener connects to the listener's bound address.
func dialListener(t testing.TB, m *proxy.Manager, name string) *net.TCPConn {
	t.Helper()
	a := m.Addr(name)
	if a == nil {
		t.Fatalf("listener %q is not bound", name)
	}
	return dial(t, a.String())
}

// roundTrip writes msg and expects it echoed back.
func roundTrip(t testing.TB, c net.Conn, msg string) {
	t.Helper()
	if err := tryRoundTrip(c, msg); err != nil {
		t.Fatal(err)
	}
}

func tryRoundTrip(c net.Conn, msg string) error {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, msg); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return fmt.Errorf("read echo of %q: %w", msg, err)
	}
	if string(buf) != msg {
		return fmt.Errorf("echo = %q, want %q", buf, msg)
	}
	return nil
}

// closedByPeer reports whether the peer has closed c: a read returns EOF or an error (not
// a timeout) within wait.
func closedByPeer(c net.Conn, wait time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(wait))
	defer c.SetReadDeadline(time.Time{})
	var b [1]byte
	_, err := c.Read(b[:])
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return false
	}
	return err != nil
}

// metric returns the value of a counter or gauge with the given label value, 0 if absent.
func metric(t testing.TB, reg *prometheus.Registry, name, labelValue string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetValue() != labelValue {
					continue
				}
				if m.Counter != nil {
					return m.GetCounter().GetValue()
				}
				return m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

// portOf returns the port of a "host:port" address.
func portOf(t testing.TB, addr string) uint32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return uint32(n)
}
