package httpproxy_test

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-proxy/flotilla/agent/accesslog"
	"github.com/flotilla-proxy/flotilla/agent/httpproxy"
	"github.com/flotilla-proxy/flotilla/agent/httproute"
	"github.com/flotilla-proxy/flotilla/agent/upstream"
)

// proxy is an httpproxy.Server behind a real TCP listener on 127.0.0.1, with its own
// upstream registry, as package proxy runs it.
type proxy struct {
	t    testing.TB
	srv  *httpproxy.Server
	reg  *upstream.Registry
	ups  *httpproxy.Upstreams
	ln   net.Listener
	addr string
	wg   sync.WaitGroup
}

// startProxy serves cfg on a fresh listener; tlsCfg, when not nil, terminates TLS first.
func startProxy(t testing.TB, cfg *httpproxy.Config, tlsCfg *tls.Config, clusters ...cluster) *proxy {
	t.Helper()
	return startProxyMetrics(t, cfg, tlsCfg, nil, clusters...)
}

// startProxyMetrics is startProxy with the metrics given.
func startProxyMetrics(t testing.TB, cfg *httpproxy.Config, tlsCfg *tls.Config, m *httpproxy.Metrics, clusters ...cluster) *proxy {
	t.Helper()
	reg := upstream.NewRegistry(nil, nil)
	ups := httpproxy.NewUpstreams(reg, m)
	p := &proxy{t: t, reg: reg, ups: ups}
	p.setClusters(clusters...)
	p.srv = httpproxy.New(cfg, httpproxy.Options{Upstreams: ups, Metrics: m})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.ln, p.addr = ln, ln.Addr().String()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				info := httpproxy.ConnInfo{
					Client: c.RemoteAddr().(*net.TCPAddr).AddrPort(),
					Server: c.LocalAddr().(*net.TCPAddr).AddrPort(),
				}
				if tlsCfg != nil {
					tc := tls.Server(c, tlsCfg)
					if err := tc.Handshake(); err != nil {
						c.Close()
						return
					}
					info.TLS = true
					c = tc
				}
				p.srv.ServeConn(c, info)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		p.srv.Close()
		p.wg.Wait()
		ups.Close()
		reg.Close()
	})
	return p
}

// cluster is a test cluster: its HTTP settings and endpoints.
type cluster struct {
	httpproxy.Cluster
	endpoints []string
	retry     *httproute.RetryPolicy
}

func (p *proxy) setClusters(cs ...cluster) {
	var cfgs []upstream.ClusterConfig
	var hcs []httpproxy.Cluster
	for _, c := range cs {
		cfg := upstream.ClusterConfig{Name: c.Name}
		for _, e := range c.endpoints {
			cfg.Endpoints = append(cfg.Endpoints, upstream.Endpoint{Addr: netip.MustParseAddrPort(e)})
		}
		cfgs = append(cfgs, cfg)
		hcs = append(hcs, c.Cluster)
	}
	p.reg.Update(cfgs)
	p.ups.Update(hcs)
}

func (p *proxy) url(path string) string { return "http://" + p.addr + path }

// manager returns an http_connection_manager with the compiler's defaults.
func manager() *httproute.Manager {
	return &httproute.Manager{
		StatPrefix:             "web",
		UseRemoteAddress:       true,
		IdleTimeout:            time.Hour,
		RequestHeadersTimeout:  10 * time.Second,
		StreamIdleTimeout:      5 * time.Minute,
		MaxRequestHeadersBytes: 60 << 10,
		Upgrades:               map[string]bool{},
	}
}

// table returns a route table of one virtual host for every domain with routes.
func table(routes ...*httproute.Route) *httproute.Table {
	t := &httproute.Table{Name: "web", VirtualHosts: []*httproute.VirtualHost{{Name: "all", Domains: []string{"*"}, Routes: routes}}}
	t.Index() // as package runtime does
	return t
}

// fwd returns a route sending prefix to cluster.
func fwd(name, prefix, cluster string) *httproute.Route {
	return &httproute.Route{
		Name:    name,
		Match:   httproute.Match{Prefix: prefix},
		Forward: &httproute.Forward{Clusters: []httproute.WeightedCluster{{Name: cluster, Weight: 1}}, TotalWeight: 1, Timeout: 15 * time.Second},
	}
}

// direct returns a route answering path prefix with body.
func direct(name string, m httproute.Match, body string) *httproute.Route {
	return &httproute.Route{Name: name, Match: m, Direct: &httproute.Direct{Status: 200, Body: []byte(body)}}
}

func format(t testing.TB, s string) *accesslog.Format {
	t.Helper()
	f, err := accesslog.ParseEnvoyFormat(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// echoed is what the echo backend reports about a request.
type echoed struct {
	Backend, Method, Host, Path, Proto string
	Header                             http.Header
	Body                               string
}

// startEcho starts an HTTP/1.1 backend answering every request with an echoed as JSON.
func startEcho(t testing.TB, name string) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(echoHandler(name))
	t.Cleanup(s.Close)
	return s
}

func echoHandler(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Backend", name)
		w.Header().Set("X-Remove-Me", "1")
		json.NewEncoder(w).Encode(echoed{Backend: name, Method: r.Method, Host: r.Host, Path: r.URL.RequestURI(), Proto: r.Proto, Header: r.Header, Body: string(b)})
	})
}

func addrOf(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "http://") }

// get sends a request through client and decodes the echo, failing the test on errors.
func do(t testing.TB, c *http.Client, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", req.Method, req.URL, err)
	}
	return resp, string(b)
}

func newRequest(t testing.TB, method, url string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// noRedirect is a client that does not follow redirects.
func noRedirect() *http.Client {
	return &http.Client{
		Transport:     &http.Transport{DisableCompression: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       10 * time.Second,
	}
}

// deadAddr returns an address on which nothing listens.
func deadAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// closedWithin reports whether the peer closes c within d (reading nothing else).
func closedWithin(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 4096)
	for {
		_, err := c.Read(buf)
		if err != nil {
			var ne net.Error
			return !(errors.As(err, &ne) && ne.Timeout())
		}
	}
}

// httptestServer is a backend on 127.0.0.1 serving HTTP/1.1 (and h2c when h2c is set).
type httptestServer struct {
	addr string
	srv  *http.Server
}

// startBackend serves h on a fresh loopback listener, HTTP/1.1 and h2c.
func startBackend(t testing.TB, h http.Handler) *httptestServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	s := &http.Server{Handler: h, Protocols: &protos}
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	return &httptestServer{addr: ln.Addr().String(), srv: s}
}
