package proxy_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/flotilla-proxy/flotilla/agent/proxy"
	"github.com/flotilla-proxy/flotilla/agent/proxyproto"
	"github.com/flotilla-proxy/flotilla/agent/runtime"
	"github.com/flotilla-proxy/flotilla/agent/runtime/runtimetest"
)

// tlsGraph builds a graph with SDS secrets or fails the test.
func tlsGraph(t testing.TB, ls []*listenerv3.Listener, cs []*clusterv3.Cluster, secrets ...*tlsv3.Secret) *runtime.Graph {
	t.Helper()
	r := &runtime.Resources{
		Listeners: map[string]*listenerv3.Listener{},
		Clusters:  map[string]*clusterv3.Cluster{},
		Secrets:   map[string]*tlsv3.Secret{},
	}
	for _, l := range ls {
		r.Listeners[l.GetName()] = l
	}
	for _, c := range cs {
		r.Clusters[c.GetName()] = c
	}
	for _, s := range secrets {
		r.Secrets[s.GetName()] = s
	}
	g, err := runtime.Build(r)
	if err != nil {
		t.Fatalf("runtime.Build: %v", err)
	}
	return g
}

// terminating returns a listener on 127.0.0.1:0 to cluster whose chain terminates TLS with
// ctx, logging JSON lines to logPath when it is not "".
func terminating(t testing.TB, name, cluster string, ctx *tlsv3.DownstreamTlsContext, logPath string) *listenerv3.Listener {
	tp := runtimetest.TCPProxy(cluster)
	if logPath != "" {
		tp.AccessLog = []*accesslogv3.AccessLog{jsonLog(t, logPath)}
	}
	l := runtimetest.ListenerTCP(name, "127.0.0.1", 0, tp)
	l.FilterChains[0].TransportSocket = runtimetest.TLSSocket(ctx)
	return l
}

// secretOf issues a server certificate for names and returns it as an SDS secret, with its
// key PEM.
func secretOf(ca *runtimetest.CA, names ...string) (*tlsv3.Secret, []byte) {
	c, k := ca.Issue(names[0], false, names...)
	return runtimetest.CertSecret(c, k), k
}

// tlsDial makes a verified TLS connection to the listener with the given SNI, roots and
// client certificates.
func tlsDial(t testing.TB, m *proxy.Manager, listener, sni string, roots *x509.CertPool, certs ...tls.Certificate) (*tls.Conn, error) {
	t.Helper()
	raw := dialListener(t, m, listener)
	tc := tls.Client(raw, &tls.Config{ServerName: sni, RootCAs: roots, Certificates: certs})
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	defer tc.SetDeadline(time.Time{})
	return tc, tc.Handshake()
}

// noKeyIn fails the test if text holds any of the PEM keys (or any PEM private key).
func noKeyIn(t testing.TB, what, text string, keys ...[]byte) {
	t.Helper()
	if strings.Contains(text, "PRIVATE KEY") {
		t.Errorf("%s contains a PEM private key", what)
	}
	for _, k := range keys {
		body := strings.Split(string(k), "\n")[1] // a line of the key's base64
		if strings.Contains(text, body) {
			t.Errorf("%s contains key material", what)
		}
	}
}

func TestTLSTermination(t *testing.T) {
	ca := runtimetest.NewCA("server ca")
	secA, keyA := secretOf(ca, "a.example")
	secB, keyB := secretOf(ca, "b.example", "*.b.example")
	logPath := filepath.Join(t.TempDir(), "tls.log")
	var logs syncBuffer
	m, reg := newManager(t, proxy.Options{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	b := startBackend(t, echo)
	apply(t, m, tlsGraph(t,
		[]*listenerv3.Listener{terminating(t, "tls", "db", runtimetest.DownstreamTLSContext(nil, secA.GetName(), secB.GetName()), logPath)},
		[]*clusterv3.Cluster{cluster("db", b.addr)}, secA, secB))

	tests := []struct {
		sni, wantCN string
	}{
		{"a.example", "a.example"},
		{"b.example", "b.example"},
		{"x.b.example", "b.example"},
	}
	for _, tt := range tests {
		t.Run("certificate for "+tt.sni, func(t *testing.T) {
			tc, err := tlsDial(t, m, "tls", tt.sni, ca.Pool())
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			if cn := tc.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != tt.wantCN {
				t.Errorf("certificate CN = %q, want %q", cn, tt.wantCN)
			}
			roundTrip(t, tc, "plaintext through TLS "+tt.sni)
			// Half-close: the client's close_notify reaches the backend as EOF, whose FIN
			// comes back as EOF.
			if err := tc.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			tc.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := tc.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Errorf("after CloseWrite: read %d, %v; want EOF", n, err)
			}
			tc.Close()
		})
	}
	// A connection's line is written after its client saw EOF, so the next connection's
	// line may come first: find each by its SNI.
	bySNI := map[any]map[string]any{}
	for _, line := range logLines(t, logPath, len(tests)) {
		bySNI[line["ssl_preread_server_name"]] = line
	}
	for _, tt := range tests {
		line, ok := bySNI[tt.sni]
		if !ok {
			t.Errorf("no access log line with ssl_preread_server_name %q", tt.sni)
			continue
		}
		wantFields(t, line, map[string]any{"status": 200.0, "ssl_preread_server_name": tt.sni, "listener": "tls"})
	}
	if got := metric(t, reg, "flotilla_agent_ssl_handshake", "tls"); got != float64(len(tests)) {
		t.Errorf("ssl_handshake = %v, want %d", got, len(tests))
	}

	t.Run("handshake error", func(t *testing.T) {
		// The client does not trust the certificate and aborts with an alert.
		if _, err := tlsDial(t, m, "tls", "a.example", runtimetest.NewCA("other").Pool()); err == nil {
			t.Fatal("handshake with an untrusted certificate succeeded")
		}
		waitFor(t, 5*time.Second, "ssl_handshake_error", func() bool {
			return metric(t, reg, "flotilla_agent_ssl_handshake_error", "tls") == 1
		})
		lines := logLines(t, logPath, len(tests)+1)
		wantFields(t, lines[len(tests)], map[string]any{"status": 400.0, "ssl_preread_server_name": "a.example", "upstream_addr": nil})

		// Not TLS at all.
		c := dialListener(t, m, "tls")
		c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
		if !closedByPeer(c, 5*time.Second) {
			t.Error("a plaintext client was not closed")
		}
		waitFor(t, 5*time.Second, "ssl_handshake_error", func() bool {
			return metric(t, reg, "flotilla_agent_ssl_handshake_error", "tls") == 2
		})
	})
	t.Run("TLS error after the handshake", func(t *testing.T) {
		raw := dialListener(t, m, "tls")
		tc := tls.Client(raw, &tls.Config{ServerName: "a.example", RootCAs: ca.Pool()})
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		roundTrip(t, tc, "fine so far")
		// An application_data record that does not decrypt.
		raw.Write(append([]byte{23, 3, 3, 0, 32}, bytes.Repeat([]byte{0xAA}, 32)...))
		// The agent answers with an alert and closes.
		raw.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.Copy(io.Discard, raw); err != nil {
			t.Fatalf("a connection with a bad record was not closed: %v", err)
		}
		waitFor(t, 5*time.Second, "ssl_connection_error", func() bool {
			return metric(t, reg, "flotilla_agent_ssl_connection_error", "tls") == 1
		})
	})
	noKeyIn(t, "the manager's log", logs.String(), keyA, keyB)
	b2, _ := os.ReadFile(logPath)
	noKeyIn(t, "the access log", string(b2), keyA, keyB)
}

// TestTLSHandshakeTimeout: a client that connects to a terminating listener and never
// speaks is closed at the listener's handshake timeout and counted.
func TestTLSHandshakeTimeout(t *testing.T) {
	ca := runtimetest.NewCA("server ca")
	sec, _ := secretOf(ca, "a.example")
	m, reg := newManager(t, proxy.Options{})
	l := terminating(t, "tls", "db", runtimetest.DownstreamTLSContext(nil, sec.GetName()), "")
	l.ListenerFiltersTimeout = durationpb.New(200 * time.Millisecond)
	apply(t, m, tlsGraph(t, []*listenerv3.Listener{l}, []*clusterv3.Cluster{cluster("db", startBackend(t, echo).addr)}, sec))
	c := dialListener(t, m, "tls")
	if !closedByPeer(c, 5*time.Second) {
		t.Fatal("a silent client was not closed")
	}
	// crypto/tls closes the socket at the deadline before HandshakeContext returns and the
	// failure is counted: poll.
	waitFor(t, 5*time.Second, "ssl_handshake_error = 1", func() bool {
		return metric(t, reg, "flotilla_agent_ssl_handshake_error", "tls") == 1
	})
}

// greeter writes a greeting and closes.
func greeter(c *net.TCPConn) {
	io.WriteString(c, "hello from backend\n")
	c.Close()
}

func TestMTLS(t *testing.T) {
	ca := runtimetest.NewCA("server ca")
	clientCA := runtimetest.NewCA("client ca")
	sec, _ := secretOf(ca, "a.example")
	m, reg := newManager(t, proxy.Options{})
	apply(t, m, tlsGraph(t,
		[]*listenerv3.Listener{terminating(t, "mtls", "greet", runtimetest.DownstreamTLSContext(clientCA.PEM, sec.GetName()), "")},
		[]*clusterv3.Cluster{cluster("greet", startBackend(t, greeter).addr)}, sec))

	readGreeting := func(tc *tls.Conn) (string, error) {
		tc.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, err := io.ReadAll(tc)
		return string(b), err
	}
	tests := []struct {
		name  string
		certs []tls.Certificate
		ok    bool
	}{
		{"client certificate from the client CA", []tls.Certificate{clientCA.KeyPair("agent-1", true)}, true},
		{"no client certificate", nil, false},
		{"client certificate from another CA", []tls.Certificate{runtimetest.NewCA("rogue").KeyPair("agent-1", true)}, false},
	}
	refused := 0
	for _, tt := range tests {
		t.Run("Go "+tt.name, func(t *testing.T) {
			// With TLS 1.3 the server checks the client's certificate after the client
			// considers the handshake done: the refusal shows on the first read.
			tc, err := tlsDial(t, m, "mtls", "a.example", ca.Pool(), tt.certs...)
			var got string
			if err == nil {
				got, err = readGreeting(tc)
			}
			if tt.ok {
				if err != nil || got != "hello from backend\n" {
					t.Fatalf("got %q, %v; want the greeting", got, err)
				}
				return
			}
			refused++
			if got != "" {
				t.Fatalf("refused client got %q", got)
			}
			waitFor(t, 5*time.Second, "ssl_handshake_error", func() bool {
				return metric(t, reg, "flotilla_agent_ssl_handshake_error", "mtls") == float64(refused)
			})
		})
	}

	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Log("openssl is not installed: skipping the s_client cases")
		return
	}
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caFile := write("ca.pem", ca.PEM)
	cc, ck := clientCA.Issue("agent-1", true)
	certFile, keyFile := write("client.pem", cc), write("client-key.pem", ck)
	for _, tt := range []struct {
		name string
		args []string
		ok   bool
	}{
		{"with a client certificate", []string{"-cert", certFile, "-key", keyFile}, true},
		{"without a client certificate", nil, false},
	} {
		t.Run("openssl s_client "+tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			before := metric(t, reg, "flotilla_agent_ssl_handshake_error", "mtls")
			args := append([]string{"s_client", "-connect", m.Addr("mtls").String(), "-servername", "a.example",
				"-CAfile", caFile, "-verify_return_error", "-ign_eof"}, tt.args...)
			cmd := exec.CommandContext(ctx, openssl, args...)
			cmd.Stdin = strings.NewReader("")
			out, _ := cmd.CombinedOutput()
			if got := strings.Contains(string(out), "hello from backend"); got != tt.ok {
				t.Fatalf("greeting received = %v, want %v; openssl output:\n%s", got, tt.ok, out)
			}
			if !tt.ok {
				waitFor(t, 5*time.Second, "ssl_handshake_error", func() bool {
					return metric(t, reg, "flotilla_agent_ssl_handshake_error", "mtls") == before+1
				})
			}
		})
	}
}

// tlsBackendRec is a TLS echo backend that records the SNI and PROXY headers it got.
type tlsBackendRec struct {
	*backend
	mu      sync.Mutex
	snis    []string
	headers []*proxyproto.Header
}

// header returns the i-th PROXY header received, or nil.
func (b *tlsBackendRec) header(i int) *proxyproto.Header {
	b.mu.Lock()
	defer b.mu.Unlock()
	if i < len(b.headers) {
		return b.headers[i]
	}
	return nil
}

func (b *tlsBackendRec) sni(i int) (string, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if i < len(b.snis) {
		return b.snis[i], true
	}
	return "", false
}

// startTLSEcho starts a TLS echo backend with cert, reading a PROXY header first when
// proxyProtocol is set, requiring a client certificate from clientCA when not nil.
func startTLSEcho(t testing.TB, cert tls.Certificate, proxyProtocol bool, clientCA *x509.CertPool) *tlsBackendRec {
	t.Helper()
	tb := &tlsBackendRec{}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}
	if clientCA != nil {
		cfg.ClientCAs, cfg.ClientAuth = clientCA, tls.RequireAndVerifyClientCert
	}
	tb.backend = startBackend(t, func(c *net.TCPConn) {
		var conn net.Conn = c
		if proxyProtocol {
			h, rest, err := readProxyHeader(c)
			if err != nil {
				return
			}
			tb.mu.Lock()
			tb.headers = append(tb.headers, h)
			tb.mu.Unlock()
			conn = &prefixConn{Conn: c, pre: rest}
		}
		s := tls.Server(conn, cfg)
		s.SetDeadline(time.Now().Add(5 * time.Second))
		if s.Handshake() != nil {
			return
		}
		tb.mu.Lock()
		tb.snis = append(tb.snis, s.ConnectionState().ServerName)
		tb.mu.Unlock()
		s.SetDeadline(time.Time{})
		io.Copy(s, s)
		s.CloseWrite()
	})
	return tb
}

// tlsCluster returns a STATIC cluster to addr whose transport socket is ts.
func tlsCluster(name, addr string, ts func(*clusterv3.Cluster)) *clusterv3.Cluster {
	c := cluster(name, addr)
	ts(c)
	return c
}

func TestTLSOrigination(t *testing.T) {
	upCA := runtimetest.NewCA("upstream ca")
	downCA := runtimetest.NewCA("server ca")
	proxyCA := runtimetest.NewCA("proxy client ca")
	front, _ := secretOf(downCA, "db.example", "*.db.example")
	cc, ck := proxyCA.Issue("flotilla", true)
	clientSec := runtimetest.CertSecret(cc, ck)

	fixed := startTLSEcho(t, upCA.KeyPair("db.internal", false, "db.internal"), false, nil)
	passed := startTLSEcho(t, upCA.KeyPair("any", false, "*.db.example"), false, nil)
	withPP := startTLSEcho(t, upCA.KeyPair("db.internal", false, "db.internal"), true, proxyCA.Pool())
	wrongCA := startTLSEcho(t, runtimetest.NewCA("rogue").KeyPair("db.internal", false, "db.internal"), false, nil)

	logPath := filepath.Join(t.TempDir(), "up.log")
	m, reg := newManager(t, proxy.Options{})
	upTLS := func(u *tlsv3.UpstreamTlsContext) func(*clusterv3.Cluster) {
		return func(c *clusterv3.Cluster) { c.TransportSocket = runtimetest.TLSSocket(u) }
	}
	plain := func(name, cluster string) *listenerv3.Listener {
		return tcpListener(name, 0, cluster, func(tp *tcpproxyv3.TcpProxy) {
			tp.AccessLog = []*accesslogv3.AccessLog{jsonLog(t, logPath)}
		})
	}
	// "sni" terminates TLS and passes the client's SNI upstream; "inspect" does the same
	// but routes on the peeked ClientHello first.
	sni := terminating(t, "sni", "passed", runtimetest.DownstreamTLSContext(nil, front.GetName()), "")
	inspect := terminating(t, "inspect", "passed", runtimetest.DownstreamTLSContext(nil, front.GetName()), "")
	inspect.ListenerFilters = []*listenerv3.ListenerFilter{runtimetest.TLSInspectorFilter()}
	inspect.FilterChains[0].FilterChainMatch = &listenerv3.FilterChainMatch{ServerNames: []string{"*.db.example"}}
	apply(t, m, tlsGraph(t,
		[]*listenerv3.Listener{plain("fixed", "fixed"), plain("pp", "pp"), plain("wrong", "wrong"), sni, inspect},
		[]*clusterv3.Cluster{
			tlsCluster("fixed", fixed.addr, upTLS(runtimetest.UpstreamTLSContext("db.internal", upCA.PEM, "", ""))),
			tlsCluster("passed", passed.addr, upTLS(runtimetest.UpstreamTLSContext("", upCA.PEM, "", ""))),
			tlsCluster("pp", withPP.addr, func(c *clusterv3.Cluster) {
				c.TransportSocket = runtimetest.UpstreamProxyProtocolTLS(2, runtimetest.UpstreamTLSContext("db.internal", upCA.PEM, "", clientSec.GetName()))
			}),
			tlsCluster("wrong", wrongCA.addr, upTLS(runtimetest.UpstreamTLSContext("db.internal", upCA.PEM, "", ""))),
		}, front, clientSec))

	t.Run("fixed SNI, verified by the CA", func(t *testing.T) {
		c := dialListener(t, m, "fixed")
		roundTrip(t, c, "select 1")
		if got, _ := fixed.sni(0); got != "db.internal" {
			t.Errorf("backend got SNI %q, want db.internal", got)
		}
	})
	for i, l := range []string{"sni", "inspect"} {
		t.Run("client SNI passed through ("+l+")", func(t *testing.T) {
			tc, err := tlsDial(t, m, l, "pg.db.example", downCA.Pool())
			if err != nil {
				t.Fatal(err)
			}
			roundTrip(t, tc, "through two TLS connections")
			if got, _ := passed.sni(i); got != "pg.db.example" {
				t.Errorf("backend got SNI %q, want the client's pg.db.example", got)
			}
		})
	}
	t.Run("PROXY v2 then TLS with a client certificate", func(t *testing.T) {
		c := dialListener(t, m, "pp")
		roundTrip(t, c, "behind a PROXY header")
		waitFor(t, 5*time.Second, "PROXY header", func() bool {
			withPP.mu.Lock()
			defer withPP.mu.Unlock()
			return len(withPP.headers) == 1
		})
		withPP.mu.Lock()
		h := withPP.headers[0]
		withPP.mu.Unlock()
		if h.Version != 2 || h.Src.String() != c.LocalAddr().String() {
			t.Errorf("PROXY header %+v, want v2 from %s", h, c.LocalAddr())
		}
		if got, _ := withPP.sni(0); got != "db.internal" {
			t.Errorf("backend got SNI %q", got)
		}
	})
	t.Run("wrong CA", func(t *testing.T) {
		c := dialListener(t, m, "wrong")
		if !closedByPeer(c, 5*time.Second) {
			t.Fatal("connection to an unverified upstream stayed open")
		}
		waitFor(t, 5*time.Second, "upstream_ssl_handshake_error", func() bool {
			return metric(t, reg, "flotilla_agent_upstream_ssl_handshake_error", "wrong") == 1
		})
		if got := metric(t, reg, "flotilla_agent_upstream_cx_connect_fail", "wrong"); got != 1 {
			t.Errorf("upstream_cx_connect_fail = %v, want 1", got)
		}
		// fixed, pp and wrong have logged, in the order their connections ended.
		var line map[string]any
		for _, l := range logLines(t, logPath, 3) {
			if l["listener"] == "wrong" {
				line = l
			}
		}
		wantFields(t, line, map[string]any{"status": 502.0, "cluster": "wrong", "upstream_addr": wrongCA.addr})
	})
}

// TestCertificateRotation: a new LDS naming a new secret serves the new certificate to new
// connections while a connection terminated with the old one stays open and keeps working.
func TestCertificateRotation(t *testing.T) {
	ca := runtimetest.NewCA("server ca")
	old, _ := secretOf(ca, "a.example")
	rotated, _ := secretOf(ca, "a.example")
	m, _ := newManager(t, proxy.Options{})
	b := startBackend(t, echo)
	l := terminating(t, "tls", "db", runtimetest.DownstreamTLSContext(nil, old.GetName()), "")
	apply(t, m, tlsGraph(t, []*listenerv3.Listener{l}, []*clusterv3.Cluster{cluster("db", b.addr)}, old))

	serial := func(tc *tls.Conn) string { return tc.ConnectionState().PeerCertificates[0].SerialNumber.String() }
	before, err := tlsDial(t, m, "tls", "a.example", ca.Pool())
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, before, "before")

	l2 := terminating(t, "tls", "db", runtimetest.DownstreamTLSContext(nil, rotated.GetName()), "")
	apply(t, m, tlsGraph(t, []*listenerv3.Listener{l2}, []*clusterv3.Cluster{cluster("db", b.addr)}, rotated))

	after, err := tlsDial(t, m, "tls", "a.example", ca.Pool())
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, after, "after")
	if serial(after) == serial(before) {
		t.Error("a new connection still gets the old certificate")
	}
	roundTrip(t, before, "the old connection still works")
}

// TestTLSTerminationAfterProxyHeader: a listener that reads a PROXY header and terminates TLS
// replays whatever it read past the header into the handshake, and logs the PROXY source.
func TestTLSTerminationAfterProxyHeader(t *testing.T) {
	ca := runtimetest.NewCA("server ca")
	sec, _ := secretOf(ca, "a.example")
	logPath := filepath.Join(t.TempDir(), "pp.log")
	m, _ := newManager(t, proxy.Options{})
	l := terminating(t, "pp-tls", "db", runtimetest.DownstreamTLSContext(nil, sec.GetName()), logPath)
	l.ListenerFilters = []*listenerv3.ListenerFilter{runtimetest.ProxyProtocolFilter()}
	apply(t, m, tlsGraph(t, []*listenerv3.Listener{l}, []*clusterv3.Cluster{cluster("db", startBackend(t, echo).addr)}, sec))

	for _, split := range []bool{false, true} {
		raw := dialListener(t, m, "pp-tls")
		hdr := "PROXY TCP4 198.51.100.7 192.0.2.1 40000 5433\r\n"
		if split {
			raw.Write([]byte(hdr))
		}
		// Unsplit, the header and the ClientHello arrive in one segment.
		tc := tls.Client(&prefixWriteConn{TCPConn: raw, pre: []byte(hdr), send: !split},
			&tls.Config{ServerName: "a.example", RootCAs: ca.Pool()})
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		if err := tc.Handshake(); err != nil {
			t.Fatalf("split=%v: handshake after a PROXY header: %v", split, err)
		}
		roundTrip(t, tc, "behind a load balancer")
		tc.Close()
	}
	for _, line := range logLines(t, logPath, 2) {
		wantFields(t, line, map[string]any{"status": 200.0, "remote_addr": "198.51.100.7", "ssl_preread_server_name": "a.example"})
	}
}

// prefixWriteConn sends pre in front of the first Write when send is set.
type prefixWriteConn struct {
	*net.TCPConn
	pre  []byte
	send bool
}

func (c *prefixWriteConn) Write(b []byte) (int, error) {
	if c.send {
		c.send = false
		if _, err := c.TCPConn.Write(append(c.pre, b...)); err != nil {
			return 0, err
		}
		return len(b), nil
	}
	return c.TCPConn.Write(b)
}
