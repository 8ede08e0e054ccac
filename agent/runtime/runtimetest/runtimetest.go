// Package runtimetest builds Envoy v3 resources of the exact shape flotilla-agent supports
// (and the control plane's compiler emits), for tests of the agent's runtime, data plane and
// xDS client. Every builder returns a fresh message that the caller may modify.
package runtimetest

import (
	"fmt"
	"net/netip"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	proxyprotocolv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/proxy_protocol/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	connlimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/connection_limit/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	udpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/udp/udp_proxy/v3"
	upstreamppv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/proxy_protocol/v3"
	rawbufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TCPProxy returns a tcp_proxy config sending to cluster, with the compiler's defaults:
// stat_prefix = cluster, idle_timeout 1h, max_connect_attempts 3.
func TCPProxy(cluster string) *tcpproxyv3.TcpProxy {
	return &tcpproxyv3.TcpProxy{
		StatPrefix:         cluster,
		ClusterSpecifier:   &tcpproxyv3.TcpProxy_Cluster{Cluster: cluster},
		IdleTimeout:        durationpb.New(time.Hour),
		MaxConnectAttempts: wrapperspb.UInt32(3),
	}
}

// Listener returns a listener on ip:port (port 0: any free port) whose single filter chain
// runs TCPProxy(cluster). For ip "::" it sets ipv4_compat (dual stack), as the compiler does.
func Listener(name, ip string, port uint32, cluster string) *listenerv3.Listener {
	l := ListenerTCP(name, ip, port, TCPProxy(cluster))
	if ip == "::" {
		l.GetAddress().GetSocketAddress().Ipv4Compat = true
	}
	return l
}

// ListenerTCP returns a listener on ip:port whose single filter chain runs tp.
func ListenerTCP(name, ip string, port uint32, tp *tcpproxyv3.TcpProxy) *listenerv3.Listener {
	tc, err := anypb.New(tp)
	if err != nil {
		panic(fmt.Sprintf("runtimetest: marshal tcp_proxy: %v", err))
	}
	return &listenerv3.Listener{
		Name:    name,
		Address: SocketAddress(ip, port),
		FilterChains: []*listenerv3.FilterChain{{
			Filters: []*listenerv3.Filter{{
				Name:       "envoy.filters.network.tcp_proxy",
				ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: tc},
			}},
		}},
	}
}

// SocketAddress returns a TCP socket address.
func SocketAddress(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       ip,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// EDSCluster returns a cluster of type EDS fetching its endpoints over ADS, with a 5s
// connect timeout and round robin, as the compiler emits it.
func EDSCluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{
			EdsConfig: &corev3.ConfigSource{
				ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
				ResourceApiVersion:    corev3.ApiVersion_V3,
			},
		},
		ConnectTimeout: durationpb.New(5 * time.Second),
		LbPolicy:       clusterv3.Cluster_ROUND_ROBIN,
	}
}

// StaticCluster returns a cluster of type STATIC with its endpoints inline.
func StaticCluster(name string, eps ...*endpointv3.LbEndpoint) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(5 * time.Second),
		LoadAssignment:       LoadAssignment(name, eps...),
	}
}

// LoadAssignment returns the endpoints of a cluster in one locality at priority 0.
func LoadAssignment(cluster string, eps ...*endpointv3.LbEndpoint) *endpointv3.ClusterLoadAssignment {
	return &endpointv3.ClusterLoadAssignment{
		ClusterName: cluster,
		Endpoints:   []*endpointv3.LocalityLbEndpoints{{LbEndpoints: eps}},
	}
}

// Endpoint returns an endpoint at addr ("192.0.2.1:80", "[2001:db8::1]:80") with a weight.
// It panics on a malformed address.
func Endpoint(addr string, weight uint32) *endpointv3.LbEndpoint {
	ap := netip.MustParseAddrPort(addr)
	return &endpointv3.LbEndpoint{
		HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: SocketAddress(ap.Addr().String(), uint32(ap.Port())),
		}},
		LoadBalancingWeight: wrapperspb.UInt32(weight),
	}
}

// ProxyProtocolFilter returns the proxy_protocol listener filter with its defaults (a v1 or
// v2 header required), as the compiler emits it.
func ProxyProtocolFilter() *listenerv3.ListenerFilter {
	return &listenerv3.ListenerFilter{
		Name:       "envoy.filters.listener.proxy_protocol",
		ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(&proxyprotocolv3.ProxyProtocol{})},
	}
}

// TLSInspectorFilter returns the tls_inspector listener filter with its defaults.
func TLSInspectorFilter() *listenerv3.ListenerFilter {
	return &listenerv3.ListenerFilter{
		Name:       "envoy.filters.listener.tls_inspector",
		ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(&tlsinspectorv3.TlsInspector{})},
	}
}

// FilterChain returns a filter chain named name with match m (nil: none) running tp.
func FilterChain(name string, m *listenerv3.FilterChainMatch, tp *tcpproxyv3.TcpProxy) *listenerv3.FilterChain {
	return &listenerv3.FilterChain{
		Name:             name,
		FilterChainMatch: m,
		Filters: []*listenerv3.Filter{{
			Name:       "envoy.filters.network.tcp_proxy",
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(tp)},
		}},
	}
}

// CIDR returns a CidrRange from "10.0.0.0/8"; a bare IP means the whole address. It panics
// on a malformed prefix.
func CIDR(s string) *corev3.CidrRange {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		a := netip.MustParseAddr(s)
		p = netip.PrefixFrom(a, a.BitLen())
	}
	return &corev3.CidrRange{AddressPrefix: p.Addr().String(), PrefixLen: wrapperspb.UInt32(uint32(p.Bits()))}
}

// UpstreamProxyProtocol returns the upstream_proxy_protocol transport socket sending the
// given PROXY protocol version (1 or 2) over raw_buffer, as the compiler emits it.
func UpstreamProxyProtocol(version int) *corev3.TransportSocket {
	return upstreamProxyProtocol(version, &corev3.TransportSocket{
		Name:       "envoy.transport_sockets.raw_buffer",
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(&rawbufferv3.RawBuffer{})},
	})
}

// upstreamProxyProtocol is the upstream_proxy_protocol transport socket sending the given
// PROXY protocol version (1 or 2), then speaking inner.
func upstreamProxyProtocol(version int, inner *corev3.TransportSocket) *corev3.TransportSocket {
	v := corev3.ProxyProtocolConfig_V1
	if version == 2 {
		v = corev3.ProxyProtocolConfig_V2
	}
	return &corev3.TransportSocket{
		Name: "envoy.transport_sockets.upstream_proxy_protocol",
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(&upstreamppv3.ProxyProtocolUpstreamTransport{
			Config:          &corev3.ProxyProtocolConfig{Version: v},
			TransportSocket: inner,
		})},
	}
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(fmt.Sprintf("runtimetest: marshal %T: %v", m, err))
	}
	return a
}

// ConnectionLimit returns a connection_limit network filter allowing max open connections,
// as the compiler puts it before a listener's tcp_proxy.
func ConnectionLimit(statPrefix string, max uint64) *listenerv3.Filter {
	return &listenerv3.Filter{
		Name: "envoy.filters.network.connection_limit",
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(&connlimitv3.ConnectionLimit{
			StatPrefix:     statPrefix,
			MaxConnections: wrapperspb.UInt64(max),
		})},
	}
}

// WithConnectionLimit puts ConnectionLimit(l.Name, max) before the tcp_proxy of every chain
// of l (and its default chain) and returns l.
func WithConnectionLimit(l *listenerv3.Listener, max uint64) *listenerv3.Listener {
	fcs := l.GetFilterChains()
	if d := l.GetDefaultFilterChain(); d != nil {
		fcs = append(fcs[:len(fcs):len(fcs)], d)
	}
	for _, fc := range fcs {
		fc.Filters = append([]*listenerv3.Filter{ConnectionLimit(l.GetName(), max)}, fc.Filters...)
	}
	return l
}

// HealthCheck returns a health check with the given interval and thresholds, a timeout of
// one second and no checker: set TcpHealthCheck or HttpHealthCheck via HealthChecker.
func HealthCheck(interval time.Duration, healthy, unhealthy uint32) *corev3.HealthCheck {
	return &corev3.HealthCheck{
		Timeout:            durationpb.New(time.Second),
		Interval:           durationpb.New(interval),
		HealthyThreshold:   wrapperspb.UInt32(healthy),
		UnhealthyThreshold: wrapperspb.UInt32(unhealthy),
	}
}

// TCPHealthCheck sets a connect-only tcp_health_check on hc and returns it.
func TCPHealthCheck(hc *corev3.HealthCheck) *corev3.HealthCheck {
	hc.HealthChecker = &corev3.HealthCheck_TcpHealthCheck_{TcpHealthCheck: &corev3.HealthCheck_TcpHealthCheck{}}
	return hc
}

// HTTPHealthCheck sets an http_health_check of path, passing on 200 only, on hc and
// returns it.
func HTTPHealthCheck(hc *corev3.HealthCheck, path string) *corev3.HealthCheck {
	hc.HealthChecker = &corev3.HealthCheck_HttpHealthCheck_{HttpHealthCheck: &corev3.HealthCheck_HttpHealthCheck{
		Path:             path,
		ExpectedStatuses: []*typev3.Int64Range{{Start: 200, End: 201}},
	}}
	return hc
}

// OutlierDetection returns the outlier detection the compiler emits: consecutive connect
// failures eject a host for base × times ejected.
func OutlierDetection(consecutive uint32, base time.Duration, maxPercent uint32) *clusterv3.OutlierDetection {
	return &clusterv3.OutlierDetection{
		Consecutive_5Xx:          wrapperspb.UInt32(consecutive),
		EnforcingConsecutive_5Xx: wrapperspb.UInt32(100),
		BaseEjectionTime:         durationpb.New(base),
		MaxEjectionPercent:       wrapperspb.UInt32(maxPercent),
		Interval:                 durationpb.New(10 * time.Second),
	}
}

// CircuitBreakers returns circuit_breakers with one DEFAULT threshold of max connections.
func CircuitBreakers(max uint32) *clusterv3.CircuitBreakers {
	return &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		Priority:       corev3.RoutingPriority_DEFAULT,
		MaxConnections: wrapperspb.UInt32(max),
	}}}
}

// HashSourceIP returns tp with hash_policy source_ip, as the compiler emits for ring hash
// and Maglev clusters.
func HashSourceIP(tp *tcpproxyv3.TcpProxy) *tcpproxyv3.TcpProxy {
	tp.HashPolicy = []*typev3.HashPolicy{{PolicySpecifier: &typev3.HashPolicy_SourceIp_{SourceIp: &typev3.HashPolicy_SourceIp{}}}}
	return tp
}

// UDPListener returns a UDP listener on ip:port whose udp_proxy sends to cluster with the
// given idle timeout (0: unset), as the compiler emits it.
func UDPListener(name, ip string, port uint32, cluster string, idle time.Duration) *listenerv3.Listener {
	cfg := &udpproxyv3.UdpProxyConfig{
		StatPrefix:     name,
		RouteSpecifier: &udpproxyv3.UdpProxyConfig_Cluster{Cluster: cluster},
	}
	if idle > 0 {
		cfg.IdleTimeout = durationpb.New(idle)
	}
	return UDPListenerConfig(name, ip, port, cfg)
}

// UDPListenerConfig returns a UDP listener on ip:port running cfg.
func UDPListenerConfig(name, ip string, port uint32, cfg *udpproxyv3.UdpProxyConfig) *listenerv3.Listener {
	addr := SocketAddress(ip, port)
	addr.GetSocketAddress().Protocol = corev3.SocketAddress_UDP
	return &listenerv3.Listener{
		Name:    name,
		Address: addr,
		ListenerFilters: []*listenerv3.ListenerFilter{{
			Name:       "envoy.filters.udp_listener.udp_proxy",
			ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(cfg)},
		}},
	}
}

// UDPProxyOf returns the udp_proxy config of a listener built by UDPListener, decoded; set
// it back with SetUDPProxy after changing it.
func UDPProxyOf(l *listenerv3.Listener) *udpproxyv3.UdpProxyConfig {
	cfg := &udpproxyv3.UdpProxyConfig{}
	if err := l.GetListenerFilters()[0].GetTypedConfig().UnmarshalTo(cfg); err != nil {
		panic(fmt.Sprintf("runtimetest: %v", err))
	}
	return cfg
}

// SetUDPProxy replaces the udp_proxy config of a listener built by UDPListener.
func SetUDPProxy(l *listenerv3.Listener, cfg *udpproxyv3.UdpProxyConfig) {
	l.ListenerFilters[0].ConfigType = &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(cfg)}
}

// FileAccessLog returns an envoy.access_loggers.file writing to path: with json (keys to
// command operators) when json is not nil, else with the text format.
func FileAccessLog(path, text string, json map[string]string) *accesslogv3.AccessLog {
	lf := &corev3.SubstitutionFormatString{}
	if json != nil {
		fields := map[string]any{}
		for k, v := range json {
			fields[k] = v
		}
		s, err := structpb.NewStruct(fields)
		if err != nil {
			panic(fmt.Sprintf("runtimetest: %v", err))
		}
		lf.Format = &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: s}
	} else {
		lf.Format = &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: &corev3.DataSource{
			Specifier: &corev3.DataSource_InlineString{InlineString: text},
		}}
	}
	return &accesslogv3.AccessLog{
		Name: "envoy.access_loggers.file",
		ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: mustAny(&filev3.FileAccessLog{
			Path:            path,
			AccessLogFormat: &filev3.FileAccessLog_LogFormat{LogFormat: lf},
		})},
	}
}
