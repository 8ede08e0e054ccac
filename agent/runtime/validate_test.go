package runtime_test

import (
	"errors"
	"testing"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/flotilla-proxy/flotilla/agent/runtime"
	"github.com/flotilla-proxy/flotilla/agent/runtime/runtimetest"
)

// listener returns the compiler-shaped listener "web" on 0.0.0.0:8080 → cluster "backend",
// after applying edit.
func listener(edit func(l *listenerv3.Listener)) *listenerv3.Listener {
	l := runtimetest.Listener("web", "0.0.0.0", 8080, "backend")
	if edit != nil {
		edit(l)
	}
	return l
}

// withTCPProxy returns a listener "web" whose tcp_proxy is TCPProxy("backend") after edit.
func withTCPProxy(edit func(tp *tcpproxyv3.TcpProxy)) *listenerv3.Listener {
	tp := runtimetest.TCPProxy("backend")
	edit(tp)
	return runtimetest.ListenerTCP("web", "0.0.0.0", 8080, tp)
}

// eds returns the compiler-shaped EDS cluster "backend" after edit.
func eds(edit func(c *clusterv3.Cluster)) *clusterv3.Cluster {
	c := runtimetest.EDSCluster("backend")
	if edit != nil {
		edit(c)
	}
	return c
}

// cla returns a load assignment for "backend" with two endpoints after edit.
func cla(edit func(a *endpointv3.ClusterLoadAssignment)) *endpointv3.ClusterLoadAssignment {
	a := runtimetest.LoadAssignment("backend",
		runtimetest.Endpoint("192.0.2.1:80", 1),
		runtimetest.Endpoint("[2001:db8::1]:80", 3))
	if edit != nil {
		edit(a)
	}
	return a
}

// withUnknownField re-decodes m with an extra field number 999 appended, as a message from
// a newer Envoy API would arrive.
func withUnknownField[M proto.Message](m M) M {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	b = protowire.AppendTag(b, 999, protowire.VarintType)
	b = protowire.AppendVarint(b, 1)
	out := m.ProtoReflect().New().Interface().(M)
	if err := proto.Unmarshal(b, out); err != nil {
		panic(err)
	}
	return out
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(err)
	}
	return a
}

func TestValidate(t *testing.T) {
	const (
		lds     = resourcev3.ListenerType
		cds     = resourcev3.ClusterType
		edsType = resourcev3.EndpointType
	)
	tests := []struct {
		name    string
		typeURL string
		msg     proto.Message
		want    string // "" means valid
	}{
		// Listeners.
		{"listener as compiled", lds, listener(nil), ""},
		{"listener dual stack", lds, runtimetest.Listener("web", "::", 4242, "backend"), ""},
		{"listener IPv6 only", lds, listener(func(l *listenerv3.Listener) {
			l.Address = runtimetest.SocketAddress("::", 4242)
		}), ""},
		{"listener port 0", lds, runtimetest.Listener("web", "127.0.0.1", 0, "backend"), ""},
		{"listener empty filter_chain_match", lds, listener(func(l *listenerv3.Listener) {
			l.FilterChains[0].FilterChainMatch = &listenerv3.FilterChainMatch{}
		}), ""},
		{"listener ignored fields", lds, listener(func(l *listenerv3.Listener) {
			l.StatPrefix = "web"
			l.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"x": {}}}
			l.FilterChains[0].Name = "main"
		}), ""},
		{"listener minimal tcp_proxy", lds, runtimetest.ListenerTCP("web", "0.0.0.0", 80, &tcpproxyv3.TcpProxy{
			StatPrefix: "web", ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: "backend"},
		}), ""},
		{"listener_filters without typed_config", lds, listener(func(l *listenerv3.Listener) {
			l.ListenerFilters = []*listenerv3.ListenerFilter{{Name: "envoy.filters.listener.tls_inspector"}}
		}), `listener "web": listener_filters[0].typed_config is required`},
		{"use_original_dst", lds, listener(func(l *listenerv3.Listener) {
			l.UseOriginalDst = wrapperspb.Bool(true)
		}), `listener "web": use_original_dst is not supported by flotilla-agent`},
		{"per_connection_buffer_limit_bytes", lds, listener(func(l *listenerv3.Listener) {
			l.PerConnectionBufferLimitBytes = wrapperspb.UInt32(1024)
		}), `listener "web": per_connection_buffer_limit_bytes is not supported by flotilla-agent`},
		{"listener access_log", lds, listener(func(l *listenerv3.Listener) {
			l.AccessLog = []*accesslogv3.AccessLog{{Name: "stdout"}}
		}), `listener "web": access_log is not supported by flotilla-agent`},
		{"udp_listener_config", lds, listener(func(l *listenerv3.Listener) {
			l.UdpListenerConfig = &listenerv3.UdpListenerConfig{}
		}), `listener "web": udp_listener_config is not supported by flotilla-agent`},
		{"default_filter_chain with a match", lds, listener(func(l *listenerv3.Listener) {
			l.DefaultFilterChain = runtimetest.FilterChain("default", &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(1)}, runtimetest.TCPProxy("backend"))
		}), `listener "web": default_filter_chain.filter_chain_match: must be empty (the default chain takes what no chain matches)`},
		{"filter_chain_match source_ports", lds, listener(func(l *listenerv3.Listener) {
			l.FilterChains[0].FilterChainMatch = &listenerv3.FilterChainMatch{ServerNames: []string{"example.com"}, SourcePorts: []uint32{80}}
		}), `listener "web": filter_chains[0].filter_chain_match.source_ports is not supported by flotilla-agent`},
		{"transport_socket", lds, listener(func(l *listenerv3.Listener) {
			l.FilterChains[0].TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls"}
		}), `listener "web": filter_chains[0].transport_socket.typed_config is required`},
		{"two filter chains", lds, listener(func(l *listenerv3.Listener) {
			l.FilterChains = append(l.FilterChains, l.FilterChains[0])
		}), `listener "web": filter_chains[0] and filter_chains[1] have the same filter_chain_match (multiple filter chains with the same matching rules)`},
		{"no filter chain", lds, listener(func(l *listenerv3.Listener) {
			l.FilterChains = nil
		}), `listener "web": filter_chains: at least one filter chain or a default_filter_chain is required`},
		{"two filters", lds, listener(func(l *listenerv3.Listener) {
			l.FilterChains[0].Filters = append(l.FilterChains[0].Filters, l.FilterChains[0].Filters[0])
		}), `listener "web": filter_chains[0].filters[0].typed_config: only envoy.filters.network.connection_limit may come before envoy.filters.network.tcp_proxy or envoy.filters.network.http_connection_manager`},
		{"three filters", lds, listener(func(l *listenerv3.Listener) {
			fs := l.FilterChains[0].Filters
			l.FilterChains[0].Filters = append(fs, fs[0], fs[0])
		}), `listener "web": filter_chains[0].filters: flotilla-agent supports a envoy.filters.network.tcp_proxy or envoy.filters.network.http_connection_manager, optionally preceded by a envoy.filters.network.connection_limit; got 3 filters`},
		{"http_connection_manager", lds, listener(func(l *listenerv3.Listener) {
			l.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(&hcmv3.HttpConnectionManager{StatPrefix: "web"})}
		}), `listener "web": filter_chains[0].filters[0].typed_config.rds is required (flotilla-agent takes route configurations over RDS only; route_config and scoped_routes are not supported)`},
		{"filter config_discovery", lds, listener(func(l *listenerv3.Listener) {
			l.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_ConfigDiscovery{ConfigDiscovery: &corev3.ExtensionConfigSource{}}
		}), `listener "web": filter_chains[0].filters[0].config_discovery is not supported by flotilla-agent`},
		{"weighted_clusters", lds, withTCPProxy(func(tp *tcpproxyv3.TcpProxy) {
			tp.ClusterSpecifier = &tcpproxyv3.TcpProxy_WeightedClusters{WeightedClusters: &tcpproxyv3.TcpProxy_WeightedCluster{}}
		}), `listener "web": filter_chains[0].filters[0].typed_config.weighted_clusters is not supported by flotilla-agent`},
		{"tcp_proxy access_log without file logger", lds, withTCPProxy(func(tp *tcpproxyv3.TcpProxy) {
			tp.AccessLog = []*accesslogv3.AccessLog{{Name: "stdout"}}
		}), `listener "web": filter_chains[0].filters[0].typed_config.access_log[0].typed_config: only envoy.access_loggers.file is supported by flotilla-agent`},
		{"tcp_proxy downstream_idle_timeout", lds, withTCPProxy(func(tp *tcpproxyv3.TcpProxy) {
			tp.DownstreamIdleTimeout = durationpb.New(time.Second)
		}), `listener "web": filter_chains[0].filters[0].typed_config.downstream_idle_timeout is not supported by flotilla-agent`},
		{"tcp_proxy without cluster", lds, withTCPProxy(func(tp *tcpproxyv3.TcpProxy) {
			tp.ClusterSpecifier = nil
		}), `listener "web": filter_chains[0].filters[0].typed_config.cluster is required`},
		{"tcp_proxy negative idle_timeout", lds, withTCPProxy(func(tp *tcpproxyv3.TcpProxy) {
			tp.IdleTimeout = durationpb.New(-time.Second)
		}), `listener "web": filter_chains[0].filters[0].typed_config.idle_timeout: must not be negative, got -1s`},
		{"tcp_proxy zero max_connect_attempts", lds, withTCPProxy(func(tp *tcpproxyv3.TcpProxy) {
			tp.MaxConnectAttempts = wrapperspb.UInt32(0)
		}), `listener "web": filter_chains[0].filters[0].typed_config.max_connect_attempts: must be at least 1, got 0`},
		{"tcp_proxy empty stat_prefix (Envoy's own rule)", lds, withTCPProxy(func(tp *tcpproxyv3.TcpProxy) {
			tp.StatPrefix = ""
		}), `listener "web": filter_chains[0].filters[0].typed_config: invalid TcpProxy.StatPrefix: value length must be at least 1 runes`},
		{"tcp_proxy unknown field", lds, withTCPProxy(func(tp *tcpproxyv3.TcpProxy) {
			*tp = *withUnknownField(tp)
		}), `listener "web": filter_chains[0].filters[0].typed_config carries field number 999, which flotilla-agent does not know (an Envoy API newer than the agent?)`},
		{"listener unknown field", lds, withUnknownField(listener(nil)),
			`listener "web": resource carries field number 999, which flotilla-agent does not know (an Envoy API newer than the agent?)`},
		{"listener without name", lds, listener(func(l *listenerv3.Listener) { l.Name = "" }),
			`listener: name is required`},
		{"listener without address", lds, listener(func(l *listenerv3.Listener) { l.Address = nil }),
			`listener "web": address is required`},
		{"listener host name", lds, listener(func(l *listenerv3.Listener) {
			l.Address = runtimetest.SocketAddress("localhost", 80)
		}), `listener "web": address.socket_address.address: "localhost" is not an IP address (flotilla-agent does not resolve host names)`},
		{"listener IPv6 zone", lds, listener(func(l *listenerv3.Listener) {
			l.Address = runtimetest.SocketAddress("fe80::1%eth0", 80)
		}), `listener "web": address.socket_address.address: "fe80::1%eth0": IPv6 zones are not supported by flotilla-agent`},
		{"UDP listener with filter chains", lds, listener(func(l *listenerv3.Listener) {
			l.Address.GetSocketAddress().Protocol = corev3.SocketAddress_UDP
		}), `listener "web": filter_chains is not supported by flotilla-agent (a UDP listener has a envoy.filters.udp_listener.udp_proxy listener filter and no filter chains)`},
		{"listener named_port", lds, listener(func(l *listenerv3.Listener) {
			l.Address.GetSocketAddress().PortSpecifier = &corev3.SocketAddress_NamedPort{NamedPort: "http"}
		}), `listener "web": address.socket_address.named_port is not supported by flotilla-agent`},
		{"listener port out of range", lds, listener(func(l *listenerv3.Listener) {
			l.Address = runtimetest.SocketAddress("0.0.0.0", 70000)
		}), `listener "web": address.socket_address.port_value: 70000 is not a TCP port`},
		{"listener pipe", lds, listener(func(l *listenerv3.Listener) {
			l.Address = &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: "/run/x.sock"}}}
		}), `listener "web": address.pipe is not supported by flotilla-agent`},

		// Clusters.
		{"EDS cluster as compiled", cds, eds(nil), ""},
		{"EDS cluster defaults", cds, &clusterv3.Cluster{
			Name:                 "backend",
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{
				EdsConfig: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}},
			},
		}, ""},
		{"EDS cluster with service_name", cds, eds(func(c *clusterv3.Cluster) {
			c.EdsClusterConfig.ServiceName = "backend-v2"
		}), ""},
		{"STATIC cluster", cds, runtimetest.StaticCluster("backend", runtimetest.Endpoint("192.0.2.1:80", 1)), ""},
		{"STATIC cluster without load_assignment", cds, &clusterv3.Cluster{Name: "backend"},
			`cluster "backend": load_assignment is required for a cluster of type STATIC`},
		{"STATIC cluster with bad endpoint", cds, runtimetest.StaticCluster("backend", &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: runtimetest.SocketAddress("db.internal", 5432)}},
		}), `cluster "backend": load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address: "db.internal" is not an IP address (flotilla-agent does not resolve host names)`},
		{"STRICT_DNS cluster", cds, eds(func(c *clusterv3.Cluster) {
			c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
			c.EdsClusterConfig = nil
		}), `cluster "backend": type STRICT_DNS is not supported by flotilla-agent (STATIC or EDS only)`},
		{"custom cluster_type", cds, eds(func(c *clusterv3.Cluster) {
			c.ClusterDiscoveryType = &clusterv3.Cluster_ClusterType{ClusterType: &clusterv3.Cluster_CustomClusterType{Name: "x"}}
		}), `cluster "backend": cluster_type is not supported by flotilla-agent`},
		{"lb_policy CLUSTER_PROVIDED", cds, eds(func(c *clusterv3.Cluster) {
			c.LbPolicy = clusterv3.Cluster_CLUSTER_PROVIDED
		}), `cluster "backend": lb_policy CLUSTER_PROVIDED is not supported by flotilla-agent (ROUND_ROBIN, LEAST_REQUEST, RING_HASH, MAGLEV or RANDOM)`},
		{"empty health check", cds, eds(func(c *clusterv3.Cluster) {
			c.HealthChecks = []*corev3.HealthCheck{{}}
		}), `cluster "backend": health_checks[0].timeout is required`},
		{"empty circuit_breakers", cds, eds(func(c *clusterv3.Cluster) {
			c.CircuitBreakers = &clusterv3.CircuitBreakers{}
		}), ""},
		{"cluster transport_socket without typed_config", cds, eds(func(c *clusterv3.Cluster) {
			c.TransportSocket = &corev3.TransportSocket{Name: "tls"}
		}), `cluster "backend": transport_socket.typed_config is required`},
		{"EDS from a file", cds, eds(func(c *clusterv3.Cluster) {
			c.EdsClusterConfig.EdsConfig.ConfigSourceSpecifier = &corev3.ConfigSource_Path{Path: "/etc/eds.yaml"}
		}), `cluster "backend": eds_cluster_config.eds_config.path is not supported by flotilla-agent`},
		{"EDS initial_fetch_timeout", cds, eds(func(c *clusterv3.Cluster) {
			c.EdsClusterConfig.EdsConfig.InitialFetchTimeout = durationpb.New(time.Second)
		}), `cluster "backend": eds_cluster_config.eds_config.initial_fetch_timeout is not supported by flotilla-agent`},
		{"EDS without eds_cluster_config", cds, eds(func(c *clusterv3.Cluster) {
			c.EdsClusterConfig = nil
		}), `cluster "backend": eds_cluster_config is required for a cluster of type EDS`},
		{"EDS V2", cds, eds(func(c *clusterv3.Cluster) {
			c.EdsClusterConfig.EdsConfig.ResourceApiVersion = corev3.ApiVersion_V2
		}), `cluster "backend": eds_cluster_config.eds_config.resource_api_version V2 is not supported by flotilla-agent (V3 only)`},
		{"EDS with load_assignment", cds, eds(func(c *clusterv3.Cluster) {
			c.LoadAssignment = runtimetest.LoadAssignment("backend")
		}), `cluster "backend": load_assignment is not supported for a cluster of type EDS (its endpoints come from EDS)`},
		{"zero connect_timeout", cds, eds(func(c *clusterv3.Cluster) {
			c.ConnectTimeout = durationpb.New(0)
		}), `cluster "backend": connect_timeout: must be greater than 0`},
		{"cluster unknown field", cds, withUnknownField(eds(nil)),
			`cluster "backend": resource carries field number 999, which flotilla-agent does not know (an Envoy API newer than the agent?)`},

		// Load assignments.
		{"load assignment", edsType, cla(nil), ""},
		{"load assignment empty", edsType, runtimetest.LoadAssignment("backend"), ""},
		{"load assignment ignored fields", edsType, cla(func(a *endpointv3.ClusterLoadAssignment) {
			a.Endpoints[0].Locality = &corev3.Locality{Region: "eu", Zone: "ams1"}
			a.Endpoints[0].LoadBalancingWeight = wrapperspb.UInt32(10)
			a.Endpoints[0].LbEndpoints[0].HealthStatus = corev3.HealthStatus_UNHEALTHY
			a.Endpoints[0].LbEndpoints[1].Metadata = &corev3.Metadata{}
		}), ""},
		{"load assignment without cluster_name", edsType, cla(func(a *endpointv3.ClusterLoadAssignment) {
			a.ClusterName = ""
		}), `load assignment: cluster_name is required`},
		{"priority 1", edsType, cla(func(a *endpointv3.ClusterLoadAssignment) {
			a.Endpoints = append(a.Endpoints, &endpointv3.LocalityLbEndpoints{Priority: 1})
		}), `load assignment "backend": endpoints[1].priority 1 is not supported by flotilla-agent (priority 0 only)`},
		{"policy", edsType, cla(func(a *endpointv3.ClusterLoadAssignment) {
			a.Policy = &endpointv3.ClusterLoadAssignment_Policy{OverprovisioningFactor: wrapperspb.UInt32(100)}
		}), `load assignment "backend": policy is not supported by flotilla-agent`},
		{"endpoint_name", edsType, cla(func(a *endpointv3.ClusterLoadAssignment) {
			a.Endpoints[0].LbEndpoints[1].HostIdentifier = &endpointv3.LbEndpoint_EndpointName{EndpointName: "x"}
		}), `load assignment "backend": endpoints[0].lb_endpoints[1].endpoint_name is not supported by flotilla-agent`},
		{"endpoint health_check_config", edsType, cla(func(a *endpointv3.ClusterLoadAssignment) {
			a.Endpoints[0].LbEndpoints[0].GetEndpoint().HealthCheckConfig = &endpointv3.Endpoint_HealthCheckConfig{PortValue: 9}
		}), `load assignment "backend": endpoints[0].lb_endpoints[0].endpoint.health_check_config is not supported by flotilla-agent`},
		{"endpoint weight 0", edsType, cla(func(a *endpointv3.ClusterLoadAssignment) {
			a.Endpoints[0].LbEndpoints[0].LoadBalancingWeight = wrapperspb.UInt32(0)
		}), `load assignment "backend": endpoints[0].lb_endpoints[0].load_balancing_weight: must be at least 1`},
		{"endpoint port 0", edsType, cla(func(a *endpointv3.ClusterLoadAssignment) {
			a.Endpoints[0].LbEndpoints[0].GetEndpoint().Address = runtimetest.SocketAddress("192.0.2.1", 0)
		}), `load assignment "backend": endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value is required (1-65535)`},
		{"endpoint unspecified address", edsType, cla(func(a *endpointv3.ClusterLoadAssignment) {
			a.Endpoints[0].LbEndpoints[0].GetEndpoint().Address = runtimetest.SocketAddress("::", 80)
		}), `load assignment "backend": endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address: :: is not an upstream address`},
		{"leds", edsType, cla(func(a *endpointv3.ClusterLoadAssignment) {
			a.Endpoints[0].LbConfig = &endpointv3.LocalityLbEndpoints_LedsClusterLocalityConfig{}
		}), `load assignment "backend": endpoints[0].leds_cluster_locality_config is not supported by flotilla-agent`},

		// Types.
		{"scoped route type", resourcev3.ScopedRouteType, listener(nil),
			`resource envoy.config.route.v3.ScopedRouteConfiguration: this resource type is not supported by flotilla-agent`},
		{"wrong message for route type", resourcev3.RouteType, listener(nil),
			`route configuration: resource is a envoy.config.listener.v3.Listener, not the type its type URL names`},
		{"wrong message for type", lds, eds(nil),
			`listener: resource is a envoy.config.cluster.v3.Cluster, not the type its type URL names`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := runtime.Validate(tt.typeURL, tt.msg)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want %q", tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("Validate() error\n got: %s\nwant: %s", err, tt.want)
			}
			var re *runtime.ResourceError
			if !errors.As(err, &re) {
				t.Fatalf("Validate() error is a %T, want *runtime.ResourceError", err)
			}
			if re.TypeURL != tt.typeURL {
				t.Errorf("ResourceError.TypeURL = %q, want %q", re.TypeURL, tt.typeURL)
			}
			if re.Unwrap() == nil {
				t.Error("ResourceError.Unwrap() = nil")
			}
		})
	}
}

func TestValidateNamesTheResource(t *testing.T) {
	err := runtime.Validate(resourcev3.ListenerType, listener(func(l *listenerv3.Listener) {
		l.Name = "dicom"
		l.ListenerFilters = []*listenerv3.ListenerFilter{{Name: "x"}}
	}))
	var re *runtime.ResourceError
	if !errors.As(err, &re) || re.Name != "dicom" || re.TypeURL != resourcev3.ListenerType {
		t.Fatalf("Validate() = %#v, want a ResourceError for listener dicom", err)
	}
}
