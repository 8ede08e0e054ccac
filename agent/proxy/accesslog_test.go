package proxy_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/miekg/dns"

	"github.com/flotilla-proxy/flotilla/agent/accesslog"
	"github.com/flotilla-proxy/flotilla/agent/proxy"
	"github.com/flotilla-proxy/flotilla/agent/runtime/runtimetest"
)

// jsonLog returns the access log Flotilla's compiler emits for format "json", to path.
func jsonLog(t testing.TB, path string) *accesslogv3.AccessLog {
	t.Helper()
	_, m, err := accesslog.ToEnvoy("json")
	if err != nil {
		t.Fatal(err)
	}
	return runtimetest.FileAccessLog(path, "", m)
}

// logLines waits until path has n lines and returns them, each decoded as JSON.
func logLines(t testing.TB, path string, n int) []map[string]any {
	t.Helper()
	var lines []string
	waitFor(t, 5*time.Second, "access log lines", func() bool {
		b, err := os.ReadFile(path)
		if err != nil {
			return false
		}
		lines = strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		return len(b) > 0 && len(lines) >= n
	})
	if len(lines) != n {
		t.Fatalf("%d lines in %s, want %d:\n%s", len(lines), path, n, strings.Join(lines, "\n"))
	}
	out := make([]map[string]any, n)
	for i, l := range lines {
		if err := json.Unmarshal([]byte(l), &out[i]); err != nil {
			t.Fatalf("line %d is not JSON: %v\n%s", i, err, l)
		}
	}
	return out
}

// wantFields checks the fields of one decoded line.
func wantFields(t testing.TB, line map[string]any, want map[string]any) {
	t.Helper()
	for k, v := range want {
		if line[k] != v {
			t.Errorf("%s = %#v, want %#v (line %v)", k, line[k], v, line)
		}
	}
}

func TestAccessLogTCP(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tcp.log")
	b := startBackend(t, echo)
	m, _ := newManager(t, proxy.Options{})
	withLog := func(name, cluster string) *listenerv3.Listener {
		return tcpListener(name, 0, cluster, func(tp *tcpproxyv3.TcpProxy) {
			tp.AccessLog = []*accesslogv3.AccessLog{jsonLog(t, path)}
		})
	}
	down := runtimetest.Endpoint(deadAddr(t), 1)
	down.HealthStatus = corev3.HealthStatus_UNHEALTHY
	limited := runtimetest.WithConnectionLimit(withLog("limited", "db"), 1)
	pp := withLog("pp", "db")
	pp.ListenerFilters = append(pp.ListenerFilters, runtimetest.ProxyProtocolFilter())
	apply(t, m, graph(t, []*listenerv3.Listener{withLog("web", "db"), withLog("dead", "dead"), withLog("empty", "empty"), limited, pp},
		cluster("db", b.addr), cluster("dead", deadAddr(t)), runtimetest.StaticCluster("empty", down)))

	c := dialListener(t, m, "web")
	roundTrip(t, c, "hello") // 5 bytes each way
	c.Close()
	lines := logLines(t, path, 1)
	wantFields(t, lines[0], map[string]any{
		"protocol": "TCP", "status": 200.0, "remote_addr": "127.0.0.1", "server_addr": "127.0.0.1",
		"bytes_sent": 5.0, "bytes_received": 5.0, "upstream_bytes_sent": 5.0, "upstream_bytes_received": 5.0,
		"upstream_addr": b.addr, "listener": "web", "cluster": "db", "filter_chain": nil,
	})
	if d, ok := lines[0]["session_time"].(float64); !ok || d < 0 || d > 5000 {
		t.Errorf("session_time = %v, want milliseconds", lines[0]["session_time"])
	}
	if _, ok := lines[0]["upstream_connect_time"].(float64); !ok {
		t.Errorf("upstream_connect_time = %#v, want a number", lines[0]["upstream_connect_time"])
	}

	closedByPeer(dialListener(t, m, "dead"), 5*time.Second)
	lines = logLines(t, path, 2)
	wantFields(t, lines[1], map[string]any{"status": 502.0, "listener": "dead", "cluster": "dead", "bytes_sent": 0.0})

	closedByPeer(dialListener(t, m, "empty"), 5*time.Second)
	lines = logLines(t, path, 3)
	wantFields(t, lines[2], map[string]any{"status": 503.0, "listener": "empty", "upstream_addr": nil})

	held := dialListener(t, m, "limited")
	roundTrip(t, held, "x")
	closedByPeer(dialListener(t, m, "limited"), 5*time.Second)
	lines = logLines(t, path, 4)
	wantFields(t, lines[3], map[string]any{"status": 503.0, "listener": "limited", "cluster": nil})

	bad := dialListener(t, m, "pp")
	bad.Write([]byte("GET / HTTP/1.0\r\n\r\n")) // not a PROXY header
	closedByPeer(bad, 5*time.Second)
	lines = logLines(t, path, 5)
	wantFields(t, lines[4], map[string]any{"status": 400.0, "listener": "pp", "upstream_addr": nil})
}

func TestAccessLogUDP(t *testing.T) {
	path := filepath.Join(t.TempDir(), "udp.log")
	a := startDNS(t, "192.0.2.1")
	m, _ := newManager(t, proxy.Options{})
	l := runtimetest.UDPListener("dns", "127.0.0.1", 0, "resolvers", 100*time.Millisecond)
	cfg := runtimetest.UDPProxyOf(l)
	text, _, err := accesslog.ToEnvoy(`{"protocol":"$protocol","status":$status,"client":"$remote_addr","upstream":"$upstream_addr","rx":$bytes_received,"tx":$bytes_sent,"listener":"$listener","cluster":"$cluster"}`)
	if err != nil {
		t.Fatal(err)
	}
	cfg.AccessLog = []*accesslogv3.AccessLog{runtimetest.FileAccessLog(path, text, nil)}
	runtimetest.SetUDPProxy(l, cfg)
	apply(t, m, graph(t, []*listenerv3.Listener{l}, cluster("resolvers", a)))

	c, conn := dnsConn(t, m, "dns")
	q := new(dns.Msg)
	q.SetQuestion("log.flotilla.test.", dns.TypeA)
	wire, _ := q.Pack()
	resp, _, err := c.ExchangeWithConn(q, conn)
	if err != nil {
		t.Fatal(err)
	}
	reply, _ := resp.Pack()
	// The session ends at its idle timeout and gets its line.
	lines := logLines(t, path, 1)
	wantFields(t, lines[0], map[string]any{
		"protocol": "UDP", "status": 200.0, "client": "127.0.0.1", "upstream": a,
		"rx": float64(len(wire)), "tx": float64(len(reply)), "listener": "dns", "cluster": "resolvers",
	})
}

func TestAccessLogFileSharedAndClosed(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "shared.log")
	b := startBackend(t, echo)
	m, _ := newManager(t, proxy.Options{DrainTimeout: 50 * time.Millisecond})
	mk := func(name, p string) *listenerv3.Listener {
		return tcpListener(name, 0, "db", func(tp *tcpproxyv3.TcpProxy) {
			tp.AccessLog = []*accesslogv3.AccessLog{jsonLog(t, p)}
		})
	}
	apply(t, m, graph(t, []*listenerv3.Listener{mk("a", path), mk("b", path)}, cluster("db", b.addr)))
	for _, name := range []string{"a", "b"} {
		c := dialListener(t, m, name)
		roundTrip(t, c, name)
		c.Close()
	}
	lines := logLines(t, path, 2)
	got := map[any]bool{lines[0]["listener"]: true, lines[1]["listener"]: true}
	if !got["a"] || !got["b"] {
		t.Errorf("listeners in the shared file: %v", got)
	}

	// Moving both listeners to another file: new lines go there, the old file gets none.
	other := filepath.Join(dir, "other.log")
	apply(t, m, graph(t, []*listenerv3.Listener{mk("a", other), mk("b", other)}, cluster("db", b.addr)))
	c := dialListener(t, m, "a")
	roundTrip(t, c, "moved")
	c.Close()
	logLines(t, other, 1)
	if lines := logLines(t, path, 2); len(lines) != 2 {
		t.Fatal("the old file got more lines")
	}

	t.Run("a file that cannot be opened fails the Apply", func(t *testing.T) {
		bad := filepath.Join(dir, "no-such-dir", "x.log")
		err := m.Apply(graph(t, []*listenerv3.Listener{mk("a", bad)}, cluster("db", b.addr)))
		if err == nil || !strings.Contains(err.Error(), `listener "a": access log `+bad) {
			t.Fatalf("Apply() = %v, want an error naming the listener and the file", err)
		}
		c := dialListener(t, m, "b") // the running config is untouched
		roundTrip(t, c, "still here")
		c.Close()
		logLines(t, other, 2)
	})
}
