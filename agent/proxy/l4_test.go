package proxy_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/flotilla-proxy/flotilla/agent/proxy"
	"github.com/flotilla-proxy/flotilla/agent/proxyproto"
	"github.com/flotilla-proxy/flotilla/agent/runtime"
	"github.com/flotilla-proxy/flotilla/agent/runtime/runtimetest"
)

// selfSigned returns a fresh self-signed ECDSA certificate for name.
func selfSigned(t testing.TB, name string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// tlsBackend is a Go TLS echo server with its own self-signed certificate, named so tests
// can tell by the certificate a client got which backend it reached (startTLSEcho).
type tlsBackend struct {
	*tlsBackendRec
	name string
	cert tls.Certificate
}

func startTLSBackend(t testing.TB, name string, proxyProtocol bool) *tlsBackend {
	t.Helper()
	cert := selfSigned(t, name)
	return &tlsBackend{tlsBackendRec: startTLSEcho(t, cert, proxyProtocol, nil), name: name, cert: cert}
}

// readProxyHeader reads a PROXY protocol header from c and returns it with the bytes read
// past it.
func readProxyHeader(c net.Conn) (*proxyproto.Header, []byte, error) {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	buf := make([]byte, 0, 1024)
	for {
		n, err := c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		h, hn, perr := proxyproto.Parse(buf)
		if perr == nil {
			return h, buf[hn:], nil
		}
		if !errors.Is(perr, proxyproto.ErrNeedMore) {
			return nil, nil, perr
		}
		if err != nil {
			return nil, nil, err
		}
	}
}

// prefixConn reads pre before the rest of Conn.
type prefixConn struct {
	net.Conn
	pre []byte
}

func (c *prefixConn) Read(b []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(b, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

// splitConn sends its first Write (the ClientHello) in parts writes, pausing between them so
// that they leave as separate TCP segments.
type splitConn struct {
	net.Conn
	parts int
	done  bool
}

func (c *splitConn) Write(b []byte) (int, error) {
	if c.done || c.parts < 2 {
		return c.Conn.Write(b)
	}
	c.done = true
	step := (len(b) + c.parts - 1) / c.parts
	n := 0
	for len(b) > 0 {
		k := min(step, len(b))
		m, err := c.Conn.Write(b[:k])
		n += m
		if err != nil {
			return n, err
		}
		b = b[k:]
		if len(b) > 0 {
			time.Sleep(30 * time.Millisecond) // a pause, so the next part is a new segment
		}
	}
	return n, nil
}

// tlsClient is a TLS connection through the agent with the given SNI and ALPN. It does not
// verify the certificate chain; tests check which backend's certificate they got.
func tlsClient(t testing.TB, addr, sni string, alpn []string, wrap func(net.Conn) net.Conn) (*tls.Conn, error) {
	t.Helper()
	raw := dial(t, addr)
	var c net.Conn = raw
	if wrap != nil {
		c = wrap(raw)
	}
	tc := tls.Client(c, &tls.Config{ServerName: sni, NextProtos: alpn, InsecureSkipVerify: true})
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	defer tc.SetDeadline(time.Time{})
	return tc, tc.Handshake()
}

// reached returns the backend whose certificate the TLS connection got, or "".
func reached(tc *tls.Conn, backends ...*tlsBackend) string {
	certs := tc.ConnectionState().PeerCertificates
	for _, b := range backends {
		if len(certs) > 0 && string(certs[0].Raw) == string(b.cert.Certificate[0]) {
			return b.name
		}
	}
	return ""
}

// chainMatch is a filter_chain_match.
type chainMatch = listenerv3.FilterChainMatch

// l4Listener returns a listener "edge" on 127.0.0.1:0 with the listener filters, timeout,
// chains and default chain (nil: none).
func l4Listener(filters []*listenerv3.ListenerFilter, timeout time.Duration, def *listenerv3.FilterChain, chains ...*listenerv3.FilterChain) *listenerv3.Listener {
	l := &listenerv3.Listener{
		Name:               "edge",
		Address:            runtimetest.SocketAddress("127.0.0.1", 0),
		ListenerFilters:    filters,
		FilterChains:       chains,
		DefaultFilterChain: def,
	}
	if timeout > 0 {
		l.ListenerFiltersTimeout = durationpb.New(timeout)
	}
	return l
}

func chain(name string, m *chainMatch, cluster string) *listenerv3.FilterChain {
	return runtimetest.FilterChain(name, m, runtimetest.TCPProxy(cluster))
}

func cidrs(ss ...string) []*corev3.CidrRange {
	var out []*corev3.CidrRange
	for _, s := range ss {
		out = append(out, runtimetest.CIDR(s))
	}
	return out
}

var inspector = []*listenerv3.ListenerFilter{runtimetest.TLSInspectorFilter()}

func TestSNIRouting(t *testing.T) {
	exact := startTLSBackend(t, "exact", false)
	wild := startTLSBackend(t, "wild", false)
	h2 := startTLSBackend(t, "h2", false)
	b := startTLSBackend(t, "b", false)
	def := startTLSBackend(t, "default", false)
	all := []*tlsBackend{exact, wild, h2, b, def}
	var clusters []*clusterv3.Cluster
	for _, be := range all {
		clusters = append(clusters, cluster(be.name, be.addr))
	}
	m, reg := newManager(t, proxy.Options{})
	apply(t, m, graph(t, []*listenerv3.Listener{l4Listener(inspector, 2*time.Second,
		chain("default", nil, "default"),
		chain("exact", &chainMatch{ServerNames: []string{"a.example"}, TransportProtocol: "tls"}, "exact"),
		chain("wild", &chainMatch{ServerNames: []string{"*.a.example"}, TransportProtocol: "tls"}, "wild"),
		chain("h2", &chainMatch{ServerNames: []string{"b.example"}, TransportProtocol: "tls", ApplicationProtocols: []string{"h2"}}, "h2"),
		chain("b", &chainMatch{ServerNames: []string{"b.example"}, TransportProtocol: "tls"}, "b"),
	)}, clusters...))
	addr := m.Addr("edge").String()

	tests := []struct {
		sni      string
		alpn     []string
		want     string
		wantALPN string
		split    int // write the ClientHello in this many parts
	}{
		{sni: "a.example", want: "exact"},
		{sni: "x.a.example", want: "wild"},
		{sni: "y.x.a.example", want: "wild"},
		{sni: "b.example", alpn: []string{"h2", "http/1.1"}, want: "h2", wantALPN: "h2"},
		{sni: "b.example", alpn: []string{"http/1.1"}, want: "b", wantALPN: "http/1.1"},
		{sni: "b.example", want: "b"},
		{sni: "c.example", want: "default"},
		{sni: "", want: "default"},
		// A ClientHello over 4 KiB (many ALPN values) arriving in 3 segments with pauses.
		{sni: "x.a.example", alpn: bigALPN(), want: "wild", wantALPN: "http/1.1", split: 3},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s %d alpn split %d", tt.sni, len(tt.alpn), tt.split), func(t *testing.T) {
			var wrap func(net.Conn) net.Conn
			if tt.split > 0 {
				wrap = func(c net.Conn) net.Conn { return &splitConn{Conn: c, parts: tt.split} }
			}
			tc, err := tlsClient(t, addr, tt.sni, tt.alpn, wrap)
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			if got := reached(tc, all...); got != tt.want {
				t.Fatalf("reached backend %q, want %q", got, tt.want)
			}
			if got := tc.ConnectionState().NegotiatedProtocol; got != tt.wantALPN {
				t.Errorf("ALPN = %q, want %q", got, tt.wantALPN)
			}
			roundTrip(t, tc, "through TLS")
		})
	}
	for _, name := range []string{"no_filter_chain_match", "tls_inspector_client_hello_error", "downstream_pre_cx_timeout"} {
		if got := metric(t, reg, "flotilla_agent_"+name, "edge"); got != 0 {
			t.Errorf("%s = %v, want 0", name, got)
		}
	}
}

// bigALPN returns ALPN protocols adding up to more than 4 KiB, http/1.1 last.
func bigALPN() []string {
	var out []string
	for i := range 20 {
		out = append(out, fmt.Sprintf("proto-%02d-%s", i, strings.Repeat("x", 230)))
	}
	return append(out, "http/1.1")
}

func TestSNIBadConnections(t *testing.T) {
	a := startTLSBackend(t, "a", false)
	raw := startBackend(t, echo)
	m, reg := newManager(t, proxy.Options{})
	apply(t, m, graph(t, []*listenerv3.Listener{l4Listener(inspector, 300*time.Millisecond, nil,
		chain("a", &chainMatch{ServerNames: []string{"a.example"}, TransportProtocol: "tls"}, "a"),
		chain("raw", &chainMatch{TransportProtocol: "raw_buffer"}, "raw"),
	)}, cluster("a", a.addr), cluster("raw", raw.addr)))
	addr := m.Addr("edge").String()

	// A good TLS connection stays up through everything below.
	good, err := tlsClient(t, addr, "a.example", nil, nil)
	if err != nil || reached(good, a) != "a" {
		t.Fatalf("good connection: %v, reached %q", err, reached(good, a))
	}

	t.Run("not TLS goes to the raw_buffer chain", func(t *testing.T) {
		roundTrip(t, dial(t, addr), "plain text")
	})
	t.Run("no chain matches", func(t *testing.T) {
		if _, err := tlsClient(t, addr, "z.example", nil, nil); err == nil {
			t.Fatal("handshake with an unknown SNI succeeded")
		}
		waitFor(t, 5*time.Second, "no_filter_chain_match", func() bool {
			return metric(t, reg, "flotilla_agent_no_filter_chain_match", "edge") == 1
		})
	})
	t.Run("malformed ClientHello", func(t *testing.T) {
		c := dial(t, addr)
		// A handshake record holding a ServerHello (type 2), not a ClientHello.
		c.Write([]byte{0x16, 0x03, 0x01, 0x00, 0x08, 0x02, 0x00, 0x00, 0x04, 0x03, 0x03, 0x00, 0x00})
		if !closedByPeer(c, 5*time.Second) {
			t.Fatal("connection with a malformed ClientHello stayed open")
		}
		waitFor(t, 5*time.Second, "tls_inspector_client_hello_error", func() bool {
			return metric(t, reg, "flotilla_agent_tls_inspector_client_hello_error", "edge") == 1
		})
	})
	t.Run("client never speaks", func(t *testing.T) {
		before := raw.accepted.Load()
		c := dial(t, addr)
		if !closedByPeer(c, 5*time.Second) {
			t.Fatal("silent client was not closed")
		}
		if metric(t, reg, "flotilla_agent_downstream_pre_cx_timeout", "edge") != 1 {
			t.Error("downstream_pre_cx_timeout not counted")
		}
		if raw.accepted.Load() != before {
			t.Error("a silent client reached a backend")
		}
	})
	roundTrip(t, good, "still here")
}

// bannerBackend writes name and a newline as soon as it accepts, then echoes.
func bannerBackend(t testing.TB, name string) *backend {
	return startBackend(t, func(c *net.TCPConn) {
		io.WriteString(c, name+"\n")
		echo(c)
	})
}

// readBanner reads a banner line of n bytes (newline included).
func readBanner(t testing.TB, c net.Conn, n int) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	buf := make([]byte, n)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("read banner: %v", err)
	}
	return strings.TrimSuffix(string(buf), "\n")
}

func TestServerFirstProtocol(t *testing.T) {
	smtp := bannerBackend(t, "220 smtp.example ESMTP")
	m, _ := newManager(t, proxy.Options{})
	apply(t, m, graph(t, []*listenerv3.Listener{tcpListener("smtp", 0, "smtp", nil)}, cluster("smtp", smtp.addr)))
	c := dialListener(t, m, "smtp")
	// The client sends nothing: a listener without listener filters must not wait for it.
	if got := readBanner(t, c, len("220 smtp.example ESMTP\n")); got != "220 smtp.example ESMTP" {
		t.Fatalf("banner = %q", got)
	}
	roundTrip(t, c, "EHLO client\r\n")
}

func TestProxyProtocolListener(t *testing.T) {
	internal := bannerBackend(t, "I")
	other := bannerBackend(t, "O")
	trusted := cidrs("127.0.0.0/8")
	m, reg := newManager(t, proxy.Options{})
	ppFilter := []*listenerv3.ListenerFilter{runtimetest.ProxyProtocolFilter()}
	apply(t, m, graph(t, []*listenerv3.Listener{
		// As compiled: trusted peers on every chain, the catch-all "default" chain last.
		l4Listener(ppFilter, 300*time.Millisecond, nil,
			chain("internal", &chainMatch{SourcePrefixRanges: cidrs("10.0.0.0/8"), DirectSourcePrefixRanges: trusted}, "internal"),
			chain("default", &chainMatch{DirectSourcePrefixRanges: trusted}, "other"),
		),
	}, cluster("internal", internal.addr), cluster("other", other.addr)))
	addr := m.Addr("edge").String()
	src := func(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
	dst := src("127.0.0.1:443")

	good := dial(t, addr)
	good.Write(proxyproto.AppendV1(nil, src("10.1.2.3:5555"), dst))
	if got := readBanner(t, good, 2); got != "I" {
		t.Fatalf("v1 from 10.1.2.3 reached %q, want I", got)
	}

	tests := []struct {
		name   string
		header []byte
		want   string
	}{
		{"v1 internal", proxyproto.AppendV1(nil, src("10.9.9.9:1"), dst), "I"},
		{"v1 external", proxyproto.AppendV1(nil, src("192.0.2.1:1"), dst), "O"},
		{"v2 internal", proxyproto.AppendV2(nil, src("10.1.2.3:5555"), dst), "I"},
		{"v2 external IPv6", proxyproto.AppendV2(nil, src("[2001:db8::1]:5555"), src("[2001:db8::2]:443")), "O"},
		// LOCAL keeps the real addresses: 127.0.0.1 is not internal.
		{"v2 LOCAL", proxyproto.AppendV2(nil, netip.AddrPort{}, netip.AddrPort{}), "O"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, addr)
			// The banner arrives with no byte after the header: server-first works.
			c.Write(tt.header)
			if got := readBanner(t, c, 2); got != tt.want {
				t.Fatalf("reached %q, want %q", got, tt.want)
			}
			// The header is stripped: the backend echoes exactly what follows it.
			roundTrip(t, c, "after the header")
		})
	}

	t.Run("bad header", func(t *testing.T) {
		c := dial(t, addr)
		io.WriteString(c, "GET / HTTP/1.1\r\n\r\n")
		if !closedByPeer(c, 5*time.Second) {
			t.Fatal("connection without a PROXY header stayed open")
		}
		waitFor(t, 5*time.Second, "downstream_cx_proxy_proto_error", func() bool {
			return metric(t, reg, "flotilla_agent_downstream_cx_proxy_proto_error", "edge") == 1
		})
	})
	t.Run("silent client", func(t *testing.T) {
		c := dial(t, addr)
		if !closedByPeer(c, 5*time.Second) {
			t.Fatal("silent client was not closed")
		}
		waitFor(t, 5*time.Second, "downstream_pre_cx_timeout", func() bool {
			return metric(t, reg, "flotilla_agent_downstream_pre_cx_timeout", "edge") == 1
		})
	})
	roundTrip(t, good, "the first connection still works")

	t.Run("untrusted peer", func(t *testing.T) {
		apply(t, m, graph(t, []*listenerv3.Listener{
			l4Listener(ppFilter, time.Second, nil, chain("default", &chainMatch{DirectSourcePrefixRanges: cidrs("192.0.2.0/24")}, "other")),
		}, cluster("other", other.addr)))
		before := other.accepted.Load()
		c := dial(t, addr)
		c.Write(proxyproto.AppendV1(nil, src("192.0.2.1:1"), dst))
		if !closedByPeer(c, 5*time.Second) {
			t.Fatal("connection from an untrusted peer stayed open")
		}
		waitFor(t, 5*time.Second, "no_filter_chain_match", func() bool {
			return metric(t, reg, "flotilla_agent_no_filter_chain_match", "edge") == 1
		})
		if other.accepted.Load() != before {
			t.Error("an untrusted peer reached a backend")
		}
		roundTrip(t, good, "the first connection keeps its config")
	})
}

func TestUpstreamProxyProtocol(t *testing.T) {
	for _, version := range []int{1, 2} {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
			be := startTLSBackend(t, "nginx", true)
			cl := cluster("nginx", be.addr)
			cl.TransportSocket = runtimetest.UpstreamProxyProtocol(version)
			m, _ := newManager(t, proxy.Options{})
			// The nginx setup: PROXY from a trusted load balancer, SNI routing, PROXY v2 to
			// a TLS backend.
			apply(t, m, graph(t, []*listenerv3.Listener{l4Listener(
				[]*listenerv3.ListenerFilter{runtimetest.ProxyProtocolFilter(), runtimetest.TLSInspectorFilter()}, 2*time.Second, nil,
				chain("sni-0", &chainMatch{ServerNames: []string{"nginx.example"}, TransportProtocol: "tls", DirectSourcePrefixRanges: cidrs("127.0.0.1")}, "nginx"),
			)}, cl))
			client := netip.MustParseAddrPort("198.51.100.7:40000")
			server := netip.MustParseAddrPort("203.0.113.1:443")
			tc, err := tlsClient(t, m.Addr("edge").String(), "nginx.example", nil, func(c net.Conn) net.Conn {
				c.Write(proxyproto.AppendV2(nil, client, server))
				return c
			})
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			if reached(tc, be) != "nginx" {
				t.Fatal("did not reach the backend")
			}
			roundTrip(t, tc, "hello nginx")
			h := be.header(0)
			if h == nil || h.Version != version || h.Local || h.Src != client || h.Dst != server {
				t.Fatalf("backend got PROXY header %+v, want v%d %s → %s", h, version, client, server)
			}
		})
	}
	t.Run("plain listener", func(t *testing.T) {
		be := startTLSBackend(t, "b", true)
		cl := cluster("b", be.addr)
		cl.TransportSocket = runtimetest.UpstreamProxyProtocol(2)
		m, _ := newManager(t, proxy.Options{})
		apply(t, m, graph(t, []*listenerv3.Listener{tcpListener("plain", 0, "b", nil)}, cl))
		tc, err := tlsClient(t, m.Addr("plain").String(), "b.example", nil, nil)
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		roundTrip(t, tc, "hi")
		h := be.header(0)
		local := netip.MustParseAddrPort(tc.LocalAddr().String())
		if h == nil || h.Src != local || h.Dst.String() != m.Addr("plain").String() {
			t.Fatalf("backend got PROXY header %+v, want %s → %s", h, local, m.Addr("plain"))
		}
	})
}

func TestChainChangeKeepsOpenConnection(t *testing.T) {
	a := startTLSBackend(t, "a", false)
	b := startTLSBackend(t, "b", false)
	m, _ := newManager(t, proxy.Options{})
	to := func(cl string) *runtime.Graph {
		return graph(t, []*listenerv3.Listener{l4Listener(inspector, 2*time.Second, nil,
			chain("sni", &chainMatch{ServerNames: []string{"svc.example"}}, cl),
		)}, cluster("a", a.addr), cluster("b", b.addr))
	}
	apply(t, m, to("a"))
	addr := m.Addr("edge").String()
	old, err := tlsClient(t, addr, "svc.example", nil, nil)
	if err != nil || reached(old, a, b) != "a" {
		t.Fatalf("first connection: %v, reached %q", err, reached(old, a, b))
	}
	apply(t, m, to("b"))
	fresh, err := tlsClient(t, addr, "svc.example", nil, nil)
	if err != nil || reached(fresh, a, b) != "b" {
		t.Fatalf("new connection: %v, reached %q, want b", err, reached(fresh, a, b))
	}
	roundTrip(t, old, "old connection, old chain")
	roundTrip(t, fresh, "new connection, new chain")
}

func TestContinueOnFiltersTimeout(t *testing.T) {
	// With continue_on_listener_filters_timeout, a client that never speaks gets a chain
	// after the timeout (as raw_buffer), so a server-first protocol works behind the
	// inspector too.
	mysql := bannerBackend(t, "M")
	tlsBe := startTLSBackend(t, "tls", false)
	l := l4Listener(inspector, 200*time.Millisecond, nil,
		chain("tls", &chainMatch{TransportProtocol: "tls"}, "tls"),
		chain("raw", &chainMatch{TransportProtocol: "raw_buffer"}, "mysql"),
	)
	l.ContinueOnListenerFiltersTimeout = true
	m, reg := newManager(t, proxy.Options{})
	apply(t, m, graph(t, []*listenerv3.Listener{l}, cluster("mysql", mysql.addr), cluster("tls", tlsBe.addr)))
	c := dialListener(t, m, "edge")
	if got := readBanner(t, c, 2); got != "M" {
		t.Fatalf("reached %q, want M", got)
	}
	roundTrip(t, c, "after the banner")
	if got := metric(t, reg, "flotilla_agent_downstream_pre_cx_timeout", "edge"); got != 1 {
		t.Errorf("downstream_pre_cx_timeout = %v, want 1", got)
	}
	tc, err := tlsClient(t, m.Addr("edge").String(), "any.example", nil, nil)
	if err != nil || reached(tc, tlsBe) != "tls" {
		t.Fatalf("TLS client: %v, reached %q", err, reached(tc, tlsBe))
	}
}
