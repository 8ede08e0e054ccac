// Package compiler compiles a config bundle — the schema people write — into
// the Envoy xDS v3 resources one group of agents runs: Listeners (LDS),
// Clusters (CDS) and ClusterLoadAssignments (EDS).
//
// It emits exactly the subset of Envoy's API the Flotilla agent implements
// (and NACKs anything outside of): a listener with one filter chain holding one
// envoy.filters.network.tcp_proxy filter; an EDS cluster over ADS with round
// robin; one locality of weighted endpoints. Defaults are filled in here, so
// what the agent receives is explicit. The output is valid for a real Envoy as
// well. Compile is a pure function of its inputs, safe for concurrent use.
package compiler

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
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
)

// Resources are the Envoy resources for one agent group, each slice sorted by
// name. Endpoints holds one ClusterLoadAssignment per cluster, named like it.
type Resources struct {
	// Listeners are the LDS resources.
	Listeners []*listenerv3.Listener
	// Clusters are the CDS resources, all of type EDS over ADS.
	Clusters []*clusterv3.Cluster
	// Endpoints are the EDS resources, one per cluster.
	Endpoints []*endpointv3.ClusterLoadAssignment
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
	used := make(map[string]bool)
	for _, l := range b.GetListeners() {
		if !Selects(l.GetAgents(), labels) {
			continue
		}
		if l.GetTcp() == nil {
			return nil, fmt.Errorf("listener %q: no protocol block (tcp)", l.GetName())
		}
		name := l.GetTcp().GetCluster()
		if clusters[name] == nil {
			return nil, fmt.Errorf("listener %q: unknown cluster %q", l.GetName(), name)
		}
		out, err := listener(l)
		if err != nil {
			return nil, fmt.Errorf("listener %q: %w", l.GetName(), err)
		}
		res.Listeners = append(res.Listeners, out)
		used[name] = true
	}
	for name := range used {
		c := clusters[name]
		cla, err := loadAssignment(c)
		if err != nil {
			return nil, fmt.Errorf("cluster %q: %w", name, err)
		}
		res.Clusters = append(res.Clusters, cluster(c))
		res.Endpoints = append(res.Endpoints, cla)
	}
	slices.SortFunc(res.Listeners, func(a, b *listenerv3.Listener) int { return cmp.Compare(a.GetName(), b.GetName()) })
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

func listener(l *configv1.Listener) (*listenerv3.Listener, error) {
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

	tcp := l.GetTcp()
	idle := durationpb.New(DefaultIdleTimeout)
	if tcp.GetIdleTimeout() != nil {
		idle = proto.CloneOf(tcp.GetIdleTimeout()) // "0s" stays 0: disabled
	}
	attempts := uint32(DefaultConnectAttempts)
	if n := tcp.GetConnectAttempts(); n != 0 {
		attempts = n
	}
	proxy, err := anypb.New(&tcpproxyv3.TcpProxy{
		StatPrefix:         l.GetName(),
		ClusterSpecifier:   &tcpproxyv3.TcpProxy_Cluster{Cluster: tcp.GetCluster()},
		IdleTimeout:        idle,
		MaxConnectAttempts: wrapperspb.UInt32(attempts),
	})
	if err != nil {
		return nil, err
	}
	return &listenerv3.Listener{
		Name:    l.GetName(),
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: sa}},
		FilterChains: []*listenerv3.FilterChain{{
			Filters: []*listenerv3.Filter{{
				Name:       wellknown.TCPProxy,
				ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: proxy},
			}},
		}},
	}, nil
}

func cluster(c *configv1.Cluster) *clusterv3.Cluster {
	timeout := durationpb.New(DefaultConnectTimeout)
	if c.GetConnectTimeout() != nil {
		timeout = proto.CloneOf(c.GetConnectTimeout())
	}
	return &clusterv3.Cluster{
		Name:                 c.GetName(),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{
			EdsConfig: &corev3.ConfigSource{
				ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
				ResourceApiVersion:    corev3.ApiVersion_V3,
			},
		},
		ConnectTimeout: timeout,
		LbPolicy:       clusterv3.Cluster_ROUND_ROBIN,
	}
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
