package proxy_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/flotilla-proxy/flotilla/agent/accesslog"
	"github.com/flotilla-proxy/flotilla/agent/proxy"
	"github.com/flotilla-proxy/flotilla/agent/runtime"
	"github.com/flotilla-proxy/flotilla/agent/runtime/runtimetest"
)

// httpGraph builds a graph with route configurations, or fails the test.
func httpGraph(t testing.TB, ls []*listenerv3.Listener, rcs []*routev3.RouteConfiguration, cs ...*clusterv3.Cluster) *runtime.Graph {
	t.Helper()
	r := &runtime.Resources{
		Listeners: map[string]*listenerv3.Listener{},
		Clusters:  map[string]*clusterv3.Cluster{},
		Routes:    map[string]*routev3.RouteConfiguration{},
	}
	for _, l := range ls {
		r.Listeners[l.GetName()] = l
	}
	for _, c := range cs {
		r.Clusters[c.GetName()] = c
	}
	for _, rc := range rcs {
		r.Routes[rc.GetName()] = rc
	}
	g, err := runtime.Build(r)
	if err != nil {
		t.Fatalf("runtime.Build: %v", err)
	}
	return g
}

// wsBackend answers "/ws" upgrades with a line echo and anything else with its name.
func wsBackend(t testing.TB, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			fmt.Fprintf(w, "%s %s", name, r.URL.Path)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		for {
			line, err := brw.ReadString('\n')
			if err != nil {
				return
			}
			brw.WriteString("echo " + line)
			brw.Flush()
		}
	})}
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	return ln.Addr().String()
}

func wsRoute(prefix, cluster string) *routev3.Route {
	r := runtimetest.PrefixRoute(prefix, cluster)
	r.GetRoute().UpgradeConfigs = []*routev3.RouteAction_UpgradeConfig{{UpgradeType: "websocket"}}
	return r
}

func httpGet(t testing.TB, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestHTTPListener: an HTTP listener end to end through the Manager; an RDS change applies
// to the next request on a kept-alive connection, and an open WebSocket survives it and a
// listener change; removing the listener closes idle keep-alive connections at once.
func TestHTTPListener(t *testing.T) {
	a, b := wsBackend(t, "a"), wsBackend(t, "b")
	m, reg := newManager(t, proxy.Options{DrainTimeout: 5 * time.Second})
	lis := []*listenerv3.Listener{runtimetest.HTTPListener("web", "127.0.0.1", 0, runtimetest.HTTPConnectionManager("web", "web"))}
	cls := []*clusterv3.Cluster{cluster("a", a), cluster("b", b)}
	rc1 := runtimetest.RouteConfig("web", runtimetest.VirtualHost("all", []string{"*"},
		wsRoute("/ws", "a"), runtimetest.PrefixRoute("/", "a")))
	apply(t, m, httpGraph(t, lis, []*routev3.RouteConfiguration{rc1}, cls...))
	addr := m.Addr("web").String()

	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}, Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	if code, body := httpGet(t, client, "http://"+addr+"/x"); code != 200 || body != "a /x" {
		t.Fatalf("GET /x = %d %q", code, body)
	}

	ws, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	br := bufio.NewReader(ws)
	fmt.Fprintf(ws, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	say := func(msg string) {
		t.Helper()
		ws.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(ws, "%s\n", msg)
		if line, err := br.ReadString('\n'); err != nil || line != "echo "+msg+"\n" {
			t.Fatalf("echo of %q = %q, %v", msg, line, err)
		}
	}
	say("one")

	// RDS: everything to b now.
	rc2 := runtimetest.RouteConfig("web", runtimetest.VirtualHost("all", []string{"*"}, runtimetest.PrefixRoute("/", "b")))
	apply(t, m, httpGraph(t, lis, []*routev3.RouteConfiguration{rc2}, cls...))
	if code, body := httpGet(t, client, "http://"+addr+"/x"); code != 200 || body != "b /x" {
		t.Fatalf("after the RDS change: GET /x = %d %q", code, body)
	}
	say("two")

	// The listener's manager changes (a timeout): new connections get a new server.
	h := runtimetest.HTTPConnectionManager("web", "web")
	h.RequestHeadersTimeout = nil
	lis2 := []*listenerv3.Listener{runtimetest.HTTPListener("web", "127.0.0.1", 0, h)}
	apply(t, m, httpGraph(t, lis2, []*routev3.RouteConfiguration{rc2}, cls...))
	say("three")
	if code, body := httpGet(t, client, "http://"+addr+"/y"); code != 200 || body != "b /y" {
		t.Fatalf("after the manager change: GET /y = %d %q", code, body)
	}

	if got := metric(t, reg, "flotilla_agent_http_downstream_rq_total", "web"); got < 2 {
		t.Errorf("http_downstream_rq_total = %v, want >= 2", got)
	}
	if got := metric(t, reg, "flotilla_agent_downstream_cx_total", "web"); got < 2 {
		t.Errorf("downstream_cx_total = %v, want >= 2", got)
	}

	// An idle keep-alive connection is closed as soon as its listener is removed; the
	// WebSocket runs on until the drain deadline.
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	fmt.Fprintf(idle, "GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
	ibr := bufio.NewReader(idle)
	if resp, err := http.ReadResponse(ibr, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("keep-alive request: %v %v", resp, err)
	} else {
		io.Copy(io.Discard, resp.Body)
	}
	apply(t, m, httpGraph(t, nil, nil, cls...))
	idle.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := ibr.ReadByte(); err == nil || strings.Contains(err.Error(), "timeout") {
		t.Errorf("idle keep-alive connection of a removed listener: %v, want closed", err)
	}
	say("four")
}

// TestHTTPListenerShutdown: Shutdown does not wait for idle keep-alive connections.
func TestHTTPListenerShutdown(t *testing.T) {
	a := wsBackend(t, "a")
	m := proxy.NewManager(proxy.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	lis := []*listenerv3.Listener{runtimetest.HTTPListener("web", "127.0.0.1", 0, runtimetest.HTTPConnectionManager("web", "web"))}
	rc := runtimetest.RouteConfig("web", runtimetest.VirtualHost("all", []string{"*"}, runtimetest.PrefixRoute("/", "a")))
	apply(t, m, httpGraph(t, lis, []*routev3.RouteConfiguration{rc}, cluster("a", a)))
	client := &http.Client{Timeout: 5 * time.Second}
	if code, _ := httpGet(t, client, "http://"+m.Addr("web").String()+"/"); code != 200 {
		t.Fatalf("status %d", code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := m.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Shutdown took %v with one idle keep-alive connection", d)
	}
	client.CloseIdleConnections()
}

// TestHTTPListenerProxyProtocolAndAccessLog: behind a PROXY protocol sender, the client of
// X-Forwarded-For, X-Real-IP and the access log is the PROXY header's source; the access log
// gets one combined line per request.
func TestHTTPListenerProxyProtocolAndAccessLog(t *testing.T) {
	var got atomic.Value
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	be := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Store(r.Header.Clone())
	})}
	go be.Serve(ln)
	t.Cleanup(func() { be.Close() })

	logPath := filepath.Join(t.TempDir(), "access.log")
	text, _, err := accesslog.ToEnvoyHTTP("combined")
	if err != nil {
		t.Fatal(err)
	}
	h := runtimetest.HTTPConnectionManager("web", "web")
	h.AccessLog = []*accesslogv3.AccessLog{runtimetest.FileAccessLog(logPath, text, nil)}
	l := runtimetest.HTTPListener("web", "127.0.0.1", 0, h)
	l.ListenerFilters = []*listenerv3.ListenerFilter{runtimetest.ProxyProtocolFilter()}
	rc := runtimetest.RouteConfig("web", runtimetest.VirtualHost("all", []string{"*"}, runtimetest.PrefixRoute("/", "a")))
	rc.RequestHeadersToAdd = []*corev3.HeaderValueOption{{
		Header:       &corev3.HeaderValue{Key: "x-real-ip", Value: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}}
	m, _ := newManager(t, proxy.Options{})
	apply(t, m, httpGraph(t, []*listenerv3.Listener{l}, []*routev3.RouteConfiguration{rc}, cluster("a", ln.Addr().String())))

	c, err := net.Dial("tcp", m.Addr("web").String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "PROXY TCP4 198.51.100.7 192.0.2.1 40000 80\r\nGET /p?q=1 HTTP/1.1\r\nHost: www.example\r\nUser-Agent: ua\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("response: %v %v", resp, err)
	}
	hdr, _ := got.Load().(http.Header)
	if hdr.Get("X-Forwarded-For") != "198.51.100.7" || hdr.Get("X-Real-Ip") != "198.51.100.7" {
		t.Errorf("backend saw X-Forwarded-For %q, X-Real-IP %q; want 198.51.100.7", hdr.Get("X-Forwarded-For"), hdr.Get("X-Real-Ip"))
	}
	want := regexp.MustCompile(`^198\.51\.100\.7 - - \[[^]]+\] "GET /p\?q=1 HTTP/1\.1" 200 0 "-" "ua" 127\.0\.0\.1:[0-9]+ [0-9]+ [0-9]+\n$`)
	waitFor(t, 5*time.Second, "the access log line", func() bool {
		b, _ := os.ReadFile(logPath)
		return want.Match(b)
	})
}

// TestHTTPWebSocketDrain: a WebSocket of a removed listener runs on until the drain
// deadline, then it is closed.
func TestHTTPWebSocketDrain(t *testing.T) {
	a := wsBackend(t, "a")
	m, _ := newManager(t, proxy.Options{DrainTimeout: 300 * time.Millisecond})
	lis := []*listenerv3.Listener{runtimetest.HTTPListener("web", "127.0.0.1", 0, runtimetest.HTTPConnectionManager("web", "web"))}
	rc := runtimetest.RouteConfig("web", runtimetest.VirtualHost("all", []string{"*"}, wsRoute("/", "a")))
	apply(t, m, httpGraph(t, lis, []*routev3.RouteConfiguration{rc}, cluster("a", a)))
	ws, err := net.Dial("tcp", m.Addr("web").String())
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	br := bufio.NewReader(ws)
	fmt.Fprintf(ws, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	apply(t, m, httpGraph(t, nil, nil, cluster("a", a)))
	ws.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(ws, "still there\n")
	if line, err := br.ReadString('\n'); err != nil || line != "echo still there\n" {
		t.Fatalf("right after the removal: %q, %v", line, err)
	}
	start := time.Now()
	if _, err := br.ReadString('\n'); err == nil || strings.Contains(err.Error(), "timeout") {
		t.Fatalf("WebSocket after the drain deadline: %v, want closed", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("closed after %v, want about the 300ms drain timeout", d)
	}
}
