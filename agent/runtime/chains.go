package runtime

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/flotilla-proxy/flotilla/agent/fieldcheck"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	proxyprotocolv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/proxy_protocol/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	connlimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/connection_limit/v3"
	upstreamppv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/proxy_protocol/v3"
	rawbufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/flotilla-proxy/flotilla/agent/httproute"
	"github.com/flotilla-proxy/flotilla/agent/match"
	"github.com/flotilla-proxy/flotilla/agent/tlsconf"
)

// The listener filters, transport sockets and their defaults flotilla-agent honours.
const (
	// ProxyProtocolFilterName is the well-known name of the PROXY protocol listener filter.
	ProxyProtocolFilterName = "envoy.filters.listener.proxy_protocol"
	// TLSInspectorFilterName is the well-known name of the TLS inspector listener filter.
	TLSInspectorFilterName = "envoy.filters.listener.tls_inspector"
	// UpstreamProxyProtocolName is the well-known name of the transport socket that sends a
	// PROXY protocol header to upstreams.
	UpstreamProxyProtocolName = "envoy.transport_sockets.upstream_proxy_protocol"
	// ConnectionLimitFilterName is the well-known name of the network filter that limits a
	// listener's open connections.
	ConnectionLimitFilterName = "envoy.filters.network.connection_limit"
	// RawBufferName is the well-known name of the plain TCP transport socket.
	RawBufferName = "envoy.transport_sockets.raw_buffer"

	// DefaultListenerFiltersTimeout is a listener's listener_filters_timeout when unset
	// (Envoy's): how long the listener filters may wait for the client's first bytes.
	DefaultListenerFiltersTimeout = 15 * time.Second

	// TransportTLS and TransportRaw are the transport protocols a connection is detected as:
	// "tls" when the TLS inspector found a ClientHello, "raw_buffer" otherwise.
	TransportTLS = "tls"
	TransportRaw = "raw_buffer"
)

func typeURLOf(m proto.Message) string {
	return resourcev3.APITypePrefix + string(m.ProtoReflect().Descriptor().FullName())
}

var (
	proxyProtocolTypeURL = typeURLOf(&proxyprotocolv3.ProxyProtocol{})
	tlsInspectorTypeURL  = typeURLOf(&tlsinspectorv3.TlsInspector{})
	upstreamPPTypeURL    = typeURLOf(&upstreamppv3.ProxyProtocolUpstreamTransport{})
	rawBufferTypeURL     = typeURLOf(&rawbufferv3.RawBuffer{})
	connLimitTypeURL     = typeURLOf(&connlimitv3.ConnectionLimit{})
	upstreamTLSTypeURL   = typeURLOf(&tlsv3.UpstreamTlsContext{})
	downstreamTLSTypeURL = typeURLOf(&tlsv3.DownstreamTlsContext{})
)

// parseConnectionLimit checks a connection_limit network filter and returns its
// max_connections. delay and runtime_enabled are not supported: over the limit, the
// connection is closed at once.
func parseConnectionLimit(f *listenerv3.Filter, path string) (uint64, error) {
	if err := fieldcheck.Only(f, path, "name", "typed_config"); err != nil {
		return 0, err
	}
	tc := f.GetTypedConfig()
	if tc == nil || tc.GetTypeUrl() != connLimitTypeURL {
		return 0, fmt.Errorf("%s.typed_config: only %s may come before %s or %s", path, ConnectionLimitFilterName, TCPProxyFilterName, HTTPConnectionManagerFilterName)
	}
	path += ".typed_config"
	cl := &connlimitv3.ConnectionLimit{}
	if err := tc.UnmarshalTo(cl); err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	if err := fieldcheck.Only(cl, path, "stat_prefix", "max_connections"); err != nil {
		return 0, err
	}
	n := cl.GetMaxConnections().GetValue()
	if n < 1 {
		return 0, fmt.Errorf("%s.max_connections: must be at least 1", path)
	}
	if err := cl.Validate(); err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return n, nil
}

// parseHashPolicy checks a tcp_proxy hash_policy: empty, or one source_ip policy (the
// client's address feeds a ring hash or Maglev cluster).
func parseHashPolicy(hps []*typev3.HashPolicy, path string) (sourceIP bool, err error) {
	switch len(hps) {
	case 0:
		return false, nil
	case 1:
	default:
		return false, fmt.Errorf("%s: flotilla-agent supports one hash policy (source_ip), got %d", path, len(hps))
	}
	p := path + "[0]"
	if err := fieldcheck.Only(hps[0], p, "source_ip"); err != nil {
		return false, err
	}
	if hps[0].GetSourceIp() == nil {
		return false, fmt.Errorf("%s.source_ip is required", p)
	}
	if err := fieldcheck.Only(hps[0].GetSourceIp(), p+".source_ip"); err != nil {
		return false, err
	}
	return true, nil
}

// FilterChain is one compiled filter chain of a listener: its name, what it matches and the
// tcp_proxy it runs. It is read-only.
type FilterChain struct {
	// Name is the chain's name ("" when the resource gives none); the default chain of a
	// listener compiled by Flotilla is named "default".
	Name string
	// Match is the chain's filter_chain_match (zero for a listener's default chain).
	Match match.Conditions
	// TCP is the chain's tcp_proxy. On an HTTP chain (HTTP not nil) only TCP.AccessLog of
	// connection-level failures and TCP.Cluster == nil apply.
	TCP TCPProxy
	// HTTP, when not nil, is the chain's http_connection_manager: the chain serves HTTP
	// (after TLS termination when TLS is set) and routes each request with the
	// RouteConfiguration named HTTP.RouteConfigName (Graph.RouteTable).
	HTTP *httproute.Manager
	// TLS, when not nil, terminates TLS on the chain's connections (transport_socket
	// envoy.transport_sockets.tls): the proxy completes a handshake with it after choosing
	// the chain and proxies the plaintext. nil means the bytes pass as they are.
	TLS *tlsconf.Server
}

// chainSpec is a parsed filter chain before its cluster is linked.
type chainSpec struct {
	name        string
	cond        match.Conditions
	cluster     string
	idleTimeout time.Duration
	attempts    int
	hashSource  bool
	limit       uint64 // connection_limit max_connections; 0 without the filter
	accessLog   *AccessLog
	tls         *tlsv3.DownstreamTlsContext // nil: plain TCP (raw_buffer)
	http        *httproute.Manager          // an http_connection_manager chain; cluster is ""
}

// present reports whether cs is a parsed chain (a listener's default chain is the zero
// chainSpec when it has none).
func (cs chainSpec) present() bool { return cs.cluster != "" || cs.http != nil }

// parseListenerFilters checks listener_filters: at most one proxy_protocol and one
// tls_inspector, in that order, each with an empty (default) config.
func parseListenerFilters(l *listenerv3.Listener, spec *listenerSpec) error {
	for i, f := range l.GetListenerFilters() {
		path := fmt.Sprintf("listener_filters[%d]", i)
		if err := fieldcheck.Only(f, path, "name", "typed_config"); err != nil {
			return err
		}
		tc := f.GetTypedConfig()
		if tc == nil {
			return fmt.Errorf("%s.typed_config is required", path)
		}
		path += ".typed_config"
		var cfg proto.Message
		switch tc.GetTypeUrl() {
		case proxyProtocolTypeURL:
			if spec.proxyProtocol {
				return fmt.Errorf("%s: a second %s filter is not supported by flotilla-agent", path, ProxyProtocolFilterName)
			}
			if spec.tlsInspector {
				return fmt.Errorf("%s: %s must come before %s (flotilla-agent reads the PROXY header first)", path, ProxyProtocolFilterName, TLSInspectorFilterName)
			}
			spec.proxyProtocol = true
			cfg = &proxyprotocolv3.ProxyProtocol{}
		case tlsInspectorTypeURL:
			if spec.tlsInspector {
				return fmt.Errorf("%s: a second %s filter is not supported by flotilla-agent", path, TLSInspectorFilterName)
			}
			spec.tlsInspector = true
			cfg = &tlsinspectorv3.TlsInspector{}
		default:
			return fmt.Errorf("%s: listener filter type %q is not supported by flotilla-agent (only %s and %s)", path, tc.GetTypeUrl(), ProxyProtocolFilterName, TLSInspectorFilterName)
		}
		if err := tc.UnmarshalTo(cfg); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		// Only the defaults: the PROXY header is required (v1 and v2), the inspector reads
		// SNI and ALPN with its default limits.
		if err := fieldcheck.Only(cfg, path); err != nil {
			return err
		}
	}
	spec.filtersTimeout = DefaultListenerFiltersTimeout
	spec.handshakeTimeout = DefaultHandshakeTimeout
	if l.ListenerFiltersTimeout != nil {
		d, err := duration(l.GetListenerFiltersTimeout(), "listener_filters_timeout")
		if err != nil {
			return err
		}
		spec.filtersTimeout = d
		if d > 0 {
			spec.handshakeTimeout = d
		}
	}
	spec.continueOnTimeout = l.GetContinueOnListenerFiltersTimeout()
	return nil
}

// parseChains checks filter_chains and default_filter_chain and compiles the matcher.
func parseChains(l *listenerv3.Listener, spec *listenerSpec) error {
	if len(l.GetFilterChains()) == 0 && l.GetDefaultFilterChain() == nil {
		return errors.New("filter_chains: at least one filter chain or a default_filter_chain is required")
	}
	names := map[string]int{}
	conds := make([]match.Conditions, 0, len(l.GetFilterChains()))
	for i, fc := range l.GetFilterChains() {
		path := fmt.Sprintf("filter_chains[%d]", i)
		cs, err := parseChain(fc, path)
		if err != nil {
			return err
		}
		if cs.cond, err = parseChainMatch(fc.GetFilterChainMatch(), path+".filter_chain_match"); err != nil {
			return err
		}
		if cs.name != "" {
			if j, ok := names[cs.name]; ok {
				return fmt.Errorf("%s.name: %q is already the name of filter_chains[%d]", path, cs.name, j)
			}
			names[cs.name] = i
		}
		spec.chains = append(spec.chains, cs)
		conds = append(conds, cs.cond)
	}
	if fc := l.GetDefaultFilterChain(); fc != nil {
		cs, err := parseChain(fc, "default_filter_chain")
		if err != nil {
			return err
		}
		if m := fc.GetFilterChainMatch(); m != nil && fieldcheck.Any(m) {
			return errors.New("default_filter_chain.filter_chain_match: must be empty (the default chain takes what no chain matches)")
		}
		spec.defaultChain = cs
	}
	// connection_limit is per filter-chain instance in Envoy; Flotilla's compiler emits one
	// value per listener and the agent enforces it per listener, so every chain must agree.
	all := spec.chains
	if spec.defaultChain.present() {
		all = append(all[:len(all):len(all)], spec.defaultChain)
	}
	for i, cs := range all {
		if cs.limit != all[0].limit {
			return fmt.Errorf("filter chains set different connection_limit max_connections (%d and %d): flotilla-agent enforces one limit per listener", all[0].limit, all[i].limit)
		}
	}
	if len(all) > 0 {
		spec.maxConnections = all[0].limit
	}
	m, err := match.Compile(conds)
	if err != nil {
		var de *match.DuplicateError
		if errors.As(err, &de) {
			return fmt.Errorf("filter_chains[%d] and filter_chains[%d] have the same filter_chain_match (multiple filter chains with the same matching rules)", de.First, de.Second)
		}
		return fmt.Errorf("filter_chains: %w", err)
	}
	spec.matcher = m
	return nil
}

// parseChain checks one filter chain, which runs a tcp_proxy or an
// http_connection_manager, optionally preceded by a connection_limit.
func parseChain(fc *listenerv3.FilterChain, path string) (chainSpec, error) {
	if err := fieldcheck.Only(fc, path, "filter_chain_match", "filters", "metadata", "name", "transport_socket"); err != nil {
		return chainSpec{}, err
	}
	tlsCtx, err := parseDownstreamSocket(fc.GetTransportSocket(), path+".transport_socket")
	if err != nil {
		return chainSpec{}, err
	}
	filters := fc.GetFilters()
	var limit uint64
	switch n := len(filters); {
	case n == 2:
		var err error
		if limit, err = parseConnectionLimit(filters[0], path+".filters[0]"); err != nil {
			return chainSpec{}, err
		}
	case n != 1:
		return chainSpec{}, fmt.Errorf("%s.filters: flotilla-agent supports a %s or %s, optionally preceded by a %s; got %d filters", path, TCPProxyFilterName, HTTPConnectionManagerFilterName, ConnectionLimitFilterName, n)
	}
	path += fmt.Sprintf(".filters[%d]", len(filters)-1)
	if last := filters[len(filters)-1]; isHTTPFilter(last) {
		m, al, err := parseHTTPFilter(last, path)
		if err != nil {
			return chainSpec{}, err
		}
		return chainSpec{name: fc.GetName(), limit: limit, accessLog: al, tls: tlsCtx, http: m}, nil
	}
	tp, err := parseTCPProxyFilter(filters[len(filters)-1], path)
	if err != nil {
		return chainSpec{}, err
	}
	path += ".typed_config"
	if err := fieldcheck.Only(tp, path, "stat_prefix", "cluster", "idle_timeout", "max_connect_attempts", "hash_policy", "access_log"); err != nil {
		return chainSpec{}, err
	}
	al, err := parseAccessLogs(tp.GetAccessLog(), path+".access_log")
	if err != nil {
		return chainSpec{}, err
	}
	hashSource, err := parseHashPolicy(tp.GetHashPolicy(), path+".hash_policy")
	if err != nil {
		return chainSpec{}, err
	}
	if tp.GetCluster() == "" {
		return chainSpec{}, fmt.Errorf("%s.cluster is required", path)
	}
	cs := chainSpec{
		name:        fc.GetName(),
		cluster:     tp.GetCluster(),
		idleTimeout: DefaultIdleTimeout,
		attempts:    DefaultMaxConnectAttempts,
		hashSource:  hashSource,
		limit:       limit,
		accessLog:   al,
		tls:         tlsCtx,
	}
	if tp.IdleTimeout != nil {
		if cs.idleTimeout, err = duration(tp.GetIdleTimeout(), path+".idle_timeout"); err != nil {
			return chainSpec{}, err
		}
	}
	if tp.MaxConnectAttempts != nil {
		n := tp.GetMaxConnectAttempts().GetValue()
		if n < 1 {
			return chainSpec{}, fmt.Errorf("%s.max_connect_attempts: must be at least 1, got %d", path, n)
		}
		cs.attempts = int(n)
	}
	// Envoy's own field constraints (protoc-gen-validate) as a backstop for values.
	if err := tp.Validate(); err != nil {
		return chainSpec{}, fmt.Errorf("%s: %w", path, err)
	}
	return cs, nil
}

// parseChainMatch checks a filter_chain_match against the supported criteria.
func parseChainMatch(m *listenerv3.FilterChainMatch, path string) (match.Conditions, error) {
	var c match.Conditions
	if m == nil {
		return c, nil
	}
	// source_type (non-ANY), source_ports, address_suffix and suffix_len are refused here.
	if err := fieldcheck.Only(m, path, "destination_port", "prefix_ranges", "server_names", "transport_protocol",
		"application_protocols", "direct_source_prefix_ranges", "source_prefix_ranges"); err != nil {
		return c, err
	}
	if m.DestinationPort != nil {
		p := m.GetDestinationPort().GetValue()
		if p < 1 || p > 65535 {
			return c, fmt.Errorf("%s.destination_port: %d is not a TCP port", path, p)
		}
		c.DestinationPort = uint16(p)
	}
	var err error
	if c.PrefixRanges, err = parseCIDRs(m.GetPrefixRanges(), path+".prefix_ranges"); err != nil {
		return c, err
	}
	if c.DirectSourcePrefixRanges, err = parseCIDRs(m.GetDirectSourcePrefixRanges(), path+".direct_source_prefix_ranges"); err != nil {
		return c, err
	}
	if c.SourcePrefixRanges, err = parseCIDRs(m.GetSourcePrefixRanges(), path+".source_prefix_ranges"); err != nil {
		return c, err
	}
	for i, n := range m.GetServerNames() {
		// Host names are case-insensitive; the inspector lower-cases the SNI.
		n = strings.ToLower(n)
		if err := match.CheckServerName(n); err != nil {
			return c, fmt.Errorf("%s.server_names[%d]: %w", path, i, err)
		}
		c.ServerNames = append(c.ServerNames, n)
	}
	switch t := m.GetTransportProtocol(); t {
	case "", TransportTLS, TransportRaw:
		c.TransportProtocol = t
	default:
		return c, fmt.Errorf("%s.transport_protocol %q is not supported by flotilla-agent (%q or %q)", path, t, TransportTLS, TransportRaw)
	}
	for i, p := range m.GetApplicationProtocols() {
		if p == "" {
			return c, fmt.Errorf("%s.application_protocols[%d]: must not be empty", path, i)
		}
		c.ApplicationProtocols = append(c.ApplicationProtocols, p)
	}
	if err := m.Validate(); err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// parseCIDRs converts CidrRanges. Like Envoy, an unset prefix_len is 0 and host bits are
// masked off.
func parseCIDRs(rs []*corev3.CidrRange, path string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for i, r := range rs {
		p := fmt.Sprintf("%s[%d]", path, i)
		if err := fieldcheck.Only(r, p, "address_prefix", "prefix_len"); err != nil {
			return nil, err
		}
		ip, err := netip.ParseAddr(r.GetAddressPrefix())
		if err != nil || ip.Zone() != "" {
			return nil, fmt.Errorf("%s.address_prefix: %q is not an IP address", p, r.GetAddressPrefix())
		}
		ip = ip.Unmap()
		bits := int(r.GetPrefixLen().GetValue())
		if bits > ip.BitLen() {
			return nil, fmt.Errorf("%s.prefix_len: %d is longer than an IPv%d address", p, bits, map[int]int{32: 4, 128: 6}[ip.BitLen()])
		}
		pfx, err := ip.Prefix(bits)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		out = append(out, pfx)
	}
	return out, nil
}

// parseTransportSocket checks a cluster's transport_socket: raw_buffer, tls (an
// UpstreamTlsContext), or upstream_proxy_protocol (V1 or V2, no TLVs) wrapping raw_buffer or
// tls. It returns the PROXY protocol version to send (0 for none) and the TLS context (nil
// for plain TCP). The TLS context is only decoded and checked for its fields here; its
// certificates come from SDS and are checked by Build (tlsconf.NewClient).
func parseTransportSocket(ts *corev3.TransportSocket, path string) (int, *tlsv3.UpstreamTlsContext, error) {
	if err := fieldcheck.Only(ts, path, "name", "typed_config"); err != nil {
		return 0, nil, err
	}
	tc := ts.GetTypedConfig()
	if tc == nil {
		return 0, nil, fmt.Errorf("%s.typed_config is required", path)
	}
	path += ".typed_config"
	switch tc.GetTypeUrl() {
	case rawBufferTypeURL:
		rb := &rawbufferv3.RawBuffer{}
		if err := tc.UnmarshalTo(rb); err != nil {
			return 0, nil, fmt.Errorf("%s: %w", path, err)
		}
		return 0, nil, fieldcheck.Only(rb, path)
	case upstreamTLSTypeURL:
		u := &tlsv3.UpstreamTlsContext{}
		if err := tc.UnmarshalTo(u); err != nil {
			return 0, nil, fmt.Errorf("%s: %w", path, err)
		}
		if _, err := tlsconf.NewClient(u, tlsconf.SecretMap(nil)); err != nil && !errors.Is(err, tlsconf.ErrMissingSecret) {
			return 0, nil, fmt.Errorf("%s.%w", path, err)
		}
		return 0, u, nil
	case upstreamPPTypeURL:
	default:
		return 0, nil, fmt.Errorf("%s: transport socket type %q is not supported by flotilla-agent (only %s, %s and %s)", path, tc.GetTypeUrl(), tlsconf.TransportSocketName, UpstreamProxyProtocolName, RawBufferName)
	}
	pp := &upstreamppv3.ProxyProtocolUpstreamTransport{}
	if err := tc.UnmarshalTo(pp); err != nil {
		return 0, nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := fieldcheck.Only(pp, path, "config", "transport_socket"); err != nil {
		return 0, nil, err
	}
	if err := fieldcheck.Only(pp.GetConfig(), path+".config", "version"); err != nil {
		return 0, nil, err
	}
	version := 1 // V1 is the enum's zero value, as in Envoy
	switch v := pp.GetConfig().GetVersion(); v {
	case corev3.ProxyProtocolConfig_V1:
	case corev3.ProxyProtocolConfig_V2:
		version = 2
	default:
		return 0, nil, fmt.Errorf("%s.config.version %s is not supported by flotilla-agent (V1 or V2)", path, v)
	}
	inner := pp.GetTransportSocket()
	if inner == nil {
		return 0, nil, fmt.Errorf("%s.transport_socket is required", path)
	}
	if err := fieldcheck.Only(inner, path+".transport_socket", "name", "typed_config"); err != nil {
		return 0, nil, err
	}
	if itc := inner.GetTypedConfig(); itc == nil || (itc.GetTypeUrl() != rawBufferTypeURL && itc.GetTypeUrl() != upstreamTLSTypeURL) {
		return 0, nil, fmt.Errorf("%s.transport_socket: only %s and %s are supported by flotilla-agent inside %s", path, RawBufferName, tlsconf.TransportSocketName, UpstreamProxyProtocolName)
	}
	_, u, err := parseTransportSocket(inner, path+".transport_socket")
	if err != nil {
		return 0, nil, err
	}
	if err := pp.Validate(); err != nil {
		return 0, nil, fmt.Errorf("%s: %w", path, err)
	}
	return version, u, nil
}

// clusterTransport is parseTransportSocket for a cluster, (0, nil) when it has none.
func clusterTransport(c *clusterv3.Cluster) (int, *tlsv3.UpstreamTlsContext, error) {
	if c.TransportSocket == nil {
		return 0, nil, nil
	}
	return parseTransportSocket(c.GetTransportSocket(), "transport_socket")
}
