package e2e

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestHTTPRoutingAndForwardedHeaders runs nginx's usual `http {}` front door
// through a real agent: virtual hosts by domain (exact and wildcard), routes by
// path prefix and by header, a prefix rewrite, a direct response, an
// HTTP→HTTPS 301 and an HTTPS listener; X-Forwarded-For, X-Real-IP and
// X-Forwarded-Proto as the backend sees them, also behind a trusted hop;
// HTTP/2 to an http2 cluster; path normalisation; header add operations; the combined access log; stats per virtual host,
// route and cluster. Clients: Go net/http (HTTP/1.1, h2 over TLS, h2c) and
// curl (--http1.1, --http2 over TLS, --http2-prior-knowledge).
func TestHTTPRoutingAndForwardedHeaders(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := newTestCA(t)
	ca.issue(t, dir, "web", "web.example")
	app := startHTTPBackend(t, "app")
	api := startHTTPBackend(t, "api")
	canary := startHTTPBackend(t, "canary")
	static := startHTTPBackend(t, "static")
	h2 := startH2CBackend(t, "h2")

	cp := startControlPlane(t)
	ag := startAgent(t, cp, "a1", "dc=ams")
	plain, secure, edge := freeAddr(t), freeAddr(t), freeAddr(t)
	accessLog := filepath.Join(dir, "access.log")
	cfg := writeConfig(t, dir, "http.yaml", fmt.Sprintf(`
listeners:
  - name: web
    address: %q
    http:
      virtual_hosts:
        - name: secure
          domains: ["secure.example"]
          https_redirect: true
          routes:
            - { match: { prefix: / }, cluster: app }
        - name: api
          domains: ["api.example", "*.api.example"]
          routes:
            - { match: { prefix: / }, cluster: api }
        - name: default
          domains: ["*"]
          request_headers: { add: { X-Vhost: default } }
          response_headers: { add: { X-Served-By: flotilla-e2e } }
          routes:
            - name: health
              match: { path: /healthz }
              direct_response: { status: 200, body: "ok\n" }
            - name: admin
              match: { prefix: /admin }
              direct_response: { status: 403, body: "internal\n" }
            - name: canary
              match: { prefix: /, headers: [{ name: x-canary, exact: "1" }] }
              cluster: canary
            - name: static
              match: { prefix: /static/ }
              cluster: static
              prefix_rewrite: /
            - name: h2
              match: { prefix: /h2/ }
              cluster: h2
            - name: app
              match: { prefix: / }
              cluster: app
  - name: webs
    address: %q
    tls:
      certificates: [{ cert: web.crt, key: web.key }]
    http:
      routes:
        - { match: { prefix: / }, cluster: app }
  - name: edge
    address: %q
    access_log: { path: %q, format: combined }
    http:
      xff_trusted_hops: 1
      routes:
        - { match: { prefix: / }, cluster: app }
clusters:
  - { name: app, endpoints: [%q] }
  - { name: api, endpoints: [%q] }
  - { name: canary, endpoints: [%q] }
  - { name: static, endpoints: [%q] }
  - { name: h2, protocol: http2, endpoints: [%q] }
`, plain, secure, edge, accessLog, app.addr, api.addr, canary.addr, static.addr, h2.addr))
	if r := cp.flotctl(t, "validate", cfg); r.code != 0 {
		t.Fatalf("flotctl validate: %s", r)
	}
	cp.apply(t, cfg, "http front door")
	ag.waitReady(t)

	h1 := noRedirects(h1Transport(nil))
	waitFor(t, convergeTimeout, "the http listener to route", func() error {
		res, err := httpGet(h1, "http://"+plain+"/healthz", "web.example", nil)
		if err != nil {
			return err
		}
		if res.status != http.StatusOK || res.body != "ok\n" {
			return fmt.Errorf("GET /healthz: %d %q, want 200 \"ok\\n\"", res.status, res.body)
		}
		return nil
	})

	t.Run("routes", func(t *testing.T) {
		tests := []struct {
			name, host, path string
			hdr              map[string]string
			wantStatus       int
			wantBackend      string // "" for answers from the agent itself
			wantPath         string
			wantBody         string // for direct responses
			wantLocation     string
		}{
			{name: "default vhost, catch-all route", host: "web.example", path: "/hello?a=1", wantStatus: 200, wantBackend: "app", wantPath: "/hello"},
			{name: "exact domain", host: "api.example", path: "/v1/users", wantStatus: 200, wantBackend: "api", wantPath: "/v1/users"},
			{name: "wildcard domain", host: "eu.api.example", path: "/v1/users", wantStatus: 200, wantBackend: "api", wantPath: "/v1/users"},
			{name: "domain with port", host: "api.example:8080", path: "/", wantStatus: 200, wantBackend: "api", wantPath: "/"},
			{name: "header match", host: "web.example", path: "/hello", hdr: map[string]string{"X-Canary": "1"}, wantStatus: 200, wantBackend: "canary", wantPath: "/hello"},
			{name: "header mismatch", host: "web.example", path: "/hello", hdr: map[string]string{"X-Canary": "2"}, wantStatus: 200, wantBackend: "app", wantPath: "/hello"},
			{name: "prefix rewrite", host: "web.example", path: "/static/css/site.css", wantStatus: 200, wantBackend: "static", wantPath: "/css/site.css"},
			{name: "direct response", host: "web.example", path: "/healthz", wantStatus: 200, wantBody: "ok\n"},
			{name: "https redirect", host: "secure.example", path: "/login?next=%2Fhome", wantStatus: 301, wantLocation: "https://secure.example/login?next=%2Fhome"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				res, err := httpGet(h1, "http://"+plain+tt.path, tt.host, tt.hdr)
				if err != nil {
					t.Fatal(err)
				}
				if res.status != tt.wantStatus {
					t.Fatalf("status %d, want %d; body %q", res.status, tt.wantStatus, res.body)
				}
				if tt.wantLocation != "" {
					if got := res.header.Get("Location"); got != tt.wantLocation {
						t.Errorf("Location %q, want %q", got, tt.wantLocation)
					}
					return
				}
				if tt.wantBackend == "" {
					if res.seen != nil || res.body != tt.wantBody {
						t.Errorf("body %q, want the agent's %q", res.body, tt.wantBody)
					}
					return
				}
				if res.seen == nil {
					t.Fatalf("no backend answered: %q", res.body)
				}
				if res.seen.ID != tt.wantBackend || res.seen.Path != tt.wantPath {
					t.Errorf("backend %s saw path %q, want %s with %q", res.seen.ID, res.seen.Path, tt.wantBackend, tt.wantPath)
				}
				if res.seen.Host != tt.host {
					t.Errorf("backend saw Host %q, want the client's %q", res.seen.Host, tt.host)
				}
			})
		}
	})

	t.Run("stats per virtual host and route", func(t *testing.T) {
		// The routes above: three 2xx on virtual host api, one on route canary, one 301
		// on virtual host secure; the metrics are Prometheus counters on /metrics.
		tests := []struct {
			name   string
			labels []string
			min    float64
		}{
			{name: "vhost api 2xx", labels: []string{`listener="web"`, `virtual_host="api"`, `response_code_class="2xx"`}, min: 3},
			{name: "route canary 2xx", labels: []string{`virtual_host="default"`, `route="canary"`, `response_code_class="2xx"`}, min: 1},
			{name: "vhost secure 3xx", labels: []string{`virtual_host="secure"`, `response_code_class="3xx"`}, min: 1},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				n, err := ag.metric("flotilla_agent_vhost_rq_total", tt.labels...)
				if err != nil || n < tt.min {
					t.Errorf("vhost_rq_total{%s} = %v (%v), want at least %v", strings.Join(tt.labels, ","), n, err, tt.min)
				}
			})
		}
		if n, err := ag.metric("flotilla_agent_upstream_rq_xx", `cluster="api"`, `response_code_class="2xx"`); err != nil || n < 3 {
			t.Errorf("upstream_rq_xx{cluster=api,2xx} = %v (%v), want at least 3", n, err)
		}
	})

	t.Run("path normalisation", func(t *testing.T) {
		// Routes see the normalised path (nginx `location` matching, merge_slashes):
		// no spelling of /admin reaches the backend. Raw requests, so that no
		// client cleans the path first.
		tests := []struct {
			path       string
			wantStatus int
		}{
			{path: "/admin", wantStatus: 403},
			{path: "/x/../admin", wantStatus: 403},
			{path: "//admin", wantStatus: 403},
			{path: "/%61dmin", wantStatus: 403},
			{path: "/./admin/", wantStatus: 403},
			{path: "/administrivia/../hello", wantStatus: 200},
		}
		for _, tt := range tests {
			t.Run(tt.path, func(t *testing.T) {
				status, err := rawGet(plain, "web.example", tt.path)
				if err != nil {
					t.Fatal(err)
				}
				if status != tt.wantStatus {
					t.Fatalf("GET %s: status %d, want %d", tt.path, status, tt.wantStatus)
				}
			})
		}
	})

	t.Run("header operations", func(t *testing.T) {
		res, err := httpGet(h1, "http://"+plain+"/hello", "web.example", nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.seen == nil || res.seen.Header.Get("X-Vhost") != "default" {
			t.Errorf("backend did not get the virtual host's request header X-Vhost: default: %+v", res.seen)
		}
		if got := res.header.Get("X-Served-By"); got != "flotilla-e2e" {
			t.Errorf("response header X-Served-By %q, want flotilla-e2e", got)
		}
	})

	t.Run("forwarded headers", func(t *testing.T) {
		tests := []struct {
			name      string
			clientXFF string
			wantXFF   string
		}{
			{name: "no X-Forwarded-For", wantXFF: "127.0.0.1"},
			{name: "client X-Forwarded-For is appended to", clientXFF: "203.0.113.9", wantXFF: "203.0.113.9, 127.0.0.1"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				hdr := map[string]string{}
				if tt.clientXFF != "" {
					hdr["X-Forwarded-For"] = tt.clientXFF
				}
				res, err := httpGet(h1, "http://"+plain+"/hello", "web.example", hdr)
				if err != nil {
					t.Fatal(err)
				}
				if res.seen == nil {
					t.Fatalf("no backend answered: %d %q", res.status, res.body)
				}
				h := res.seen.Header
				// Several X-Forwarded-For lines count as one list.
				if got := strings.Join(h.Values("X-Forwarded-For"), ", "); got != tt.wantXFF {
					t.Errorf("X-Forwarded-For %q, want %q", got, tt.wantXFF)
				}
				if got := h.Values("X-Real-IP"); len(got) != 1 || got[0] != "127.0.0.1" {
					t.Errorf("X-Real-IP %q, want the client address 127.0.0.1 once", got)
				}
				if got := h.Get("X-Forwarded-Proto"); got != "http" {
					t.Errorf("X-Forwarded-Proto %q, want http", got)
				}
			})
		}
	})

	t.Run("trusted hop and access log", func(t *testing.T) {
		// Behind one trusted proxy (nginx set_real_ip_from + real_ip_recursive), the
		// client is the last address that proxy added.
		res, err := httpGet(h1, "http://"+edge+"/edge?x=1", "edge.example",
			map[string]string{"X-Forwarded-For": "203.0.113.9", "User-Agent": "flotilla-e2e/1", "Referer": "https://ref.example/"})
		if err != nil {
			t.Fatal(err)
		}
		if res.seen == nil {
			t.Fatalf("no backend answered: %d %q", res.status, res.body)
		}
		if got := res.seen.Header.Get("X-Real-IP"); got != "203.0.113.9" {
			t.Errorf("X-Real-IP %q with xff_trusted_hops 1, want 203.0.113.9", got)
		}
		if got := strings.Join(res.seen.Header.Values("X-Forwarded-For"), ", "); got != "203.0.113.9, 127.0.0.1" {
			t.Errorf("X-Forwarded-For %q, want \"203.0.113.9, 127.0.0.1\"", got)
		}
		// nginx combined + upstream address and times, one line per request.
		want := []string{`"GET /edge?x=1 HTTP/1.1" 200 `, `"https://ref.example/" "flotilla-e2e/1" ` + app.addr + " "}
		waitFor(t, 10*time.Second, "the access log line", func() error {
			data, err := os.ReadFile(accessLog)
			if err != nil {
				return err
			}
			line := strings.TrimSpace(string(data))
			if strings.Count(line, "\n") != 0 {
				return fmt.Errorf("access log has more than one line for one request:\n%s", data)
			}
			for _, w := range want {
				if !strings.Contains(line, w) {
					return fmt.Errorf("access log line %q lacks %q", line, w)
				}
			}
			if !strings.HasPrefix(line, "203.0.113.9 - - [") {
				return fmt.Errorf("access log line %q: want $remote_addr 203.0.113.9 (the client behind the trusted hop)", line)
			}
			return nil
		})
	})

	// Each transport gets its own TLS config: net/http sets NextProtos on the one it is given.
	t.Run("go h2 over TLS", func(t *testing.T) {
		c := noRedirects(h2Transport(ca.clientConfig("web.example")))
		var res *httpResult
		waitFor(t, convergeTimeout, "the https listener", func() (err error) {
			res, err = httpGet(c, "https://"+secure+"/hello", "web.example", nil)
			return err
		})
		if res.proto != "HTTP/2.0" || res.status != 200 || res.seen == nil || res.seen.ID != "app" {
			t.Fatalf("%s %d from %+v, want HTTP/2.0 200 from app; body %q", res.proto, res.status, res.seen, res.body)
		}
		if got := res.seen.Header.Get("X-Forwarded-Proto"); got != "https" {
			t.Errorf("X-Forwarded-Proto %q over TLS, want https", got)
		}
	})
	t.Run("go h1 over TLS", func(t *testing.T) {
		res, err := httpGet(noRedirects(h1Transport(ca.clientConfig("web.example"))), "https://"+secure+"/hello", "web.example", nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.proto != "HTTP/1.1" || res.status != 200 || res.seen == nil || res.seen.ID != "app" {
			t.Fatalf("%s %d from %+v, want HTTP/1.1 200 from app", res.proto, res.status, res.seen)
		}
	})
	t.Run("http2 upstream", func(t *testing.T) {
		// HTTP/1.1 from the client, HTTP/2 (h2c) to a cluster with protocol http2.
		res, err := httpGet(h1, "http://"+plain+"/h2/x", "web.example", nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.status != 200 || res.seen == nil || res.seen.ID != "h2" || res.seen.Proto != "HTTP/2.0" {
			t.Fatalf("status %d from %+v, want 200 from h2 over HTTP/2.0", res.status, res.seen)
		}
		if res.seen.Host != "web.example" {
			t.Errorf("backend saw :authority %q, want web.example", res.seen.Host)
		}
	})
	t.Run("go h2c", func(t *testing.T) {
		res, err := httpGet(noRedirects(h2Transport(nil)), "http://"+plain+"/static/x", "web.example", nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.proto != "HTTP/2.0" || res.status != 200 || res.seen == nil || res.seen.ID != "static" || res.seen.Path != "/x" {
			t.Fatalf("%s %d from %+v, want HTTP/2.0 200 from static with path /x", res.proto, res.status, res.seen)
		}
		// The backend speaks HTTP/1.1: the agent translated.
		if res.seen.Proto != "HTTP/1.1" {
			t.Errorf("backend got %s, want HTTP/1.1 (cluster protocol http1)", res.seen.Proto)
		}
	})

	t.Run("curl", func(t *testing.T) {
		curl := requirePeer(t, "curl")
		tests := []struct {
			name, url   string
			args        []string
			wantVersion string
			wantProto   string // X-Forwarded-Proto the backend saw
		}{
			{name: "http1.1", url: "http://" + plain + "/hello", args: []string{"--http1.1", "-H", "Host: web.example"}, wantVersion: "1.1", wantProto: "http"},
			{name: "h2c prior knowledge", url: "http://" + plain + "/hello", args: []string{"--http2-prior-knowledge", "-H", "Host: web.example"}, wantVersion: "2", wantProto: "http"},
			{name: "h2 over TLS", url: fmt.Sprintf("https://web.example:%d/hello", portOf(t, secure)),
				args:        []string{"--http2", "--cacert", ca.pemPath, "--resolve", fmt.Sprintf("web.example:%d:127.0.0.1", portOf(t, secure))},
				wantVersion: "2", wantProto: "https"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				args := append([]string{"-sS", "--max-time", "10", "-w", "\n%{http_code} %{http_version}"}, tt.args...)
				out, err := exec.Command(curl, append(args, tt.url)...).CombinedOutput()
				if err != nil {
					t.Fatalf("curl %s: %v\n%s", strings.Join(args, " "), err, out)
				}
				text := strings.TrimSpace(string(out))
				i := strings.LastIndexByte(text, '\n')
				body, status := text[:i+1], text[i+1:]
				if want := "200 " + tt.wantVersion; status != want {
					t.Fatalf("curl: %q, want %q\n%s", status, want, out)
				}
				if !strings.Contains(body, `"id":"app"`) || !strings.Contains(body, `"X-Forwarded-Proto":["`+tt.wantProto+`"]`) {
					t.Errorf("curl: body %s: want app's answer with X-Forwarded-Proto %s", body, tt.wantProto)
				}
			})
		}
	})
}

// TestHTTPWebSocketSurvivesConfigChange: a WebSocket session (route with
// websocket: true) and a request in flight keep working across a config change
// that replaces the route table, and a route without websocket refuses the
// upgrade.
func TestHTTPWebSocketSurvivesConfigChange(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	rt := startHTTPBackend(t, "rt")
	cp := startControlPlane(t)
	ag := startAgent(t, cp, "a1", "dc=ams")
	listen := freeAddr(t)
	bundle := func(version string) string {
		return fmt.Sprintf(`
listeners:
  - name: web
    address: %q
    http:
      routes:
        - { name: ws, match: { prefix: /deepstream }, cluster: realtime, websocket: true, idle_timeout: 1h }
        - { name: plain, match: { prefix: /plain }, cluster: realtime }
        - { name: slow, match: { prefix: /slow }, cluster: realtime, timeout: 30s }
        - { name: version, match: { prefix: / }, direct_response: { status: 200, body: %q } }
clusters:
  - { name: realtime, endpoints: [%q] }
`, listen, version+"\n", rt.addr)
	}
	cp.apply(t, writeConfig(t, dir, "v1.yaml", bundle("v1")), "websocket route")
	ag.waitReady(t)
	c := noRedirects(h1Transport(nil))
	servesVersion := func(v string) func() error {
		return func() error {
			res, err := httpGet(c, "http://"+listen+"/", "ws.example", nil)
			if err != nil {
				return err
			}
			if res.status != 200 || res.body != v+"\n" {
				return fmt.Errorf("GET /: %d %q, want 200 %q", res.status, res.body, v+"\n")
			}
			return nil
		}
	}
	waitFor(t, convergeTimeout, "the agent to serve v1", servesVersion("v1"))

	ws, err := dialWebSocket(t, listen, "ws.example", "/deepstream")
	if err != nil {
		t.Fatal(err)
	}
	say := func(ws *wsClient, msg string) {
		t.Helper()
		got, err := ws.say(msg)
		if err != nil {
			t.Fatal(err)
		}
		if want := "rt:" + msg; got != want {
			t.Fatalf("websocket echo %q, want %q", got, want)
		}
	}
	for i := range 3 {
		say(ws, "before "+strconv.Itoa(i))
	}

	if _, err := dialWebSocket(t, listen, "ws.example", "/plain"); err == nil {
		t.Error("a route without websocket: true upgraded the connection")
	}

	// A request in flight across the change must finish normally too.
	inflight := make(chan error, 1)
	go func() {
		res, err := httpGet(noRedirects(h1Transport(nil)), "http://"+listen+"/slow?d=3s", "ws.example", nil)
		if err == nil && (res.status != 200 || !strings.HasPrefix(res.body, "rt: slept")) {
			err = fmt.Errorf("status %d %q, want 200 from rt", res.status, res.body)
		}
		inflight <- err
	}()
	waitFor(t, 10*time.Second, "the slow request to reach the backend", func() error {
		if n := rt.slowActive.Load(); n != 1 {
			return fmt.Errorf("%d slow requests at the backend, want 1", n)
		}
		return nil
	})

	cp.apply(t, writeConfig(t, dir, "v2.yaml", bundle("v2")), "new route table")
	waitFor(t, convergeTimeout, "the agent to serve v2", servesVersion("v2"))
	if rt.slowActive.Load() != 1 {
		t.Log("the in-flight request finished before the agent took v2: the change came late, the check below proves less")
	}
	if err := <-inflight; err != nil {
		t.Errorf("a request in flight during the change: %v", err)
	}
	for i := range 3 {
		say(ws, "after "+strconv.Itoa(i))
	}
	ws2, err := dialWebSocket(t, listen, "ws.example", "/deepstream")
	if err != nil {
		t.Fatalf("a new session after the change: %v", err)
	}
	say(ws2, "new session")
	say(ws, "old session still")
}

// TestHTTPErrorResponses: 502 when the backend is down, 503 when the
// cluster's circuit breaker is full or (panic mode off) no endpoint passes
// its health check, 504 when the backend answers after the
// route timeout, and a slowloris client (an unfinished header line, then
// nothing) cut off by request_headers_timeout.
func TestHTTPErrorResponses(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	slow := startHTTPBackend(t, "slow")
	busy := startHTTPBackend(t, "busy")
	cp := startControlPlane(t)
	ag := startAgent(t, cp, "a1", "dc=ams")
	listen := freeAddr(t)
	down := freeAddr(t) // nothing listens there
	cfg := writeConfig(t, dir, "errors.yaml", fmt.Sprintf(`
listeners:
  - name: web
    address: %q
    http:
      request_headers_timeout: 1s
      routes:
        - { match: { prefix: /down }, cluster: down }
        - { match: { prefix: /slow }, cluster: slow, timeout: 500ms }
        - { match: { prefix: /busy }, cluster: busy, timeout: 0s }
        - { match: { prefix: /sick }, cluster: sick }
        - { match: { prefix: / }, cluster: slow }
clusters:
  - { name: down, endpoints: [%q] }
  - { name: slow, endpoints: [%q] }
  - { name: busy, endpoints: [%q], max_connections: 1 }
  - name: sick
    endpoints: [%q]
    health_check: { interval: 1s, tcp: {} }
    panic_threshold: 0
`, listen, down, slow.addr, busy.addr, down))
	cp.apply(t, cfg, "error cases")
	ag.waitReady(t)
	c := noRedirects(h1Transport(nil))
	waitFor(t, convergeTimeout, "the http listener to route", func() error {
		res, err := httpGet(c, "http://"+listen+"/ok", "errors.example", nil)
		if err != nil {
			return err
		}
		if res.status != 200 || res.seen == nil {
			return fmt.Errorf("GET /ok: %d %q", res.status, res.body)
		}
		return nil
	})

	t.Run("502 backend down", func(t *testing.T) {
		res, err := httpGet(c, "http://"+listen+"/down", "errors.example", nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.status != http.StatusBadGateway {
			t.Fatalf("status %d %q, want 502", res.status, res.body)
		}
	})
	t.Run("503 no healthy upstream", func(t *testing.T) {
		// The only endpoint fails its health check and panic mode is off:
		// the agent answers at once, without trying the endpoint.
		res, err := httpGet(c, "http://"+listen+"/sick", "errors.example", nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.status != http.StatusServiceUnavailable || !strings.Contains(res.body, "no healthy upstream") {
			t.Fatalf("status %d %q, want 503 no healthy upstream", res.status, res.body)
		}
	})
	t.Run("504 slower than the route timeout", func(t *testing.T) {
		start := time.Now()
		res, err := httpGet(c, "http://"+listen+"/slow?d=5s", "errors.example", nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.status != http.StatusGatewayTimeout {
			t.Fatalf("status %d %q, want 504", res.status, res.body)
		}
		if d := time.Since(start); d > 4*time.Second {
			t.Errorf("504 after %v: the route timeout is 500ms", d)
		}
		// Within the timeout, the same backend answers.
		res, err = httpGet(c, "http://"+listen+"/slow?d=10ms", "errors.example", nil)
		if err != nil || res.status != 200 {
			t.Fatalf("a fast answer on the same route: %v %+v", err, res)
		}
	})
	t.Run("503 circuit breaker", func(t *testing.T) {
		// One request holds the cluster's only connection; the next finds
		// the breaker full.
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		held := make(chan error, 1)
		tr := h1Transport(nil)
		defer tr.CloseIdleConnections()
		go func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+listen+"/busy/slow?d=20s", nil)
			resp, err := tr.RoundTrip(req)
			if err == nil {
				resp.Body.Close()
			}
			held <- err
		}()
		waitFor(t, 10*time.Second, "the slow request to reach the backend", func() error {
			select {
			case err := <-held:
				t.Fatalf("the request meant to hold the connection ended: %v", err)
			default:
			}
			if n := busy.slowActive.Load(); n != 1 {
				return fmt.Errorf("%d slow requests at the backend, want 1", n)
			}
			return nil
		})
		res, err := httpGet(c, "http://"+listen+"/busy", "errors.example", nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.status != http.StatusServiceUnavailable {
			t.Fatalf("status %d %q while the only connection is busy, want 503", res.status, res.body)
		}
		cancel()
		<-held
	})
	t.Run("slowloris", func(t *testing.T) {
		conn, err := net.DialTimeout("tcp", listen, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		start := time.Now()
		if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: errors.example\r\nX-Slow: aaaa"); err != nil {
			t.Fatal(err)
		}
		// The agent may answer 408 before closing; either way the
		// connection must end, long before our own deadline.
		conn.SetReadDeadline(time.Now().Add(15 * time.Second))
		got, err := io.ReadAll(conn)
		elapsed := time.Since(start)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("the agent kept the connection open for %v with an unfinished header (read %q)", elapsed, got)
		}
		if elapsed < 500*time.Millisecond || elapsed > 8*time.Second {
			t.Errorf("connection closed after %v, want about the 1s request_headers_timeout", elapsed)
		}
		if len(got) > 0 && !strings.HasPrefix(string(got), "HTTP/1.1 408") {
			t.Errorf("before closing, the agent sent %q, want nothing or a 408", got)
		}
		t.Logf("slowloris connection closed after %v (answer %q)", elapsed, firstLine(got))
	})
	t.Run("slowloris does not stop others", func(t *testing.T) {
		// A few idle half-requests, and a normal request still answered.
		var wg sync.WaitGroup
		for range 5 {
			conn, err := net.DialTimeout("tcp", listen, 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x")
			wg.Go(func() {
				conn.SetReadDeadline(time.Now().Add(15 * time.Second))
				io.Copy(io.Discard, conn)
			})
		}
		res, err := httpGet(c, "http://"+listen+"/ok", "errors.example", nil)
		if err != nil || res.status != 200 {
			t.Fatalf("a normal request beside slowloris clients: %v %+v", err, res)
		}
		wg.Wait()
	})
}

// rawGet sends "GET path HTTP/1.1" exactly as given over a new connection to
// addr and returns the response status.
func rawGet(addr, host, path string) (int, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, host); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, fmt.Errorf("GET %s: %w", path, err)
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// firstLine returns the first line of b, for logs.
func firstLine(b []byte) string {
	line, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSpace(line)
}

// TestHTTPLimitsCompressionRetries: max_request_body (413), max_request_headers_kb
// (431), gzip for the configured types only when the client accepts it,
// retries on connect failure onto the other endpoint, and weighted clusters.
func TestHTTPLimitsCompressionRetries(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	app := startHTTPBackend(t, "app")
	blue := startHTTPBackend(t, "blue")
	green := startHTTPBackend(t, "green")
	cp := startControlPlane(t)
	ag := startAgent(t, cp, "a1", "dc=ams")
	listen := freeAddr(t)
	down := freeAddr(t) // nothing listens there
	cp.apply(t, writeConfig(t, dir, "limits.yaml", fmt.Sprintf(`
listeners:
  - name: web
    address: %q
    http:
      max_request_body: 1KiB
      max_request_headers_kb: 2
      compression: { content_types: [application/json], min_length: 100 }
      routes:
        - { name: retry, match: { prefix: /retry }, cluster: flaky, retries: { on: [connect-failure], attempts: 2 } }
        - { name: split, match: { prefix: /split }, weighted_clusters: [{ cluster: blue, weight: 1 }, { cluster: green, weight: 1 }] }
        - { name: app, match: { prefix: / }, cluster: app }
clusters:
  - { name: app, endpoints: [%q] }
  - { name: flaky, endpoints: [%q, %q] }
  - { name: blue, endpoints: [%q] }
  - { name: green, endpoints: [%q] }
`, listen, app.addr, down, app.addr, blue.addr, green.addr)), "limits, gzip, retries, weights")
	ag.waitReady(t)
	c := noRedirects(h1Transport(nil))
	waitFor(t, convergeTimeout, "the http listener to route", func() error {
		res, err := httpGet(c, "http://"+listen+"/", "limits.example", nil)
		if err != nil {
			return err
		}
		if res.status != 200 || res.seen == nil {
			return fmt.Errorf("GET /: %d %q", res.status, res.body)
		}
		return nil
	})

	t.Run("max_request_body", func(t *testing.T) {
		tests := []struct {
			name string
			size int
			want int
		}{
			{name: "at the limit", size: 1024, want: http.StatusOK},
			{name: "over the limit", size: 1025, want: http.StatusRequestEntityTooLarge},
			{name: "far over the limit", size: 64 << 10, want: http.StatusRequestEntityTooLarge},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				resp, err := c.Post("http://"+listen+"/upload", "application/octet-stream", strings.NewReader(strings.Repeat("x", tt.size)))
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != tt.want {
					t.Fatalf("POST of %d bytes: status %d, want %d", tt.size, resp.StatusCode, tt.want)
				}
			})
		}
	})

	t.Run("max_request_headers_kb", func(t *testing.T) {
		tests := []struct {
			name string
			size int
			want int
		}{
			{name: "small headers", size: 512, want: http.StatusOK},
			{name: "headers over 2 KiB", size: 4096, want: http.StatusRequestHeaderFieldsTooLarge},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				res, err := httpGet(noRedirects(h1Transport(nil)), "http://"+listen+"/", "limits.example",
					map[string]string{"X-Big": strings.Repeat("b", tt.size)})
				if err != nil {
					t.Fatal(err)
				}
				if res.status != tt.want {
					t.Fatalf("status %d, want %d", res.status, tt.want)
				}
			})
		}
	})

	t.Run("gzip", func(t *testing.T) {
		tests := []struct {
			name, accept string
			wantGzip     bool
		}{
			{name: "client accepts gzip", accept: "gzip, deflate", wantGzip: true},
			{name: "client does not", accept: "identity", wantGzip: false},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				// The transport leaves Accept-Encoding alone when the request sets it, and
				// then does not decompress: the test sees what went over the wire.
				res, err := httpGet(c, "http://"+listen+"/json", "limits.example", map[string]string{"Accept-Encoding": tt.accept})
				if err != nil {
					t.Fatal(err)
				}
				if res.status != 200 {
					t.Fatalf("status %d %q", res.status, res.body)
				}
				gz := res.header.Get("Content-Encoding") == "gzip"
				if gz != tt.wantGzip {
					t.Fatalf("Content-Encoding %q, want gzip: %v", res.header.Get("Content-Encoding"), tt.wantGzip)
				}
				body := []byte(res.body)
				if gz {
					if !headerHasToken(res.header, "Vary", "Accept-Encoding") {
						t.Errorf("gzipped response without Vary: Accept-Encoding (Vary %q)", res.header.Values("Vary"))
					}
					zr, err := gzip.NewReader(bytes.NewReader(body))
					if err != nil {
						t.Fatalf("gzip body: %v", err)
					}
					if body, err = io.ReadAll(zr); err != nil {
						t.Fatalf("gunzip: %v", err)
					}
				}
				if !bytes.Contains(body, []byte(`"id":"app"`)) {
					t.Errorf("body %q, want app's JSON", body)
				}
			})
		}
	})

	t.Run("retry on connect failure", func(t *testing.T) {
		// Round robin sends every other first try to the endpoint nobody listens
		// on; the retry goes to the other one, so every request succeeds.
		for i := range 6 {
			res, err := httpGet(c, "http://"+listen+"/retry", "limits.example", nil)
			if err != nil {
				t.Fatal(err)
			}
			if res.status != 200 || res.seen == nil || res.seen.ID != "app" {
				t.Fatalf("request %d: status %d %q, want 200 from app after a retry", i, res.status, res.body)
			}
		}
		if n, err := ag.metric("flotilla_agent_upstream_rq_retry", `cluster="flaky"`); err != nil || n < 1 {
			t.Errorf("upstream_rq_retry{cluster=flaky} = %v (%v), want at least 1", n, err)
		}
	})

	t.Run("weighted clusters", func(t *testing.T) {
		seenBy := map[string]int{}
		for range 40 {
			res, err := httpGet(c, "http://"+listen+"/split", "limits.example", nil)
			if err != nil {
				t.Fatal(err)
			}
			if res.seen == nil {
				t.Fatalf("status %d %q", res.status, res.body)
			}
			seenBy[res.seen.ID]++
		}
		// 50/50 over 40 requests: each side gets at least 5 but with a chance of
		// about 1e-7 of a false failure.
		if seenBy["blue"] < 5 || seenBy["green"] < 5 || seenBy["blue"]+seenBy["green"] != 40 {
			t.Fatalf("requests per cluster %v, want about 20 each on blue and green", seenBy)
		}
	})
}

// TestHTTPConfigErrors: bad HTTP listener configs are refused by flotctl
// validate and by the control plane's apply, each error naming the file, the
// field path and the reason.
func TestHTTPConfigErrors(t *testing.T) {
	t.Parallel()
	cp := startControlPlane(t)
	tests := []struct {
		name  string
		http  string // the listener's http block, indented under "http:"
		want  string // in the error: field path and reason
		extra string // more listener fields
	}{
		{name: "bad regex", http: `routes: [{ match: { regex: "^/v[0-9+" }, cluster: app }]`,
			want: `listeners[0].http.routes[0].match.regex: "^/v[0-9+" is not a valid RE2 regular expression`},
		{name: "unknown cluster", http: `routes: [{ match: { prefix: / }, cluster: nope }]`,
			want: `listeners[0].http.routes[0].cluster: unknown cluster "nope"`},
		{name: "websocket without a cluster", http: `routes: [{ match: { prefix: /ws }, direct_response: { status: 200 }, websocket: true }]`,
			want: `listeners[0].http.routes[0].websocket:`},
		{name: "bad size", http: "max_request_body: 10 MiBs\n      routes: [{ match: { prefix: / }, cluster: app }]",
			want: `listeners[0].http.max_request_body: "10 MiBs" is not a size`},
		{name: "http with tcp", http: `routes: [{ match: { prefix: / }, cluster: app }]`, extra: "    tcp: { cluster: app }\n",
			want: `listeners[0].http: cannot be combined with tcp`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, t.TempDir(), "bad.yaml", fmt.Sprintf(`
listeners:
  - name: web
    address: "127.0.0.1:1"
%s    http:
      %s
clusters:
  - { name: app, endpoints: ["127.0.0.1:2"] }
`, tt.extra, tt.http))
			for _, args := range [][]string{{"validate", path}, {"apply", path, "-m", "bad"}} {
				r := cp.flotctl(t, args...)
				if r.code == 0 {
					t.Fatalf("flotctl %s accepted it: %s", args[0], r)
				}
				if !strings.Contains(r.stdout+r.stderr, tt.want) || !strings.Contains(r.stdout+r.stderr, "bad.yaml") {
					t.Errorf("flotctl %s: want an error naming bad.yaml and %q, got %s", args[0], tt.want, r)
				}
			}
		})
	}
	if r := cp.flotctl(t, "history"); r.code != 0 || strings.Contains(r.stdout, "bad") {
		t.Errorf("a refused apply left a version: %s", r)
	}
}
