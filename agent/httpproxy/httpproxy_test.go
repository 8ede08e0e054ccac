package httpproxy_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-proxy/flotilla/agent/accesslog"
	"github.com/flotilla-proxy/flotilla/agent/httpproxy"
	"github.com/flotilla-proxy/flotilla/agent/httproute"
)

func TestRouting(t *testing.T) {
	api := startEcho(t, "api")
	tbl := &httproute.Table{Name: "web", VirtualHosts: []*httproute.VirtualHost{
		{Name: "api", Domains: []string{"api.example"}, Routes: []*httproute.Route{
			direct("api-exact", httproute.Match{Path: "/exact"}, "api-exact"),
			fwd("api", "/", "api"),
		}},
		{Name: "default", Domains: []string{"*"}, Routes: []*httproute.Route{
			direct("exact", httproute.Match{Path: "/exact"}, "exact"),
			direct("regex", httproute.Match{Regex: regexp.MustCompile(`^/v[0-9]+/.*$`)}, "regex"),
			direct("canary", httproute.Match{Prefix: "/app", Headers: []httproute.HeaderMatch{{Name: "X-Canary", Exact: "1", Kind: httproute.HeaderExact}}}, "canary"),
			direct("post", httproute.Match{Prefix: "/app", Headers: []httproute.HeaderMatch{{Name: ":method", Exact: "POST", Kind: httproute.HeaderExact}}}, "post"),
			direct("app", httproute.Match{Prefix: "/app"}, "app"),
		}},
	}}
	cfg := &httpproxy.Config{Listener: "web", Manager: manager(), Table: tbl}
	p := startProxy(t, cfg, nil, cluster{Cluster: httpproxy.Cluster{Name: "api"}, endpoints: []string{addrOf(api)}})
	c := noRedirect()
	tests := []struct {
		name, method, host, path string
		header                   http.Header
		status                   int
		want                     string
	}{
		{"exact", "GET", "www.example", "/exact", nil, 200, "exact"},
		{"exact is not a prefix", "GET", "www.example", "/exact/more", nil, 404, ""},
		{"regex", "GET", "www.example", "/v2/things?x=1", nil, 200, "regex"},
		{"header", "GET", "www.example", "/app/x", http.Header{"X-Canary": {"1"}}, 200, "canary"},
		{"method", "POST", "www.example", "/app/x", nil, 200, "post"},
		{"prefix", "GET", "www.example", "/app/x", nil, 200, "app"},
		{"no route", "GET", "www.example", "/nothing", nil, 404, ""},
		{"virtual host", "GET", "api.example", "/exact", nil, 200, "api-exact"},
		{"virtual host with port", "GET", "api.example:8080", "/exact", nil, 200, "api-exact"},
		{"forward", "GET", "api.example", "/anything", nil, 200, `"Backend":"api"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := newRequest(t, tt.method, p.url(tt.path), nil)
			req.Host = tt.host
			for k, v := range tt.header {
				req.Header[k] = v
			}
			resp, body := do(t, c, req)
			if resp.StatusCode != tt.status || !strings.Contains(body, tt.want) {
				t.Errorf("%s %s%s = %d %q, want %d %q", tt.method, tt.host, tt.path, resp.StatusCode, body, tt.status, tt.want)
			}
			if got := resp.Header.Get("Server"); got != "flotilla" {
				t.Errorf("Server = %q, want flotilla", got)
			}
		})
	}
}

func TestRedirects(t *testing.T) {
	tbl := &httproute.Table{Name: "web", VirtualHosts: []*httproute.VirtualHost{
		{Name: "secure", Domains: []string{"secure.example"}, RequireTLS: httproute.TLSAll, Routes: []*httproute.Route{direct("any", httproute.Match{Prefix: "/"}, "ok")}},
		{Name: "default", Domains: []string{"*"}, Routes: []*httproute.Route{
			{Name: "old", Match: httproute.Match{Prefix: "/old/"}, Redirect: &httproute.Redirect{PrefixRewrite: "/new/", Code: 308}},
			{Name: "moved", Match: httproute.Match{Path: "/moved"}, Redirect: &httproute.Redirect{Host: "other.example", Path: "/there", StripQuery: true}},
		}},
	}}
	p := startProxy(t, &httpproxy.Config{Listener: "web", Manager: manager(), Table: tbl}, nil)
	tests := []struct {
		host, path string
		status     int
		location   string
	}{
		{"secure.example", "/a/b?q=1", 301, "https://secure.example/a/b?q=1"},
		{"www.example", "/old/x?y=2", 308, "http://www.example/new/x?y=2"},
		{"www.example", "/moved?z=1", 301, "http://other.example/there"},
	}
	for _, tt := range tests {
		t.Run(tt.host+tt.path, func(t *testing.T) {
			req := newRequest(t, "GET", p.url(tt.path), nil)
			req.Host = tt.host
			resp, _ := do(t, noRedirect(), req)
			if resp.StatusCode != tt.status || resp.Header.Get("Location") != tt.location {
				t.Errorf("got %d %q, want %d %q", resp.StatusCode, resp.Header.Get("Location"), tt.status, tt.location)
			}
		})
	}
}

// TestForwardedHeaders: X-Forwarded-For, X-Forwarded-Proto and X-Real-IP as nginx users
// expect, with and without trusted hops; rewrites; header mutations at every level.
func TestForwardedHeaders(t *testing.T) {
	be := startEcho(t, "be")
	realIP := httproute.HeaderValue{Name: "X-Real-Ip", Value: format(t, "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%")}
	lit := func(name, v string, app bool) httproute.HeaderValue {
		return httproute.HeaderValue{Name: name, Value: format(t, v), Append: app}
	}
	route := fwd("api", "/api/", "be")
	route.Forward.PrefixRewrite = "/"
	route.Forward.HostRewrite = "internal.example"
	route.Headers = httproute.HeaderMutations{
		RequestAdd:     []httproute.HeaderValue{lit("X-Level", "route", false)},
		RequestRemove:  []string{"X-Debug"},
		ResponseAdd:    []httproute.HeaderValue{lit("X-Resp", "route", true)},
		ResponseRemove: []string{"X-Remove-Me"},
	}
	tbl := table(route)
	tbl.VirtualHosts[0].Headers = httproute.HeaderMutations{
		RequestAdd:  []httproute.HeaderValue{lit("X-Vhost", "vh", false)},
		ResponseAdd: []httproute.HeaderValue{lit("Strict-Transport-Security", "max-age=31536000", false), lit("X-Resp", "vhost", true)},
	}
	tbl.Headers = httproute.HeaderMutations{RequestAdd: []httproute.HeaderValue{realIP}}
	for _, tt := range []struct {
		name       string
		hops       uint32
		xff, xfp   string
		wantXFF    string
		wantRealIP string
		wantProto  string
	}{
		{"no hops", 0, "203.0.113.9", "https", "203.0.113.9, 127.0.0.1", "127.0.0.1", "http"},
		{"no header", 0, "", "", "127.0.0.1", "127.0.0.1", "http"},
		{"one trusted hop", 1, "198.51.100.1, 203.0.113.9", "https", "198.51.100.1, 203.0.113.9, 127.0.0.1", "203.0.113.9", "https"},
		{"two trusted hops", 2, "198.51.100.1, 203.0.113.9", "", "198.51.100.1, 203.0.113.9, 127.0.0.1", "198.51.100.1", "http"},
		{"too few entries", 3, "198.51.100.1", "", "198.51.100.1, 127.0.0.1", "127.0.0.1", "http"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := manager()
			m.XFFNumTrustedHops = tt.hops
			p := startProxy(t, &httpproxy.Config{Listener: "web", Manager: m, Table: tbl}, nil,
				cluster{Cluster: httpproxy.Cluster{Name: "be"}, endpoints: []string{addrOf(be)}})
			req := newRequest(t, "GET", p.url("/api/v1/x?q=1"), nil)
			if tt.xff != "" {
				req.Header.Set("X-Forwarded-For", tt.xff)
			}
			if tt.xfp != "" {
				req.Header.Set("X-Forwarded-Proto", tt.xfp)
			}
			req.Header.Set("X-Debug", "1")
			req.Header.Set("X-Real-Ip", "6.6.6.6")
			resp, body := do(t, noRedirect(), req)
			var e echoed
			if err := json.Unmarshal([]byte(body), &e); err != nil {
				t.Fatalf("%d %s: %v", resp.StatusCode, body, err)
			}
			h := e.Header
			if got := h.Get("X-Forwarded-For"); got != tt.wantXFF {
				t.Errorf("X-Forwarded-For = %q, want %q", got, tt.wantXFF)
			}
			if got := h.Values("X-Real-Ip"); len(got) != 1 || got[0] != tt.wantRealIP {
				t.Errorf("X-Real-IP = %q, want %q", got, tt.wantRealIP)
			}
			if got := h.Get("X-Forwarded-Proto"); got != tt.wantProto {
				t.Errorf("X-Forwarded-Proto = %q, want %q", got, tt.wantProto)
			}
			if e.Path != "/v1/x?q=1" || e.Host != "internal.example" {
				t.Errorf("upstream saw %s %s, want internal.example /v1/x?q=1", e.Host, e.Path)
			}
			if h.Get("X-Debug") != "" || h.Get("X-Level") != "route" || h.Get("X-Vhost") != "vh" {
				t.Errorf("request header mutations: %v", h)
			}
			if got := resp.Header.Values("X-Resp"); strings.Join(got, ",") != "route,vhost" {
				t.Errorf("X-Resp = %q, want route then vhost", got)
			}
			if resp.Header.Get("X-Remove-Me") != "" || resp.Header.Get("Strict-Transport-Security") == "" || resp.Header.Get("X-Backend") != "be" {
				t.Errorf("response header mutations: %v", resp.Header)
			}
		})
	}
}

func TestDirectResponseAndAccessLog(t *testing.T) {
	var buf safeBuffer
	f, err := accesslog.ParseFormat("combined")
	if err != nil {
		t.Fatal(err)
	}
	lg := accesslog.NewWriter(&buf, f)
	tbl := table(direct("health", httproute.Match{Path: "/healthz"}, "ok\n"))
	p := startProxy(t, &httpproxy.Config{Listener: "web", Manager: manager(), Table: tbl, AccessLog: lg}, nil)
	req := newRequest(t, "GET", p.url("/healthz"), nil)
	req.Header.Set("User-Agent", "test-agent")
	req.Header.Set("Referer", "http://ref/")
	resp, body := do(t, noRedirect(), req)
	if resp.StatusCode != 200 || body != "ok\n" || resp.Header.Get("Content-Type") != "text/plain" {
		t.Fatalf("got %d %q %v", resp.StatusCode, body, resp.Header)
	}
	lg.Close()
	line := buf.String()
	want := regexp.MustCompile(`^127\.0\.0\.1 - - \[[^]]+\] "GET /healthz HTTP/1\.1" 200 3 "http://ref/" "test-agent" - - [0-9.]+\n$`)
	if !want.MatchString(line) {
		t.Errorf("access log line %q does not match %v", line, want)
	}
}

// safeBuffer is a bytes.Buffer for a Logger's writer goroutine and the test.
type safeBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *safeBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *safeBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestErrors(t *testing.T) {
	stall := make(chan struct{})
	t.Cleanup(func() { close(stall) })
	slow := startEchoFunc(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-stall:
		case <-r.Context().Done():
		}
	})
	timeout := fwd("slow", "/slow", "slow")
	timeout.Forward.Timeout = 200 * time.Millisecond
	tbl := table(timeout, fwd("dead", "/dead", "dead"), fwd("empty", "/empty", "empty"), fwd("unknown", "/unknown", "nope"))
	p := startProxy(t, &httpproxy.Config{Listener: "web", Manager: manager(), Table: tbl}, nil,
		cluster{Cluster: httpproxy.Cluster{Name: "slow"}, endpoints: []string{slow.addr}},
		cluster{Cluster: httpproxy.Cluster{Name: "dead"}, endpoints: []string{deadAddr(t)}},
		cluster{Cluster: httpproxy.Cluster{Name: "empty"}},
	)
	for _, tt := range []struct {
		path   string
		status int
		body   string
	}{
		{"/slow", 504, "upstream request timeout"},
		{"/dead", 502, "upstream connect error"},
		{"/empty", 503, "no healthy upstream"},
		{"/unknown", 503, "no healthy upstream"},
	} {
		t.Run(tt.path, func(t *testing.T) {
			start := time.Now()
			resp, body := do(t, noRedirect(), newRequest(t, "GET", p.url(tt.path), nil))
			if resp.StatusCode != tt.status || !strings.Contains(body, tt.body) {
				t.Errorf("got %d %q, want %d %q", resp.StatusCode, body, tt.status, tt.body)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
}

func startEchoFunc(t testing.TB, f http.HandlerFunc) *httptestServer {
	return startBackend(t, f)
}

func TestRetries(t *testing.T) {
	live := startEcho(t, "live")
	var fails sync.Mutex
	failed := 0
	flaky := startEchoFunc(t, func(w http.ResponseWriter, r *http.Request) {
		fails.Lock()
		failed++
		fails.Unlock()
		w.WriteHeader(503)
	})
	dead := deadAddr(t)
	for _, tt := range []struct {
		name      string
		endpoints []string
		on        []string
		retries   uint32
		status    int
	}{
		{"connect failure retried on the other endpoint", []string{dead, addrOf(live)}, []string{httproute.RetryConnectFailure}, 1, 200},
		{"no retry policy", []string{dead}, nil, 0, 502},
		{"5xx retried", []string{flaky.addr, addrOf(live)}, []string{httproute.Retry5xx}, 1, 200},
		{"5xx not retried without 5xx", []string{flaky.addr}, []string{httproute.RetryConnectFailure}, 1, 503},
	} {
		t.Run(tt.name, func(t *testing.T) {
			route := fwd("r", "/", "c")
			if tt.on != nil {
				on := map[string]bool{}
				for _, o := range tt.on {
					on[o] = true
				}
				route.Forward.Retry = &httproute.RetryPolicy{On: on, NumRetries: tt.retries}
			}
			p := startProxy(t, &httpproxy.Config{Listener: "web", Manager: manager(), Table: table(route)}, nil,
				cluster{Cluster: httpproxy.Cluster{Name: "c"}, endpoints: tt.endpoints})
			// Round robin starts anywhere: send enough requests to hit the bad endpoint first.
			for range 4 {
				resp, body := do(t, noRedirect(), newRequest(t, "GET", p.url("/x"), nil))
				if resp.StatusCode != tt.status {
					t.Fatalf("got %d %q, want %d", resp.StatusCode, body, tt.status)
				}
			}
		})
	}
	t.Run("POST with a body is retried after a connect failure", func(t *testing.T) {
		route := fwd("r", "/", "c")
		route.Forward.Retry = &httproute.RetryPolicy{On: map[string]bool{httproute.RetryConnectFailure: true}, NumRetries: 2}
		p := startProxy(t, &httpproxy.Config{Listener: "web", Manager: manager(), Table: table(route)}, nil,
			cluster{Cluster: httpproxy.Cluster{Name: "c"}, endpoints: []string{dead, addrOf(live)}})
		for range 4 {
			resp, body := do(t, noRedirect(), newRequest(t, "POST", p.url("/x"), strings.NewReader("payload")))
			if resp.StatusCode != 200 || !strings.Contains(body, `"Body":"payload"`) {
				t.Fatalf("got %d %q", resp.StatusCode, body)
			}
		}
	})
}

func TestLimits(t *testing.T) {
	be := startEcho(t, "be")
	m := manager()
	m.MaxRequestBodyBytes = 16
	m.MaxRequestHeadersBytes = 1024
	m.RequestHeadersTimeout = 300 * time.Millisecond
	p := startProxy(t, &httpproxy.Config{Listener: "web", Manager: m, Table: table(fwd("r", "/", "be"))}, nil,
		cluster{Cluster: httpproxy.Cluster{Name: "be"}, endpoints: []string{addrOf(be)}})
	c := noRedirect()
	t.Run("small body passes", func(t *testing.T) {
		resp, _ := do(t, c, newRequest(t, "POST", p.url("/"), strings.NewReader("small")))
		if resp.StatusCode != 200 {
			t.Errorf("status %d", resp.StatusCode)
		}
	})
	t.Run("413 by content-length", func(t *testing.T) {
		resp, _ := do(t, c, newRequest(t, "POST", p.url("/"), strings.NewReader(strings.Repeat("x", 100))))
		if resp.StatusCode != 413 {
			t.Errorf("status %d, want 413", resp.StatusCode)
		}
	})
	t.Run("413 chunked", func(t *testing.T) {
		req := newRequest(t, "POST", p.url("/"), io.MultiReader(strings.NewReader(strings.Repeat("x", 100))))
		req.ContentLength = -1
		resp, _ := do(t, c, req)
		if resp.StatusCode != 413 {
			t.Errorf("status %d, want 413", resp.StatusCode)
		}
	})
	t.Run("431", func(t *testing.T) {
		req := newRequest(t, "GET", p.url("/"), nil)
		req.Header.Set("X-Big", strings.Repeat("x", 8<<10))
		resp, _ := do(t, c, req)
		if resp.StatusCode != 431 {
			t.Errorf("status %d, want 431", resp.StatusCode)
		}
	})
	t.Run("slowloris", func(t *testing.T) {
		conn, err := net.Dial("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
		start := time.Now()
		if !closedWithin(conn, 5*time.Second) {
			t.Fatal("connection with unfinished headers still open after 5s")
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("closed after %v, want about 300ms", d)
		}
	})
}

// TestBodyLimitNothingBeyond: of a chunked body over max_request_body, no byte beyond the
// limit reaches the upstream.
func TestBodyLimitNothingBeyond(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		b, _ := io.ReadAll(c) // until the proxy gives up the request and closes
		got <- string(b)
	}()
	m := manager()
	m.MaxRequestBodyBytes = 10
	p := startProxy(t, &httpproxy.Config{Listener: "web", Manager: m, Table: table(fwd("r", "/", "be"))}, nil,
		cluster{Cluster: httpproxy.Cluster{Name: "be"}, endpoints: []string{ln.Addr().String()}})
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n%s\r\n0\r\n\r\n", strings.Repeat("Z", 100))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("status %d, want 413", resp.StatusCode)
	}
	select {
	case up := <-got:
		if n := strings.Count(up, "Z"); n > 10 {
			t.Errorf("the upstream got %d body bytes of a request limited to 10", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the proxy never closed the upstream connection")
	}
}

func TestGzip(t *testing.T) {
	text := strings.Repeat("hello flotilla ", 200)
	be := startEchoFunc(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/png":
			w.Header().Set("Content-Type", "image/png")
		case "/encoded":
			w.Header().Set("Content-Type", "text/plain")
			w.Header().Set("Content-Encoding", "br")
		case "/short":
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, "short")
			return
		case "/range":
			w.Header().Set("Content-Type", "text/plain")
			http.ServeContent(w, r, "x.txt", time.Time{}, strings.NewReader(text))
			return
		case "/notfound":
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(http.StatusNotFound)
		case "/content-range":
			w.Header().Set("Content-Type", "text/plain")
			w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-%d/%d", len(text)-1, len(text)))
		default:
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		}
		io.WriteString(w, text)
	})
	m := manager()
	m.Compression = &httproute.Compression{ContentTypes: []string{"text/plain"}, MinContentLength: 100}
	p := startProxy(t, &httpproxy.Config{Listener: "web", Manager: m, Table: table(fwd("r", "/", "be"))}, nil,
		cluster{Cluster: httpproxy.Cluster{Name: "be"}, endpoints: []string{be.addr}})
	for _, tt := range []struct {
		path, accept, rng string
		gzipped           bool
	}{
		{"/text", "gzip, deflate", "", true},
		{"/text", "", "", false},
		{"/text", "gzip;q=0", "", false},
		{"/png", "gzip", "", false},
		{"/encoded", "gzip", "", false},
		{"/short", "gzip", "", false},
		// Only 200s, and never a byte range: a 206's Content-Range counts identity bytes.
		{"/range", "gzip", "bytes=0-999", false},
		{"/range", "gzip", "", true},
		{"/text", "gzip", "bytes=0-999", false}, // a 200 to a Range request
		{"/content-range", "gzip", "", false},
		{"/notfound", "gzip", "", false},
	} {
		t.Run(tt.path+" "+tt.accept+" "+tt.rng, func(t *testing.T) {
			req := newRequest(t, "GET", p.url(tt.path), nil)
			if tt.accept != "" {
				req.Header.Set("Accept-Encoding", tt.accept)
			}
			if tt.rng != "" {
				req.Header.Set("Range", tt.rng)
			}
			resp, body := do(t, noRedirect(), req)
			gz := resp.Header.Get("Content-Encoding") == "gzip"
			if gz != tt.gzipped {
				t.Fatalf("Content-Encoding %q, want gzip: %v", resp.Header.Get("Content-Encoding"), tt.gzipped)
			}
			if !gz {
				return
			}
			if resp.Header.Get("Vary") != "Accept-Encoding" {
				t.Errorf("Vary = %q", resp.Header.Get("Vary"))
			}
			zr, err := gzip.NewReader(strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			plain, err := io.ReadAll(zr)
			if err != nil || string(plain) != text || resp.StatusCode != 200 {
				t.Errorf("decompressed %d bytes, %v", len(plain), err)
			}
		})
	}
}

// TestWebSocketSurvivesRouteChange: an upgraded connection keeps echoing across a route
// table swap that removes its route, and new requests see the new table at once, on the
// same keep-alive connection.
func TestWebSocketSurvivesRouteChange(t *testing.T) {
	ws := startEchoFunc(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			io.WriteString(w, "plain")
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
	})
	wsRoute := fwd("ws", "/ws", "ws")
	wsRoute.Forward.Upgrades = map[string]bool{"websocket": true}
	cfg := &httpproxy.Config{Listener: "web", Manager: manager(), Table: table(wsRoute, fwd("plain", "/", "ws"))}
	p := startProxy(t, cfg, nil, cluster{Cluster: httpproxy.Cluster{Name: "ws"}, endpoints: []string{ws.addr}})

	t.Run("upgrade not enabled", func(t *testing.T) {
		req := newRequest(t, "GET", p.url("/other"), nil)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "websocket")
		resp, _ := do(t, noRedirect(), req)
		if resp.StatusCode != 403 {
			t.Errorf("status %d, want 403", resp.StatusCode)
		}
	})

	conn, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	say := func(msg string) {
		t.Helper()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(conn, "%s\n", msg)
		line, err := br.ReadString('\n')
		if err != nil || line != "echo "+msg+"\n" {
			t.Fatalf("echo of %q: %q, %v", msg, line, err)
		}
	}
	say("one")

	// A keep-alive client that will see the swap on its next request.
	c := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
	defer c.CloseIdleConnections()
	if resp, body := do(t, c, newRequest(t, "GET", p.url("/ws"), nil)); resp.StatusCode != 200 || body != "plain" {
		t.Fatalf("before the swap: %d %q", resp.StatusCode, body)
	}
	p.srv.Update(&httpproxy.Config{Listener: "web", Manager: manager(), Table: table(direct("new", httproute.Match{Prefix: "/"}, "new table"))})
	if resp, body := do(t, c, newRequest(t, "GET", p.url("/ws"), nil)); body != "new table" {
		t.Fatalf("after the swap: %d %q", resp.StatusCode, body)
	}
	say("two")
	// A change of connection-level settings starts a new net/http server; the upgraded
	// connection keeps going.
	m := manager()
	m.IdleTimeout = time.Minute
	p.srv.Update(&httpproxy.Config{Listener: "web", Manager: m, Table: table(direct("new", httproute.Match{Prefix: "/"}, "newer"))})
	say("three")
	if _, body := do(t, noRedirect(), newRequest(t, "GET", p.url("/"), nil)); body != "newer" {
		t.Fatalf("after the settings change: %q", body)
	}
}

func TestStreamIdleTimeout(t *testing.T) {
	ws := startEchoFunc(t, func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		io.Copy(io.Discard, brw)
	})
	route := fwd("ws", "/", "ws")
	route.Forward.Upgrades = map[string]bool{"websocket": true}
	route.Forward.IdleTimeout, route.Forward.IdleTimeoutSet = 200*time.Millisecond, true
	p := startProxy(t, &httpproxy.Config{Listener: "web", Manager: manager(), Table: table(route)}, nil,
		cluster{Cluster: httpproxy.Cluster{Name: "ws"}, endpoints: []string{ws.addr}})
	conn, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	br := bufio.NewReader(conn)
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	if !closedWithin(conn, 5*time.Second) {
		t.Fatal("idle upgraded stream still open after 5s")
	}
}

func TestMoreForwarding(t *testing.T) {
	a, b := startEcho(t, "a"), startEcho(t, "b")
	weighted := &httproute.Route{Name: "w", Match: httproute.Match{Prefix: "/w"}, Forward: &httproute.Forward{
		Clusters:    []httproute.WeightedCluster{{Name: "a", Weight: 0}, {Name: "b", Weight: 100}},
		TotalWeight: 100, Timeout: 15 * time.Second,
	}}
	m := manager()
	m.RequestTimeout = 300 * time.Millisecond
	p := startProxy(t, &httpproxy.Config{Listener: "web", Manager: m, Table: table(weighted, fwd("a", "/", "a"))}, nil,
		cluster{Cluster: httpproxy.Cluster{Name: "a"}, endpoints: []string{addrOf(a)}},
		cluster{Cluster: httpproxy.Cluster{Name: "b"}, endpoints: []string{addrOf(b)}})
	t.Run("weighted clusters", func(t *testing.T) {
		for range 10 {
			if _, body := do(t, noRedirect(), newRequest(t, "GET", p.url("/w"), nil)); !strings.Contains(body, `"Backend":"b"`) {
				t.Fatalf("weight 0 cluster got a request: %s", body)
			}
		}
	})
	t.Run("h2c upgrade request is served as HTTP/1.1", func(t *testing.T) {
		req := newRequest(t, "GET", p.url("/x"), nil)
		req.Header.Set("Connection", "Upgrade, HTTP2-Settings")
		req.Header.Set("Upgrade", "h2c")
		req.Header.Set("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")
		resp, body := do(t, noRedirect(), req)
		if resp.StatusCode != 200 || strings.Contains(body, "Http2-Settings") || strings.Contains(body, `"Upgrade"`) {
			t.Errorf("got %d %s", resp.StatusCode, body)
		}
	})
	t.Run("request timeout", func(t *testing.T) {
		conn, err := net.Dial("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly part of it")
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil || resp.StatusCode != 408 {
			t.Fatalf("got %v %v, want 408", resp, err)
		}
	})
}

// TestGzipStreaming: a streamed response is compressed and flushed as the upstream
// flushes, not held until it ends.
func TestGzipStreaming(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	done := func() { once.Do(func() { close(release) }) }
	t.Cleanup(done)
	be := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "first line\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
		io.WriteString(w, "second line\n")
	}))
	m := manager()
	m.Compression = &httproute.Compression{}
	p := startProxy(t, &httpproxy.Config{Listener: "web", Manager: m, Table: table(fwd("r", "/", "be"))}, nil,
		cluster{Cluster: httpproxy.Cluster{Name: "be"}, endpoints: []string{be.addr}})
	req := newRequest(t, "GET", p.url("/"), nil)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := noRedirect().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("Content-Encoding = %q", resp.Header.Get("Content-Encoding"))
	}
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(zr)
	if line, err := br.ReadString('\n'); err != nil || line != "first line\n" {
		t.Fatalf("first line before the upstream finished: %q, %v", line, err)
	}
	done()
	if rest, err := io.ReadAll(br); err != nil || string(rest) != "second line\n" {
		t.Fatalf("rest: %q, %v", rest, err)
	}
}

// TestShutdown: Shutdown closes idle keep-alive connections at once and waits for requests
// in flight until its deadline; Close then closes what is left.
func TestShutdown(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	stalled := make(chan struct{}, 1)
	be := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stall" {
			stalled <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		io.WriteString(w, "ok")
	}))
	p := startProxy(t, &httpproxy.Config{Listener: "web", Manager: manager(), Table: table(fwd("r", "/", "be"))}, nil,
		cluster{Cluster: httpproxy.Cluster{Name: "be"}, endpoints: []string{be.addr}})

	idle, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	ibr := bufio.NewReader(idle)
	fmt.Fprintf(idle, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, err := http.ReadResponse(ibr, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("keep-alive request: %v %v", resp, err)
	} else {
		io.Copy(io.Discard, resp.Body)
	}
	busy, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	fmt.Fprintf(busy, "GET /stall HTTP/1.1\r\nHost: x\r\n\r\n")
	select {
	case <-stalled:
	case <-time.After(5 * time.Second):
		t.Fatal("the stalled request did not reach the backend")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := p.srv.Shutdown(ctx); err == nil {
		t.Error("Shutdown returned nil with a request in flight")
	}
	idle.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := ibr.ReadByte(); err == nil || strings.Contains(err.Error(), "timeout") {
		t.Errorf("idle connection after Shutdown: %v, want closed", err)
	}
	p.srv.Close()
	if !closedWithin(busy, 5*time.Second) {
		t.Error("connection with a request in flight still open after Close")
	}
}

// TestExpectContinue: a client that waits for 100 Continue before its body (curl does for
// bodies over 1 KiB) gets it, and the body reaches the upstream.
func TestExpectContinue(t *testing.T) {
	be := startEcho(t, "be")
	p := startProxy(t, &httpproxy.Config{Listener: "web", Manager: manager(), Table: table(fwd("r", "/", "be"))}, nil,
		cluster{Cluster: httpproxy.Cluster{Name: "be"}, endpoints: []string{addrOf(be)}})
	conn, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\nExpect: 100-continue\r\n\r\n")
	br := bufio.NewReader(conn)
	first, err := http.ReadResponse(br, nil)
	if err != nil || first.StatusCode != 100 {
		t.Fatalf("first response %v, %v; want 100 Continue", first, err)
	}
	io.WriteString(conn, "payload")
	// Skip the rest of the 100 response, and any further 1xx.
	var resp *http.Response
	for {
		resp, err = http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode >= 200 {
			break
		}
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"Body":"payload"`) {
		t.Errorf("got %d %s", resp.StatusCode, b)
	}
}

// TestStreamIdleResponse: a response that stops moving for the route's idle timeout is
// reset, its headers long sent.
func TestStreamIdleResponse(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	be := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	route := fwd("r", "/", "be")
	route.Forward.IdleTimeout, route.Forward.IdleTimeoutSet = 200*time.Millisecond, true
	p := startProxy(t, &httpproxy.Config{Listener: "web", Manager: manager(), Table: table(route)}, nil,
		cluster{Cluster: httpproxy.Cluster{Name: "be"}, endpoints: []string{be.addr}})
	resp, err := noRedirect().Get(p.url("/"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); err != nil || line != "first\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	start := time.Now()
	if _, err := io.ReadAll(br); err == nil {
		t.Error("idle response ended cleanly, want a reset")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("reset after %v, want within about 2 × 200ms", d)
	}
}
