package proxy_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

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
