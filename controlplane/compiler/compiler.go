// Package compiler compiles a config bundle — the schema people write — into
// the Envoy xDS v3 resources one group of agents runs: Listeners (LDS),
// RouteConfigurations (RDS), Clusters (CDS), ClusterLoadAssignments (EDS) and
// Secrets (SDS); and, with CompileGRPC, what proxyless gRPC clients need for
// the bundle's grpc_services (grpc.go).
//
// It emits exactly the subset of Envoy's API the Flotilla agent implements
// (and NACKs anything outside of). A plain listener has one filter chain
// holding one envoy.filters.network.tcp_proxy filter. A listener with sni,
// routes or proxy_protocol gets the listener filters it needs (proxy_protocol,
// then tls_inspector) under listener_filters_timeout, one filter chain per
// sni entry and per route with a filter_chain_match, and its default route as
// default_filter_chain — or, behind the PROXY protocol, as a last chain
// matching only the trusted peers, so that untrusted peers match no chain.
// A UDP listener has no filter chains, only an udp_proxy listener filter.
// A listener's max_connections becomes a connection_limit filter before the
// tcp_proxy of every chain, its access_log a file access logger on every
// tcp_proxy (or the udp_proxy), and a ring_hash or maglev cluster a
// source_ip hash policy on whatever proxies to it. Clusters are EDS over ADS
// with their lb_policy, health check, outlier detection and circuit
// breakers, wrapped in the upstream_proxy_protocol transport socket when
// they send the PROXY protocol; their endpoints are one locality of weighted
// endpoints.
//
// HTTP (http.go): an HTTP listener has one filter chain whose network filter
// is an http_connection_manager taking its routes over RDS (ADS) from a
// RouteConfiguration named like the listener, with the compressor, buffer
// and router HTTP filters; a cluster's protocol and http_idle_timeout become
// its HttpProtocolOptions, its retry_budget part of its circuit breakers.
//
// TLS: a listener's tls becomes a DownstreamTlsContext transport socket on
// every one of its filter chains (the default chain too), a cluster's tls an
// UpstreamTlsContext (inside the upstream_proxy_protocol socket when the
// cluster also sends the PROXY protocol). Certificates with their keys travel
// as SDS Secrets over ADS, named by content (SecretName), and a group gets
// exactly the secrets its listeners and clusters refer to; CA certificates
// are public and travel inline. Defaults are filled in here, so what the agent receives is
// explicit. The output is valid for a real Envoy as well. Compile is a pure
// function of its inputs, safe for concurrent use.
package compiler

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	proxyprotocolv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/proxy_protocol/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	connlimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/connection_limit/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	upstreamproxyprotocolv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/proxy_protocol/v3"
	rawbufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/flotilla-proxy/flotilla/controlplane/bundle"
	configv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/config/v1"
)

// Defaults for fields the schema leaves optional; the schema's doc comments
// promise these values.
const (
	// DefaultIdleTimeout is TcpProxy.idle_timeout when unset.
	DefaultIdleTimeout = time.Hour
	// DefaultConnectAttempts is TcpProxy.connect_attempts when unset (0).
	DefaultConnectAttempts = 3
	// DefaultConnectTimeout is Cluster.connect_timeout when unset.
	DefaultConnectTimeout = 5 * time.Second
	// DefaultWeight is Endpoint.weight when unset (0).
	DefaultWeight = 1
	// DefaultPrereadTimeout is Listener.preread_timeout when unset.
	DefaultPrereadTimeout = 5 * time.Second
)

// UpstreamProxyProtocol is the name of Envoy's transport socket that sends a
// PROXY protocol header to upstreams (go-control-plane's wellknown has none).
const UpstreamProxyProtocol = "envoy.transport_sockets.upstream_proxy_protocol"

// Resources are the Envoy resources for one agent group, each slice sorted by
// name. Endpoints holds one ClusterLoadAssignment per cluster, named like it.
type Resources struct {
	// Listeners are the LDS resources.
	Listeners []*listenerv3.Listener
	// Clusters are the CDS resources, all of type EDS over ADS.
	Clusters []*clusterv3.Cluster
	// Endpoints are the EDS resources, one per cluster.
	Endpoints []*endpointv3.ClusterLoadAssignment
	// Secrets are the SDS resources: the certificates with their keys that
	// the group's listeners and clusters use, named by SecretName.
	Secrets []*tlsv3.Secret
	// Routes are the RDS resources: one RouteConfiguration per HTTP
	// listener, named like it (and, for gRPC clients, "grpc:<service>").
	Routes []*routev3.RouteConfiguration
}

// Compile compiles a merged, validated bundle (bundle.Merge, bundle.Validate)
// for agents carrying labels. Only listeners whose selector matches labels are
// included, and only the clusters (and their endpoints) those listeners use.
// It still fails cleanly, naming the listener or cluster, on input that
// validation would have refused (a bad address, an unknown cluster).
func Compile(b *configv1.Bundle, labels map[string]string) (*Resources, error) {
	clusters := make(map[string]*configv1.Cluster, len(b.GetClusters()))
	for _, c := range b.GetClusters() {
		if _, dup := clusters[c.GetName()]; dup {
			return nil, fmt.Errorf("cluster %q: defined twice", c.GetName())
		}
		clusters[c.GetName()] = c
	}

	res := &Resources{}
	sec := secrets{}
	used := make(map[string]bool)
	for _, l := range b.GetListeners() {
		if !Selects(l.GetAgents(), labels) {
			continue
		}
		refs, err := clusterRefs(l)
		if err != nil {
			return nil, fmt.Errorf("listener %q: %w", l.GetName(), err)
		}
		for _, ref := range refs {
			if clusters[ref.name] == nil {
				return nil, fmt.Errorf("listener %q: %s: unknown cluster %q", l.GetName(), ref.field, ref.name)
			}
		}
		out, err := listener(l, clusters, sec)
		if err != nil {
			return nil, fmt.Errorf("listener %q: %w", l.GetName(), err)
		}
		res.Listeners = append(res.Listeners, out)
		if l.GetHttp() != nil {
			rc, err := routeConfiguration(l)
			if err != nil {
				return nil, fmt.Errorf("listener %q: %w", l.GetName(), err)
			}
			res.Routes = append(res.Routes, rc)
		}
		for _, ref := range refs {
			used[ref.name] = true
		}
	}
	for name := range used {
		c := clusters[name]
		cla, err := loadAssignment(c)
		if err != nil {
			return nil, fmt.Errorf("cluster %q: %w", name, err)
		}
		out, err := cluster(c, sec)
		if err != nil {
			return nil, fmt.Errorf("cluster %q: %w", name, err)
		}
		res.Clusters = append(res.Clusters, out)
		res.Endpoints = append(res.Endpoints, cla)
	}
	res.Secrets = sec.sorted()
	slices.SortFunc(res.Listeners, func(a, b *listenerv3.Listener) int { return cmp.Compare(a.GetName(), b.GetName()) })
	slices.SortFunc(res.Routes, func(a, b *routev3.RouteConfiguration) int { return cmp.Compare(a.GetName(), b.GetName()) })
	slices.SortFunc(res.Clusters, func(a, b *clusterv3.Cluster) int { return cmp.Compare(a.GetName(), b.GetName()) })
	slices.SortFunc(res.Endpoints, func(a, b *endpointv3.ClusterLoadAssignment) int {
		return cmp.Compare(a.GetClusterName(), b.GetClusterName())
	})
	return res, nil
}

// Selects reports whether selector matches labels: every key=value in
// selector is in labels. An empty selector matches every agent.
func Selects(selector, labels map[string]string) bool {
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// clusterRef is a listener field naming a cluster.
type clusterRef struct{ field, name string }

// clusterRefs lists the clusters a listener proxies to, failing on a
// listener that has nowhere to send connections.
func clusterRefs(l *configv1.Listener) ([]clusterRef, error) {
	var refs []clusterRef
	for i, r := range l.GetSni() {
		refs = append(refs, clusterRef{fmt.Sprintf("sni[%d].cluster", i), r.GetCluster()})
	}
	for i, r := range l.GetRoutes() {
		refs = append(refs, clusterRef{fmt.Sprintf("routes[%d].cluster", i), r.GetCluster()})
	}
	if c := l.GetTcp().GetCluster(); c != "" {
		refs = append(refs, clusterRef{"tcp.cluster", c})
	}
	if h := l.GetHttp(); h != nil {
		if len(refs) > 0 || l.GetTcp() != nil || l.GetUdp() != nil {
			return nil, errors.New("http with tcp, udp, sni or routes: a listener has exactly one of tcp, udp and http")
		}
		refs = httpClusterRefs(h)
		for _, r := range refs {
			if r.name == "" {
				return nil, fmt.Errorf("%s: required", r.field)
			}
		}
		return refs, nil // an HTTP listener may only redirect and answer directly
	}
	if l.GetUdp() != nil {
		if len(refs) > 0 || l.GetTcp() != nil {
			return nil, errors.New("udp with tcp, sni or routes: a listener is either TCP or UDP")
		}
		if c := l.GetUdp().GetCluster(); c != "" {
			refs = append(refs, clusterRef{"udp.cluster", c})
		}
	}
	if len(refs) == 0 {
		return nil, errors.New("no tcp.cluster, udp.cluster, sni or routes: nowhere to send connections")
	}
	return refs, nil
}

// listener compiles l; clusters holds every cluster l refers to. The
// certificates of its tls go into sec.
func listener(l *configv1.Listener, clusters map[string]*configv1.Cluster, sec secrets) (*listenerv3.Listener, error) {
	ip, port, err := bundle.ListenAddress(l.GetAddress())
	if err != nil {
		return nil, err
	}
	sa := &corev3.SocketAddress{PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)}}
	switch {
	case !ip.IsValid() || ip == netip.IPv6Unspecified():
		// ":p" and "[::]:p" listen on every IPv4 and IPv6 address.
		sa.Address, sa.Ipv4Compat = "::", true
	default:
		sa.Address = ip.String()
	}
	out := &listenerv3.Listener{
		Name:    l.GetName(),
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: sa}},
	}
	if l.GetHttp() != nil {
		if err := httpListener(out, l); err != nil {
			return nil, err
		}
	} else if l.GetUdp() != nil {
		sa.Protocol = corev3.SocketAddress_UDP
		if err := udpListener(out, l, clusters[l.GetUdp().GetCluster()]); err != nil {
			return nil, err
		}
		return out, nil
	} else if !bundle.Routed(l) {
		// A plain listener: one chain, no match, no listener filters, so
		// server-first protocols are not made to wait.
		chain, err := filterChain(l, clusters, "", l.GetTcp().GetCluster(), nil)
		if err != nil {
			return nil, err
		}
		out.FilterChains = []*listenerv3.FilterChain{chain}
	} else if err := routedListener(out, l, clusters); err != nil {
		return nil, err
	}
	if t := l.GetTls(); t != nil {
		if l.GetHttp() != nil && len(t.GetAlpn()) == 0 {
			t = proto.CloneOf(t)
			t.Alpn = slices.Clone(DefaultHTTPALPN)
		}
		ts, err := downstreamTLS(t, sec)
		if err != nil {
			return nil, err
		}
		for _, c := range out.GetFilterChains() {
			c.TransportSocket = proto.CloneOf(ts)
		}
		if c := out.GetDefaultFilterChain(); c != nil {
			c.TransportSocket = proto.CloneOf(ts)
		}
	}
	return out, nil
}

// routedListener fills in the listener filters and filter chains of a
// listener with sni, routes or proxy_protocol.
func routedListener(out *listenerv3.Listener, l *configv1.Listener, clusters map[string]*configv1.Cluster) error {
	var trusted []*corev3.CidrRange
	if pp := l.GetProxyProtocol(); pp != nil {
		var err error
		if trusted, err = cidrRanges(pp.GetTrusted()); err != nil {
			return fmt.Errorf("proxy_protocol.trusted: %w", err)
		}
		if len(trusted) == 0 {
			return fmt.Errorf("proxy_protocol.trusted: empty")
		}
	}
	var chains []*listenerv3.FilterChain
	for i, r := range l.GetSni() {
		names, err := serverNames(r.GetNames())
		if err != nil {
			return fmt.Errorf("sni[%d]: %w", i, err)
		}
		chain, err := filterChain(l, clusters, bundle.SNIChainName(i), r.GetCluster(), &listenerv3.FilterChainMatch{
			ServerNames:              names,
			TransportProtocol:        bundle.TransportTLS,
			DirectSourcePrefixRanges: trusted,
		})
		if err != nil {
			return fmt.Errorf("sni[%d]: %w", i, err)
		}
		chains = append(chains, chain)
	}
	for i, r := range l.GetRoutes() {
		match, err := routeMatch(r.GetMatch())
		if err != nil {
			return fmt.Errorf("routes[%d]: %w", i, err)
		}
		match.DirectSourcePrefixRanges = trusted
		chain, err := filterChain(l, clusters, bundle.RouteName(r, i), r.GetCluster(), match)
		if err != nil {
			return fmt.Errorf("routes[%d]: %w", i, err)
		}
		chains = append(chains, chain)
	}
	if c := l.GetTcp().GetCluster(); c != "" {
		if trusted != nil {
			// Envoy does not fall back to default_filter_chain across match
			// levels, but a chain matching only the direct source keeps
			// untrusted peers out: they match no chain and are closed.
			chain, err := filterChain(l, clusters, bundle.DefaultChainName, c, &listenerv3.FilterChainMatch{DirectSourcePrefixRanges: trusted})
			if err != nil {
				return err
			}
			chains = append(chains, chain)
		} else {
			chain, err := filterChain(l, clusters, bundle.DefaultChainName, c, nil)
			if err != nil {
				return err
			}
			out.DefaultFilterChain = chain
		}
	}
	out.FilterChains = chains

	if trusted != nil {
		f, err := listenerFilter(wellknown.ProxyProtocol, &proxyprotocolv3.ProxyProtocol{})
		if err != nil {
			return err
		}
		out.ListenerFilters = append(out.ListenerFilters, f)
	}
	if inspectsTLS(chains) {
		f, err := listenerFilter(wellknown.TlsInspector, &tlsinspectorv3.TlsInspector{})
		if err != nil {
			return err
		}
		out.ListenerFilters = append(out.ListenerFilters, f)
	}
	out.ListenerFiltersTimeout = durationpb.New(DefaultPrereadTimeout)
	if d := l.GetPrereadTimeout(); d != nil {
		out.ListenerFiltersTimeout = proto.CloneOf(d)
	}
	out.ContinueOnListenerFiltersTimeout = false // a client that never speaks is closed
	return nil
}

// inspectsTLS reports whether any chain matches on what only the
// tls_inspector finds out: server names, ALPN or the transport.
func inspectsTLS(chains []*listenerv3.FilterChain) bool {
	for _, c := range chains {
		m := c.GetFilterChainMatch()
		if len(m.GetServerNames()) > 0 || len(m.GetApplicationProtocols()) > 0 || m.GetTransportProtocol() != "" {
			return true
		}
	}
	return false
}

// routeMatch is the filter_chain_match of a route, without the direct
// source ranges.
func routeMatch(m *configv1.StreamMatch) (*listenerv3.FilterChainMatch, error) {
	names, err := serverNames(m.GetSni())
	if err != nil {
		return nil, err
	}
	dst, err := cidrRanges(m.GetServerAddresses())
	if err != nil {
		return nil, fmt.Errorf("server_addresses: %w", err)
	}
	src, err := cidrRanges(m.GetSourceCidrs())
	if err != nil {
		return nil, fmt.Errorf("source_cidrs: %w", err)
	}
	out := &listenerv3.FilterChainMatch{
		PrefixRanges:         dst,
		ServerNames:          names,
		TransportProtocol:    bundle.RouteTransport(m),
		ApplicationProtocols: slices.Clone(m.GetAlpn()),
		SourcePrefixRanges:   src,
	}
	switch p := m.GetServerPort(); {
	case p > 65535:
		return nil, fmt.Errorf("server_port %d is not a port", p)
	case p > 0:
		out.DestinationPort = wrapperspb.UInt32(p)
	}
	return out, nil
}

// serverNames checks SNI names and returns them in lowercase.
func serverNames(in []string) ([]string, error) {
	var out []string
	for _, n := range in {
		name, err := bundle.ServerName(n)
		if err != nil {
			return nil, err
		}
		out = append(out, name)
	}
	return out, nil
}

// cidrRanges converts CIDRs (or bare IPs) to Envoy's CidrRange.
func cidrRanges(in []string) ([]*corev3.CidrRange, error) {
	var out []*corev3.CidrRange
	for _, s := range in {
		p, err := bundle.CIDR(s)
		if err != nil {
			return nil, err
		}
		out = append(out, &corev3.CidrRange{AddressPrefix: p.Addr().String(), PrefixLen: wrapperspb.UInt32(uint32(p.Bits()))})
	}
	return out, nil
}

// filterChain is a chain named name, matching match (nil: no match), whose
// last filter is a tcp_proxy to cluster with the listener's tcp settings,
// access log, and a source_ip hash policy when the cluster hashes. A
// listener with max_connections has a connection_limit filter first in
// every chain, each with the listener's one limit.
func filterChain(l *configv1.Listener, clusters map[string]*configv1.Cluster, name, cluster string, match *listenerv3.FilterChainMatch) (*listenerv3.FilterChain, error) {
	tcp := l.GetTcp()
	idle := durationpb.New(DefaultIdleTimeout)
	if tcp.GetIdleTimeout() != nil {
		idle = proto.CloneOf(tcp.GetIdleTimeout()) // "0s" stays 0: disabled
	}
	attempts := uint32(DefaultConnectAttempts)
	if n := tcp.GetConnectAttempts(); n != 0 {
		attempts = n
	}
	logs, err := accessLogs(l.GetAccessLog())
	if err != nil {
		return nil, fmt.Errorf("access_log: %w", err)
	}
	tp := &tcpproxyv3.TcpProxy{
		StatPrefix:         l.GetName(),
		ClusterSpecifier:   &tcpproxyv3.TcpProxy_Cluster{Cluster: cluster},
		IdleTimeout:        idle,
		MaxConnectAttempts: wrapperspb.UInt32(attempts),
		AccessLog:          logs,
	}
	if bundle.HashesSource(clusters[cluster]) {
		tp.HashPolicy = []*typev3.HashPolicy{{PolicySpecifier: &typev3.HashPolicy_SourceIp_{SourceIp: &typev3.HashPolicy_SourceIp{}}}}
	}
	var filters []*listenerv3.Filter
	if n := l.GetMaxConnections(); n > 0 {
		limit, err := networkFilter(ConnectionLimit, &connlimitv3.ConnectionLimit{
			StatPrefix:     l.GetName(),
			MaxConnections: wrapperspb.UInt64(uint64(n)),
		})
		if err != nil {
			return nil, err
		}
		filters = append(filters, limit)
	}
	proxy, err := networkFilter(wellknown.TCPProxy, tp)
	if err != nil {
		return nil, err
	}
	return &listenerv3.FilterChain{
		Name:             name,
		FilterChainMatch: match,
		Filters:          append(filters, proxy),
	}, nil
}

func networkFilter(name string, config proto.Message) (*listenerv3.Filter, error) {
	a, err := anypb.New(config)
	if err != nil {
		return nil, err
	}
	return &listenerv3.Filter{Name: name, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}}, nil
}

func listenerFilter(name string, config proto.Message) (*listenerv3.ListenerFilter, error) {
	a, err := anypb.New(config)
	if err != nil {
		return nil, err
	}
	return &listenerv3.ListenerFilter{Name: name, ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: a}}, nil
}

// cluster compiles c; the certificate of its tls goes into sec.
func cluster(c *configv1.Cluster, sec secrets) (*clusterv3.Cluster, error) {
	timeout := durationpb.New(DefaultConnectTimeout)
	if c.GetConnectTimeout() != nil {
		timeout = proto.CloneOf(c.GetConnectTimeout())
	}
	out := &clusterv3.Cluster{
		Name:                 c.GetName(),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{
			EdsConfig: &corev3.ConfigSource{
				ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
				ResourceApiVersion:    corev3.ApiVersion_V3,
			},
		},
		ConnectTimeout: timeout,
	}
	if err := clusterPolicies(out, c); err != nil {
		return nil, err
	}
	if err := httpClusterOptions(out, c); err != nil {
		return nil, err
	}
	if t := c.GetTls(); t != nil {
		ts, err := upstreamTLS(t, sec)
		if err != nil {
			return nil, err
		}
		out.TransportSocket = ts
	}
	if pp := c.GetProxyProtocol(); pp != "" {
		ts, err := upstreamProxyProtocol(pp, out.TransportSocket)
		if err != nil {
			return nil, err
		}
		out.TransportSocket = ts
	}
	return out, nil
}

// upstreamProxyProtocol is the transport socket that sends a PROXY header of
// version ("v1" or "v2") and then runs inner: TLS, or plain TCP (raw_buffer)
// when inner is nil.
func upstreamProxyProtocol(version string, inner *corev3.TransportSocket) (*corev3.TransportSocket, error) {
	var v corev3.ProxyProtocolConfig_Version
	switch version {
	case bundle.ProxyProtocolV1:
		v = corev3.ProxyProtocolConfig_V1
	case bundle.ProxyProtocolV2:
		v = corev3.ProxyProtocolConfig_V2
	default:
		return nil, fmt.Errorf("proxy_protocol %q is not v1 or v2", version)
	}
	if inner == nil {
		raw, err := anypb.New(&rawbufferv3.RawBuffer{})
		if err != nil {
			return nil, err
		}
		inner = &corev3.TransportSocket{
			Name:       wellknown.TransportSocketRawBuffer,
			ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: raw},
		}
	}
	pp, err := anypb.New(&upstreamproxyprotocolv3.ProxyProtocolUpstreamTransport{
		Config:          &corev3.ProxyProtocolConfig{Version: v},
		TransportSocket: inner,
	})
	if err != nil {
		return nil, err
	}
	return &corev3.TransportSocket{Name: UpstreamProxyProtocol, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: pp}}, nil
}

func loadAssignment(c *configv1.Cluster) (*endpointv3.ClusterLoadAssignment, error) {
	lbs := make([]*endpointv3.LbEndpoint, 0, len(c.GetEndpoints()))
	for i, e := range c.GetEndpoints() {
		ap, err := bundle.EndpointAddress(e.GetAddress())
		if err != nil {
			return nil, fmt.Errorf("endpoints[%d]: %w", i, err)
		}
		weight := uint32(DefaultWeight)
		if e.GetWeight() != 0 {
			weight = e.GetWeight()
		}
		lbs = append(lbs, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address:       ap.Addr().String(),
					PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(ap.Port())},
				}}},
			}},
			LoadBalancingWeight: wrapperspb.UInt32(weight),
		})
	}
	return &endpointv3.ClusterLoadAssignment{
		ClusterName: c.GetName(),
		Endpoints:   []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}},
	}, nil
}
