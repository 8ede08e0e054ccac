package runtime

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/flotilla-proxy/flotilla/agent/fieldcheck"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/flotilla-proxy/flotilla/agent/match"
	"github.com/flotilla-proxy/flotilla/agent/tlsconf"
	"github.com/flotilla-proxy/flotilla/agent/upstream"
)

// Envoy's defaults for the fields flotilla-agent honours.
const (
	// DefaultConnectTimeout is a cluster's connect_timeout when unset.
	DefaultConnectTimeout = 5 * time.Second
	// DefaultIdleTimeout is a tcp_proxy's idle_timeout when unset (an explicit 0s disables it).
	DefaultIdleTimeout = time.Hour
	// DefaultMaxConnectAttempts is a tcp_proxy's max_connect_attempts when unset.
	DefaultMaxConnectAttempts = 1
)

// TCPProxyFilterName is the well-known name of the TCP proxy network filter (the other is
// HTTPConnectionManagerFilterName).
// Like Envoy, the agent recognises the filter by its typed_config type, not by this name.
const TCPProxyFilterName = "envoy.filters.network.tcp_proxy"

// tcpProxyTypeURL is the type URL of the tcp_proxy filter's typed_config.
var tcpProxyTypeURL = resourcev3.APITypePrefix + string((&tcpproxyv3.TcpProxy{}).ProtoReflect().Descriptor().FullName())

// Validate checks one resource on its own (decoding is already done), the moment it arrives,
// so that a bad one is NACKed at once. typeURL is the xDS type URL the resource came under
// (resourcev3.ListenerType, RouteType, ClusterType, EndpointType or SecretType); m must be the matching message.
// Validate does not check references between resources: that is Resources.Missing. It
// returns nil or a *ResourceError.
func Validate(typeURL string, m proto.Message) error {
	var err error
	switch typeURL {
	case resourcev3.ListenerType:
		l, ok := m.(*listenerv3.Listener)
		if !ok {
			return wrongType(typeURL, m)
		}
		_, err = parseListener(l)
		if err != nil {
			return &ResourceError{TypeURL: typeURL, Name: l.GetName(), Err: err}
		}
	case resourcev3.ClusterType:
		c, ok := m.(*clusterv3.Cluster)
		if !ok {
			return wrongType(typeURL, m)
		}
		_, err = parseCluster(c)
		if err != nil {
			return &ResourceError{TypeURL: typeURL, Name: c.GetName(), Err: err}
		}
	case resourcev3.EndpointType:
		cla, ok := m.(*endpointv3.ClusterLoadAssignment)
		if !ok {
			return wrongType(typeURL, m)
		}
		_, err = parseLoadAssignment(cla)
		if err != nil {
			return &ResourceError{TypeURL: typeURL, Name: cla.GetClusterName(), Err: err}
		}
	case resourcev3.SecretType:
		sec, ok := m.(*tlsv3.Secret)
		if !ok {
			return wrongType(typeURL, m)
		}
		if err := tlsconf.ValidateSecret(sec); err != nil {
			// ValidateSecret's errors name the secret already; ResourceError does too.
			if inner := errors.Unwrap(err); inner != nil {
				err = inner
			}
			return &ResourceError{TypeURL: typeURL, Name: sec.GetName(), Err: err}
		}
	case resourcev3.RouteType:
		rc, ok := m.(*routev3.RouteConfiguration)
		if !ok {
			return wrongType(typeURL, m)
		}
		return validateRoute(rc)
	default:
		return &ResourceError{TypeURL: typeURL, Err: errors.New("this resource type is not supported by flotilla-agent")}
	}
	return nil
}

// wrongType reports a message that does not match its type URL.
func wrongType(typeURL string, m proto.Message) error {
	got := "nil"
	if m != nil && m.ProtoReflect().IsValid() {
		got = string(m.ProtoReflect().Descriptor().FullName())
	}
	return &ResourceError{TypeURL: typeURL, Err: fmt.Errorf("resource is a %s, not the type its type URL names", got)}
}

// listenerSpec is a parsed listener before its clusters are linked.
type listenerSpec struct {
	name              string
	addr              netip.AddrPort
	v6only            bool
	proxyProtocol     bool
	tlsInspector      bool
	filtersTimeout    time.Duration
	handshakeTimeout  time.Duration
	continueOnTimeout bool
	udp               *udpSpec // a UDP listener's udp_proxy; nil for TCP
	chains            []chainSpec
	defaultChain      chainSpec // cluster "" when none
	maxConnections    uint64    // connection_limit; 0 for none
	matcher           *match.Matcher
}

// accessLogs returns the access logs of the listener's filters.
func (s *listenerSpec) accessLogs() []*AccessLog {
	var out []*AccessLog
	if s.udp != nil && s.udp.accessLog != nil {
		out = append(out, s.udp.accessLog)
	}
	for _, c := range append(s.chains[:len(s.chains):len(s.chains)], s.defaultChain) {
		if c.accessLog != nil {
			out = append(out, c.accessLog)
		}
	}
	return out
}

// parseListener checks a Listener against the supported subset and extracts what the agent
// needs from it.
func parseListener(l *listenerv3.Listener) (*listenerSpec, error) {
	if l == nil {
		return nil, errors.New("resource is empty")
	}
	if err := fieldcheck.Only(l, "", "name", "address", "stat_prefix", "filter_chains", "metadata",
		"listener_filters", "listener_filters_timeout", "continue_on_listener_filters_timeout",
		"default_filter_chain"); err != nil {
		return nil, err
	}
	if l.GetName() == "" {
		return nil, errors.New("name is required")
	}
	addr, v6only, err := parseSocketAddress(l.GetAddress(), "address", true)
	if err != nil {
		return nil, err
	}
	spec := &listenerSpec{name: l.GetName(), addr: addr, v6only: v6only}
	if l.GetAddress().GetSocketAddress().GetProtocol() == corev3.SocketAddress_UDP {
		if err := parseUDPListener(l, spec); err != nil {
			return nil, err
		}
		if err := l.Validate(); err != nil {
			return nil, err
		}
		return spec, nil
	}
	if err := parseListenerFilters(l, spec); err != nil {
		return nil, err
	}
	if err := parseChains(l, spec); err != nil {
		return nil, err
	}
	if err := l.Validate(); err != nil {
		return nil, err
	}
	return spec, nil
}

// parseTCPProxyFilter decodes the typed_config of a listener's network filter, which must be
// a tcp_proxy.
func parseTCPProxyFilter(f *listenerv3.Filter, path string) (*tcpproxyv3.TcpProxy, error) {
	if err := fieldcheck.Only(f, path, "name", "typed_config"); err != nil {
		return nil, err
	}
	tc := f.GetTypedConfig()
	if tc == nil {
		return nil, fmt.Errorf("%s.typed_config is required", path)
	}
	if tc.GetTypeUrl() != tcpProxyTypeURL {
		return nil, fmt.Errorf("%s.typed_config: filter type %q is not supported by flotilla-agent (only %s and %s)", path, tc.GetTypeUrl(), TCPProxyFilterName, HTTPConnectionManagerFilterName)
	}
	tp := &tcpproxyv3.TcpProxy{}
	if err := tc.UnmarshalTo(tp); err != nil {
		return nil, fmt.Errorf("%s.typed_config: %w", path, err)
	}
	return tp, nil
}

// tcpProxiesOf returns the tcp_proxy configs of a listener's chains and default chain that
// decode; malformed ones are skipped (Validate reports them).
func tcpProxiesOf(l *listenerv3.Listener) []*tcpproxyv3.TcpProxy {
	var out []*tcpproxyv3.TcpProxy
	fcs := l.GetFilterChains()
	if d := l.GetDefaultFilterChain(); d != nil {
		fcs = append(fcs[:len(fcs):len(fcs)], d)
	}
	for _, fc := range fcs {
		fs := fc.GetFilters()
		if len(fs) == 0 {
			continue
		}
		if isHTTPFilter(fs[len(fs)-1]) {
			continue
		}
		if tp, err := parseTCPProxyFilter(fs[len(fs)-1], ""); err == nil {
			out = append(out, tp)
		}
	}
	return out
}

// parseSocketAddress checks an Address that must be a socket address with an IP literal
// and a numeric port: TCP, or for listeners also UDP (the caller reads the protocol). Listeners may use port 0 (the kernel picks one) and an unspecified IP;
// endpoints may not. v6only reports whether an IPv6 listener must refuse IPv4 clients
// (ipv4_compat unset).
func parseSocketAddress(a *corev3.Address, path string, listener bool) (addr netip.AddrPort, v6only bool, err error) {
	if a == nil {
		return addr, false, fmt.Errorf("%s is required", path)
	}
	if err := fieldcheck.Only(a, path, "socket_address"); err != nil {
		return addr, false, err
	}
	sa := a.GetSocketAddress()
	if sa == nil {
		return addr, false, fmt.Errorf("%s.socket_address is required", path)
	}
	path += ".socket_address"
	if err := fieldcheck.Only(sa, path, "protocol", "address", "port_value", "ipv4_compat"); err != nil {
		return addr, false, err
	}
	switch p := sa.GetProtocol(); p {
	case corev3.SocketAddress_TCP, corev3.SocketAddress_UDP:
		// A listener's protocol is read by the caller. An endpoint's does not matter: a UDP
		// listener's sessions are UDP and a TCP listener's connections TCP, as in Envoy.
	default:
		return addr, false, fmt.Errorf("%s.protocol %s is not supported by flotilla-agent (TCP or UDP)", path, p)
	}
	ip, err := netip.ParseAddr(sa.GetAddress())
	if err != nil {
		return addr, false, fmt.Errorf("%s.address: %q is not an IP address (flotilla-agent does not resolve host names)", path, sa.GetAddress())
	}
	if ip.Zone() != "" {
		return addr, false, fmt.Errorf("%s.address: %q: IPv6 zones are not supported by flotilla-agent", path, sa.GetAddress())
	}
	ip = ip.Unmap()
	port := sa.GetPortValue()
	if port > 65535 {
		return addr, false, fmt.Errorf("%s.port_value: %d is not a TCP port", path, port)
	}
	if !listener {
		if port == 0 {
			return addr, false, fmt.Errorf("%s.port_value is required (1-65535)", path)
		}
		if ip.IsUnspecified() {
			return addr, false, fmt.Errorf("%s.address: %s is not an upstream address", path, ip)
		}
	}
	return netip.AddrPortFrom(ip, uint16(port)), ip.Is6() && !sa.GetIpv4Compat(), nil
}

// parseCluster checks a Cluster against the supported subset and compiles it. An EDS
// cluster comes back without endpoints; a STATIC one with its inline load_assignment.
func parseCluster(c *clusterv3.Cluster) (*Cluster, error) {
	if c == nil {
		return nil, errors.New("resource is empty")
	}
	if err := fieldcheck.Only(c, "", "name", "alt_stat_name", "type", "eds_cluster_config", "connect_timeout", "lb_policy", "load_assignment", "metadata", "transport_socket",
		"health_checks", "outlier_detection", "circuit_breakers", "common_lb_config",
		"least_request_lb_config", "ring_hash_lb_config", "maglev_lb_config", "round_robin_lb_config",
		"typed_extension_protocol_options"); err != nil {
		return nil, err
	}
	if c.GetName() == "" {
		return nil, errors.New("name is required")
	}
	out := &Cluster{name: c.GetName(), connectTimeout: DefaultConnectTimeout, lb: upstream.ClusterConfig{Name: c.GetName()}}
	switch c.GetType() {
	case clusterv3.Cluster_STATIC:
		if c.EdsClusterConfig != nil {
			return nil, errors.New("eds_cluster_config is only valid for a cluster of type EDS")
		}
		if c.LoadAssignment == nil {
			return nil, errors.New("load_assignment is required for a cluster of type STATIC")
		}
		eps, err := parseEndpoints(c.GetLoadAssignment(), "load_assignment")
		if err != nil {
			return nil, err
		}
		out.setEndpoints(eps)
	case clusterv3.Cluster_EDS:
		if c.LoadAssignment != nil {
			return nil, errors.New("load_assignment is not supported for a cluster of type EDS (its endpoints come from EDS)")
		}
		if err := checkEDSConfig(c.GetEdsClusterConfig()); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("type %s is not supported by flotilla-agent (STATIC or EDS only)", c.GetType())
	}
	for _, parse := range []func(*clusterv3.Cluster, *upstream.ClusterConfig) error{
		parseLB, parseHealthCheck, parseOutlier, parseCircuitBreakers,
	} {
		if err := parse(c, &out.lb); err != nil {
			return nil, err
		}
	}
	if c.ConnectTimeout != nil {
		d, err := duration(c.GetConnectTimeout(), "connect_timeout")
		if err != nil {
			return nil, err
		}
		if d == 0 {
			return nil, errors.New("connect_timeout: must be greater than 0")
		}
		out.connectTimeout = d
	}
	pp, tlsCtx, err := clusterTransport(c)
	if err != nil {
		return nil, err
	}
	out.proxyProtocol, out.tlsCtx = pp, tlsCtx
	if out.http, err = parseClusterHTTP(c); err != nil {
		return nil, err
	}
	out.retryPercent, out.minRetryConcurrency = DefaultRetryBudgetPercent, DefaultMinRetryConcurrency
	for i, t := range c.GetCircuitBreakers().GetThresholds() {
		if rb := t.GetRetryBudget(); rb != nil {
			if out.retryPercent, out.minRetryConcurrency, err = parseRetryBudget(rb, fmt.Sprintf("circuit_breakers.thresholds[%d].retry_budget", i)); err != nil {
				return nil, err
			}
		}
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return out, nil
}

// checkEDSConfig accepts eds_cluster_config{eds_config{ads{}}, service_name}: endpoints come
// over the same ADS stream as everything else.
func checkEDSConfig(ecc *clusterv3.Cluster_EdsClusterConfig) error {
	const path = "eds_cluster_config"
	if ecc == nil {
		return errors.New(path + " is required for a cluster of type EDS")
	}
	if err := fieldcheck.Only(ecc, path, "eds_config", "service_name"); err != nil {
		return err
	}
	cs := ecc.GetEdsConfig()
	if cs == nil {
		return errors.New(path + ".eds_config is required")
	}
	if err := fieldcheck.Only(cs, path+".eds_config", "ads", "resource_api_version"); err != nil {
		return err
	}
	if cs.GetAds() == nil {
		return errors.New(path + ".eds_config.ads is required (flotilla-agent fetches endpoints over ADS only)")
	}
	if err := fieldcheck.Only(cs.GetAds(), path+".eds_config.ads"); err != nil {
		return err
	}
	if v := cs.GetResourceApiVersion(); v != corev3.ApiVersion_AUTO && v != corev3.ApiVersion_V3 {
		return fmt.Errorf("%s.eds_config.resource_api_version %s is not supported by flotilla-agent (V3 only)", path, v)
	}
	return nil
}

// parseLoadAssignment checks a ClusterLoadAssignment delivered over EDS.
func parseLoadAssignment(cla *endpointv3.ClusterLoadAssignment) ([]Endpoint, error) {
	if cla == nil {
		return nil, errors.New("resource is empty")
	}
	if cla.GetClusterName() == "" {
		return nil, errors.New("cluster_name is required")
	}
	eps, err := parseEndpoints(cla, "")
	if err != nil {
		return nil, err
	}
	if err := cla.Validate(); err != nil {
		return nil, err
	}
	return eps, nil
}

// parseEndpoints checks a ClusterLoadAssignment (top level when path is "", else inline in a
// STATIC cluster) and returns the endpoints that take traffic: those whose health_status is
// UNKNOWN or HEALTHY. Like Envoy, UNHEALTHY, DRAINING, TIMEOUT and DEGRADED endpoints are
// left out.
func parseEndpoints(cla *endpointv3.ClusterLoadAssignment, path string) ([]Endpoint, error) {
	if err := fieldcheck.Only(cla, path, "cluster_name", "endpoints"); err != nil {
		return nil, err
	}
	var eps []Endpoint
	for i, lle := range cla.GetEndpoints() {
		p := fmt.Sprintf("%s[%d]", fieldcheck.Join(path, "endpoints"), i)
		// Locality and locality weights only matter with zone-aware or locality-weighted
		// load balancing, which a cluster cannot enable here; Envoy ignores them too.
		if err := fieldcheck.Only(lle, p, "locality", "metadata", "lb_endpoints", "load_balancing_weight", "priority"); err != nil {
			return nil, err
		}
		if lle.GetPriority() != 0 {
			return nil, fmt.Errorf("%s.priority %d is not supported by flotilla-agent (priority 0 only)", p, lle.GetPriority())
		}
		for j, lbe := range lle.GetLbEndpoints() {
			q := fmt.Sprintf("%s.lb_endpoints[%d]", p, j)
			if err := fieldcheck.Only(lbe, q, "endpoint", "health_status", "metadata", "load_balancing_weight"); err != nil {
				return nil, err
			}
			ep := lbe.GetEndpoint()
			if ep == nil {
				return nil, fmt.Errorf("%s.endpoint is required", q)
			}
			if err := fieldcheck.Only(ep, q+".endpoint", "address"); err != nil {
				return nil, err
			}
			addr, _, err := parseSocketAddress(ep.GetAddress(), q+".endpoint.address", false)
			if err != nil {
				return nil, err
			}
			weight := uint32(1)
			if lbe.LoadBalancingWeight != nil {
				if weight = lbe.GetLoadBalancingWeight().GetValue(); weight == 0 {
					return nil, fmt.Errorf("%s.load_balancing_weight: must be at least 1", q)
				}
			}
			switch lbe.GetHealthStatus() {
			case corev3.HealthStatus_UNKNOWN, corev3.HealthStatus_HEALTHY:
				eps = append(eps, Endpoint{Addr: addr, Weight: weight})
			}
		}
	}
	return eps, nil
}

// duration converts a non-negative protobuf Duration.
func duration(d *durationpb.Duration, path string) (time.Duration, error) {
	if err := d.CheckValid(); err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	v := d.AsDuration()
	if v < 0 {
		return 0, fmt.Errorf("%s: must not be negative, got %s", path, v)
	}
	return v, nil
}
