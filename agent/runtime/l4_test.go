package runtime_test

import (
	"net/netip"
	"reflect"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	proxyprotocolv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/proxy_protocol/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	upstreamppv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/proxy_protocol/v3"
	rawbufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/flotilla-proxy/flotilla/agent/match"
	"github.com/flotilla-proxy/flotilla/agent/runtime"
	"github.com/flotilla-proxy/flotilla/agent/runtime/runtimetest"
)

// edge returns the wire contract's SNI listener "edge": PROXY protocol from 127.0.0.0/8,
// the TLS inspector, chains sni-0 (a.example, *.a.example → a), ldap (SNI ldap.example with
// ALPN ldap, from 10.0.0.0/8 → b), raw (raw_buffer → b) and the catch-all "default" chain
// matching only the trusted peers (→ c), after edit.
func edge(edit func(l *listenerv3.Listener)) *listenerv3.Listener {
	trusted := []*corev3.CidrRange{runtimetest.CIDR("127.0.0.0/8")}
	l := &listenerv3.Listener{
		Name:                   "edge",
		Address:                runtimetest.SocketAddress("127.0.0.1", 0),
		ListenerFilters:        []*listenerv3.ListenerFilter{runtimetest.ProxyProtocolFilter(), runtimetest.TLSInspectorFilter()},
		ListenerFiltersTimeout: durationpb.New(5 * time.Second),
		FilterChains: []*listenerv3.FilterChain{
			runtimetest.FilterChain("sni-0", &listenerv3.FilterChainMatch{
				ServerNames: []string{"a.example", "*.a.example"}, TransportProtocol: "tls", DirectSourcePrefixRanges: trusted,
			}, runtimetest.TCPProxy("a")),
			runtimetest.FilterChain("ldap", &listenerv3.FilterChainMatch{
				ServerNames: []string{"ldap.example"}, TransportProtocol: "tls", ApplicationProtocols: []string{"ldap"},
				SourcePrefixRanges: []*corev3.CidrRange{runtimetest.CIDR("10.0.0.0/8")}, DirectSourcePrefixRanges: trusted,
				DestinationPort: wrapperspb.UInt32(636), PrefixRanges: []*corev3.CidrRange{runtimetest.CIDR("10.1.2.3")},
			}, runtimetest.TCPProxy("b")),
			runtimetest.FilterChain("raw", &listenerv3.FilterChainMatch{TransportProtocol: "raw_buffer", DirectSourcePrefixRanges: trusted}, runtimetest.TCPProxy("b")),
			runtimetest.FilterChain("default", &listenerv3.FilterChainMatch{DirectSourcePrefixRanges: trusted}, runtimetest.TCPProxy("c")),
		},
	}
	if edit != nil {
		edit(l)
	}
	return l
}

// sniOnly returns a listener "sni" with the TLS inspector, one SNI chain and a default
// chain, no PROXY protocol, after edit.
func sniOnly(edit func(l *listenerv3.Listener)) *listenerv3.Listener {
	l := &listenerv3.Listener{
		Name:            "sni",
		Address:         runtimetest.SocketAddress("127.0.0.1", 0),
		ListenerFilters: []*listenerv3.ListenerFilter{runtimetest.TLSInspectorFilter()},
		FilterChains: []*listenerv3.FilterChain{
			runtimetest.FilterChain("sni-0", &listenerv3.FilterChainMatch{ServerNames: []string{"a.example"}, TransportProtocol: "tls"}, runtimetest.TCPProxy("a")),
		},
		DefaultFilterChain: runtimetest.FilterChain("default", nil, runtimetest.TCPProxy("c")),
	}
	if edit != nil {
		edit(l)
	}
	return l
}

func TestValidateL4(t *testing.T) {
	const lds, cds = resourcev3.ListenerType, resourcev3.ClusterType
	match := func(i int, edit func(m *listenerv3.FilterChainMatch)) func(l *listenerv3.Listener) {
		return func(l *listenerv3.Listener) { edit(l.FilterChains[i].FilterChainMatch) }
	}
	tests := []struct {
		name    string
		typeURL string
		msg     proto.Message
		want    string
	}{
		{"edge as compiled", lds, edge(nil), ""},
		{"sni with default chain", lds, sniOnly(nil), ""},
		{"only a default chain", lds, sniOnly(func(l *listenerv3.Listener) { l.FilterChains = nil }), ""},
		{"inspector without server_names chains", lds, listener(func(l *listenerv3.Listener) {
			l.ListenerFilters = []*listenerv3.ListenerFilter{runtimetest.TLSInspectorFilter()}
		}), ""},
		{"continue on timeout", lds, edge(func(l *listenerv3.Listener) { l.ContinueOnListenerFiltersTimeout = true }), ""},
		{"upper-case server name", lds, sniOnly(match(0, func(m *listenerv3.FilterChainMatch) { m.ServerNames = []string{"A.Example"} })), ""},

		{"proxy_protocol option", lds, edge(func(l *listenerv3.Listener) {
			l.ListenerFilters[0].ConfigType = &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(&proxyprotocolv3.ProxyProtocol{AllowRequestsWithoutProxyProtocol: true})}
		}), `listener "edge": listener_filters[0].typed_config.allow_requests_without_proxy_protocol is not supported by flotilla-agent`},
		{"tls_inspector option", lds, edge(func(l *listenerv3.Listener) {
			l.ListenerFilters[1].ConfigType = &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(&tlsinspectorv3.TlsInspector{EnableJa3Fingerprinting: wrapperspb.Bool(true)})}
		}), `listener "edge": listener_filters[1].typed_config.enable_ja3_fingerprinting is not supported by flotilla-agent`},
		{"other listener filter", lds, edge(func(l *listenerv3.Listener) {
			l.ListenerFilters[1].ConfigType = &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(&rawbufferv3.RawBuffer{})}
		}), `listener "edge": listener_filters[1].typed_config: listener filter type "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer" is not supported by flotilla-agent (only envoy.filters.listener.proxy_protocol and envoy.filters.listener.tls_inspector)`},
		{"filter_disabled", lds, edge(func(l *listenerv3.Listener) {
			l.ListenerFilters[1].FilterDisabled = &listenerv3.ListenerFilterChainMatchPredicate{Rule: &listenerv3.ListenerFilterChainMatchPredicate_AnyMatch{AnyMatch: true}}
		}), `listener "edge": listener_filters[1].filter_disabled is not supported by flotilla-agent`},
		{"inspector before proxy_protocol", lds, edge(func(l *listenerv3.Listener) {
			l.ListenerFilters[0], l.ListenerFilters[1] = l.ListenerFilters[1], l.ListenerFilters[0]
		}), `listener "edge": listener_filters[1].typed_config: envoy.filters.listener.proxy_protocol must come before envoy.filters.listener.tls_inspector (flotilla-agent reads the PROXY header first)`},
		{"inspector twice", lds, edge(func(l *listenerv3.Listener) {
			l.ListenerFilters = append(l.ListenerFilters, runtimetest.TLSInspectorFilter())
		}), `listener "edge": listener_filters[2].typed_config: a second envoy.filters.listener.tls_inspector filter is not supported by flotilla-agent`},
		{"negative timeout", lds, edge(func(l *listenerv3.Listener) { l.ListenerFiltersTimeout = durationpb.New(-time.Second) }),
			`listener "edge": listener_filters_timeout: must not be negative, got -1s`},

		{"duplicate match", lds, edge(func(l *listenerv3.Listener) {
			l.FilterChains = append(l.FilterChains, runtimetest.FilterChain("again", &listenerv3.FilterChainMatch{
				ServerNames: []string{"b.example", "*.a.example"}, TransportProtocol: "tls", DirectSourcePrefixRanges: []*corev3.CidrRange{runtimetest.CIDR("127.0.0.1/8")},
			}, runtimetest.TCPProxy("a")))
		}), `listener "edge": filter_chains[0] and filter_chains[4] have the same filter_chain_match (multiple filter chains with the same matching rules)`},
		{"partial wildcard", lds, edge(match(0, func(m *listenerv3.FilterChainMatch) { m.ServerNames = []string{"*a.example"} })),
			`listener "edge": filter_chains[0].filter_chain_match.server_names[0]: "*a.example": partial wildcards are not supported (only "*." as the whole first label)`},
		{"bad server name", lds, edge(match(0, func(m *listenerv3.FilterChainMatch) { m.ServerNames = []string{"a..example"} })),
			`listener "edge": filter_chains[0].filter_chain_match.server_names[0]: "a..example": empty label`},
		{"transport other", lds, edge(match(0, func(m *listenerv3.FilterChainMatch) { m.TransportProtocol = "quic" })),
			`listener "edge": filter_chains[0].filter_chain_match.transport_protocol "quic" is not supported by flotilla-agent ("tls" or "raw_buffer")`},
		{"source_type", lds, edge(match(0, func(m *listenerv3.FilterChainMatch) { m.SourceType = listenerv3.FilterChainMatch_EXTERNAL })),
			`listener "edge": filter_chains[0].filter_chain_match.source_type is not supported by flotilla-agent`},
		{"address_suffix", lds, edge(match(0, func(m *listenerv3.FilterChainMatch) { m.AddressSuffix = "x" })),
			`listener "edge": filter_chains[0].filter_chain_match.address_suffix is not supported by flotilla-agent`},
		{"bad CIDR", lds, edge(match(1, func(m *listenerv3.FilterChainMatch) { m.SourcePrefixRanges[0].AddressPrefix = "10.0.0" })),
			`listener "edge": filter_chains[1].filter_chain_match.source_prefix_ranges[0].address_prefix: "10.0.0" is not an IP address`},
		{"CIDR too long", lds, edge(match(1, func(m *listenerv3.FilterChainMatch) { m.PrefixRanges[0].PrefixLen = wrapperspb.UInt32(33) })),
			`listener "edge": filter_chains[1].filter_chain_match.prefix_ranges[0].prefix_len: 33 is longer than an IPv4 address`},
		{"port 0", lds, edge(match(1, func(m *listenerv3.FilterChainMatch) { m.DestinationPort = wrapperspb.UInt32(0) })),
			`listener "edge": filter_chains[1].filter_chain_match.destination_port: 0 is not a TCP port`},
		{"same chain name", lds, edge(func(l *listenerv3.Listener) { l.FilterChains[2].Name = "ldap" }),
			`listener "edge": filter_chains[2].name: "ldap" is already the name of filter_chains[1]`},
		{"chain transport_socket", lds, edge(func(l *listenerv3.Listener) { l.FilterChains[2].TransportSocket = runtimetest.UpstreamProxyProtocol(1) }),
			`listener "edge": filter_chains[2].transport_socket.typed_config: transport socket type "type.googleapis.com/envoy.extensions.transport_sockets.proxy_protocol.v3.ProxyProtocolUpstreamTransport" is not supported by flotilla-agent on a filter chain (only envoy.transport_sockets.tls and envoy.transport_sockets.raw_buffer)`},
		{"default chain without cluster", lds, sniOnly(func(l *listenerv3.Listener) { l.DefaultFilterChain.Filters = nil }),
			`listener "sni": default_filter_chain.filters: flotilla-agent supports a envoy.filters.network.tcp_proxy or envoy.filters.network.http_connection_manager, optionally preceded by a envoy.filters.network.connection_limit; got 0 filters`},

		// Clusters.
		{"upstream PROXY v1", cds, eds(func(c *clusterv3.Cluster) { c.TransportSocket = runtimetest.UpstreamProxyProtocol(1) }), ""},
		{"upstream PROXY v2", cds, eds(func(c *clusterv3.Cluster) { c.TransportSocket = runtimetest.UpstreamProxyProtocol(2) }), ""},
		{"raw_buffer", cds, eds(func(c *clusterv3.Cluster) {
			c.TransportSocket = &corev3.TransportSocket{Name: "raw", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(&rawbufferv3.RawBuffer{})}}
		}), ""},
		{"upstream TLS", cds, eds(func(c *clusterv3.Cluster) {
			c.TransportSocket = &corev3.TransportSocket{Name: "tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(&tlsv3.UpstreamTlsContext{})}}
		}), ""},
		{"upstream TLS auto_host_sni", cds, eds(func(c *clusterv3.Cluster) {
			c.TransportSocket = &corev3.TransportSocket{Name: "tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(&tlsv3.UpstreamTlsContext{AutoHostSni: true})}}
		}), `cluster "backend": transport_socket.typed_config.auto_host_sni is not supported by flotilla-agent: it takes the HTTP Host header; for TCP leave sni empty and the agent passes the client's SNI through`},
		{"upstream PROXY TLVs", cds, eds(func(c *clusterv3.Cluster) {
			c.TransportSocket = upstreamPP(func(pp *upstreamppv3.ProxyProtocolUpstreamTransport) {
				pp.Config.AddedTlvs = []*corev3.TlvEntry{{Type: 0xe0, Value: []byte("x")}}
			})
		}), `cluster "backend": transport_socket.typed_config.config.added_tlvs is not supported by flotilla-agent`},
		{"upstream PROXY allow_unspecified_address", cds, eds(func(c *clusterv3.Cluster) {
			c.TransportSocket = upstreamPP(func(pp *upstreamppv3.ProxyProtocolUpstreamTransport) { pp.AllowUnspecifiedAddress = true })
		}), `cluster "backend": transport_socket.typed_config.allow_unspecified_address is not supported by flotilla-agent`},
		{"upstream PROXY over TLS", cds, eds(func(c *clusterv3.Cluster) {
			c.TransportSocket = upstreamPP(func(pp *upstreamppv3.ProxyProtocolUpstreamTransport) {
				pp.TransportSocket.ConfigType = &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(&tlsv3.UpstreamTlsContext{})}
			})
		}), ""},
		{"upstream PROXY over PROXY", cds, eds(func(c *clusterv3.Cluster) {
			c.TransportSocket = upstreamPP(func(pp *upstreamppv3.ProxyProtocolUpstreamTransport) {
				pp.TransportSocket.ConfigType = &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(&upstreamppv3.ProxyProtocolUpstreamTransport{})}
			})
		}), `cluster "backend": transport_socket.typed_config.transport_socket: only envoy.transport_sockets.raw_buffer and envoy.transport_sockets.tls are supported by flotilla-agent inside envoy.transport_sockets.upstream_proxy_protocol`},
		{"upstream PROXY without inner socket", cds, eds(func(c *clusterv3.Cluster) {
			c.TransportSocket = upstreamPP(func(pp *upstreamppv3.ProxyProtocolUpstreamTransport) { pp.TransportSocket = nil })
		}), `cluster "backend": transport_socket.typed_config.transport_socket is required`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkErr(t, runtime.Validate(tt.typeURL, tt.msg), tt.want)
		})
	}
}

func upstreamPP(edit func(pp *upstreamppv3.ProxyProtocolUpstreamTransport)) *corev3.TransportSocket {
	ts := runtimetest.UpstreamProxyProtocol(2)
	pp := &upstreamppv3.ProxyProtocolUpstreamTransport{}
	if err := ts.GetTypedConfig().UnmarshalTo(pp); err != nil {
		panic(err)
	}
	edit(pp)
	ts.ConfigType = &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(pp)}
	return ts
}

func checkErr(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Fatalf("Validate() = %v, want nil", err)
	case want != "" && err == nil:
		t.Fatalf("Validate() = nil, want %q", want)
	case want != "" && err.Error() != want:
		t.Fatalf("Validate() error\n got: %v\nwant: %s", err, want)
	}
}

func TestBuildL4(t *testing.T) {
	a := runtimetest.StaticCluster("a", runtimetest.Endpoint("192.0.2.1:443", 1))
	a.TransportSocket = runtimetest.UpstreamProxyProtocol(2)
	b := runtimetest.StaticCluster("b", runtimetest.Endpoint("192.0.2.2:443", 1))
	b.TransportSocket = runtimetest.UpstreamProxyProtocol(1)
	c := runtimetest.StaticCluster("c", runtimetest.Endpoint("192.0.2.3:443", 1))

	r := set([]*listenerv3.Listener{edge(nil), sniOnly(func(l *listenerv3.Listener) {
		l.Address = runtimetest.SocketAddress("127.0.0.1", 1)
	})}, []*clusterv3.Cluster{a, b}, nil)
	if err := r.Missing(); err == nil || err.Error() != `listener "edge" references unknown cluster "c"; listener "sni" references unknown cluster "c"` {
		t.Fatalf("Missing() = %v", err)
	}
	r.Clusters["c"] = c
	g, err := runtime.Build(r)
	if err != nil {
		t.Fatalf("Build() = %v", err)
	}

	e := g.Listener("edge")
	if !e.ProxyProtocol() || !e.TLSInspector() || !e.Peeks() || e.FiltersTimeout() != 5*time.Second || e.ContinueOnFiltersTimeout() {
		t.Errorf("edge filters: proxy_protocol %v, tls_inspector %v, peeks %v, timeout %v, continue %v",
			e.ProxyProtocol(), e.TLSInspector(), e.Peeks(), e.FiltersTimeout(), e.ContinueOnFiltersTimeout())
	}
	if len(e.Chains()) != 4 || e.DefaultChain() != nil || e.TCP().Cluster != nil {
		t.Errorf("edge: %d chains, default %v, TCP() %+v", len(e.Chains()), e.DefaultChain(), e.TCP())
	}
	ldap := e.Chains()[1]
	wantLDAP := match.Conditions{
		DestinationPort: 636, PrefixRanges: []netip.Prefix{netip.MustParsePrefix("10.1.2.3/32")},
		ServerNames: []string{"ldap.example"}, TransportProtocol: "tls", ApplicationProtocols: []string{"ldap"},
		DirectSourcePrefixRanges: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		SourcePrefixRanges:       []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
	}
	if ldap.Name != "ldap" || ldap.TCP.Cluster != g.Cluster("b") || ldap.TCP.MaxConnectAttempts != 3 || !sameConditions(ldap.Match, wantLDAP) {
		t.Errorf("ldap chain = %+v", ldap)
	}
	if got := g.Cluster("a").ProxyProtocol(); got != 2 {
		t.Errorf("cluster a ProxyProtocol() = %d, want 2", got)
	}
	if got := g.Cluster("b").ProxyProtocol(); got != 1 {
		t.Errorf("cluster b ProxyProtocol() = %d, want 1", got)
	}
	if got := g.Cluster("c").ProxyProtocol(); got != 0 {
		t.Errorf("cluster c ProxyProtocol() = %d, want 0", got)
	}
	if got := e.Clusters(); len(got) != 3 || got[0].Name() != "a" || got[1].Name() != "b" || got[2].Name() != "c" {
		t.Errorf("edge Clusters() = %v", got)
	}

	trusted, untrusted := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("192.0.2.9")
	tests := []struct {
		name string
		in   match.Input
		want string // chain name, "" for none
	}{
		{"exact SNI", match.Input{ServerName: "a.example", TransportProtocol: "tls", DirectSourceIP: trusted}, "sni-0"},
		{"wildcard SNI", match.Input{ServerName: "x.y.a.example", TransportProtocol: "tls", DirectSourceIP: trusted}, "sni-0"},
		{"raw", match.Input{TransportProtocol: "raw_buffer", DirectSourceIP: trusted}, "raw"},
		{"unknown SNI goes to default", match.Input{ServerName: "z.example", TransportProtocol: "tls", DirectSourceIP: trusted}, "default"},
		{"untrusted peer", match.Input{ServerName: "a.example", TransportProtocol: "tls", DirectSourceIP: untrusted}, ""},
		{"ldap", match.Input{DestinationIP: netip.MustParseAddr("10.1.2.3"), DestinationPort: 636, ServerName: "ldap.example", TransportProtocol: "tls",
			ApplicationProtocols: []string{"ldap"}, DirectSourceIP: trusted, SourceIP: netip.MustParseAddr("10.9.9.9")}, "ldap"},
		// Port 636 and 10.1.2.3 select the ldap chain's branch; no backtracking to sni-0.
		{"ldap port, other SNI", match.Input{DestinationIP: netip.MustParseAddr("10.1.2.3"), DestinationPort: 636, ServerName: "a.example",
			TransportProtocol: "tls", DirectSourceIP: trusted}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ""
			if fc := e.Match(&tt.in); fc != nil {
				got = fc.Name
			}
			if got != tt.want {
				t.Errorf("Match = %q, want %q", got, tt.want)
			}
		})
	}

	s := g.Listener("sni")
	if s.ProxyProtocol() || !s.TLSInspector() || s.FiltersTimeout() != runtime.DefaultListenerFiltersTimeout {
		t.Errorf("sni filters: proxy_protocol %v, tls_inspector %v, timeout %v", s.ProxyProtocol(), s.TLSInspector(), s.FiltersTimeout())
	}
	if d := s.DefaultChain(); d == nil || d.Name != "default" || d.TCP.Cluster != g.Cluster("c") || s.TCP() != d.TCP {
		t.Errorf("sni default chain = %+v, TCP() = %+v", d, s.TCP())
	}
	if fc := s.Match(&match.Input{ServerName: "a.example", TransportProtocol: "tls"}); fc == nil || fc.Name != "sni-0" {
		t.Errorf("sni Match(a.example) = %+v", fc)
	}
	if fc := s.Match(&match.Input{TransportProtocol: "raw_buffer"}); fc != s.DefaultChain() {
		t.Errorf("sni Match(raw) = %+v, want the default chain", fc)
	}
}

func sameConditions(a, b match.Conditions) bool { return reflect.DeepEqual(a, b) }
