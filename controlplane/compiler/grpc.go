package compiler

import (
	"cmp"
	"fmt"
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/flotilla-proxy/flotilla/controlplane/bundle"
	configv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/config/v1"
)

// This file compiles grpc_services for proxyless gRPC clients: what gRPC's
// xDS resolver needs to resolve "xds:///<name>" and balance calls itself.

// GRPCRoutePrefix starts the name of the RouteConfiguration of a gRPC
// service: "grpc:<name>". Listener names cannot contain ':', so it never
// clashes with the route configuration of an HTTP listener.
const GRPCRoutePrefix = "grpc:"

// grpcLBPolicies maps Cluster.lb to the lb_policy gRPC clients implement.
var grpcLBPolicies = map[string]clusterv3.Cluster_LbPolicy{
	"":                    clusterv3.Cluster_ROUND_ROBIN,
	bundle.LBRoundRobin:   clusterv3.Cluster_ROUND_ROBIN,
	bundle.LBLeastRequest: clusterv3.Cluster_LEAST_REQUEST,
	bundle.LBRingHash:     clusterv3.Cluster_RING_HASH,
}

// CompileGRPC compiles a merged, validated bundle for proxyless gRPC
// clients carrying labels: for every grpc_services entry whose selector
// matches, a Listener named like the service holding only an api_listener
// (an http_connection_manager with RDS over ADS and the router filter), a
// RouteConfiguration GRPCRoutePrefix+name whose one virtual host (domains:
// the service name) sends every call to the service's cluster, and that
// cluster (EDS over ADS, its lb_policy and connect_timeout, nothing gRPC
// clients would refuse) with its endpoints in one locality carrying a
// load_balancing_weight, which gRPC requires. Listeners and clusters of the
// bundle's listeners are not included: they are for agents.
func CompileGRPC(b *configv1.Bundle, labels map[string]string) (*Resources, error) {
	clusters := make(map[string]*configv1.Cluster, len(b.GetClusters()))
	for _, c := range b.GetClusters() {
		clusters[c.GetName()] = c
	}
	res := &Resources{}
	used := map[string]bool{}
	for _, g := range b.GetGrpcServices() {
		if !Selects(g.GetAgents(), labels) {
			continue
		}
		c := clusters[g.GetCluster()]
		if c == nil {
			return nil, fmt.Errorf("grpc service %q: unknown cluster %q", g.GetName(), g.GetCluster())
		}
		l, err := grpcListener(g.GetName())
		if err != nil {
			return nil, fmt.Errorf("grpc service %q: %w", g.GetName(), err)
		}
		res.Listeners = append(res.Listeners, l)
		res.Routes = append(res.Routes, &routev3.RouteConfiguration{
			Name: GRPCRoutePrefix + g.GetName(),
			VirtualHosts: []*routev3.VirtualHost{{
				Name:    g.GetName(),
				Domains: []string{g.GetName()},
				Routes: []*routev3.Route{{
					Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
					Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: c.GetName()}}},
				}},
			}},
		})
		if used[c.GetName()] {
			continue
		}
		used[c.GetName()] = true
		lb, ok := grpcLBPolicies[c.GetLb()]
		if !ok {
			return nil, fmt.Errorf("grpc service %q: cluster %q: lb %q is not implemented by gRPC clients", g.GetName(), c.GetName(), c.GetLb())
		}
		res.Clusters = append(res.Clusters, &clusterv3.Cluster{
			Name:                 c.GetName(),
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource()},
			ConnectTimeout:       orDuration(c.GetConnectTimeout(), DefaultConnectTimeout),
			LbPolicy:             lb,
		})
		cla, err := loadAssignment(c)
		if err != nil {
			return nil, fmt.Errorf("cluster %q: %w", c.GetName(), err)
		}
		for _, loc := range cla.GetEndpoints() {
			loc.Locality = &corev3.Locality{}
			loc.LoadBalancingWeight = wrapperspb.UInt32(1)
		}
		res.Endpoints = append(res.Endpoints, cla)
	}
	slices.SortFunc(res.Listeners, func(a, b *listenerv3.Listener) int { return cmp.Compare(a.GetName(), b.GetName()) })
	slices.SortFunc(res.Routes, func(a, b *routev3.RouteConfiguration) int { return cmp.Compare(a.GetName(), b.GetName()) })
	slices.SortFunc(res.Clusters, func(a, b *clusterv3.Cluster) int { return cmp.Compare(a.GetName(), b.GetName()) })
	slices.SortFunc(res.Endpoints, func(a, b *endpointv3.ClusterLoadAssignment) int {
		return cmp.Compare(a.GetClusterName(), b.GetClusterName())
	})
	return res, nil
}

// grpcListener is the api_listener gRPC clients resolve "xds:///<name>" with.
func grpcListener(name string) (*listenerv3.Listener, error) {
	router, err := httpFilter(wellknown.Router, &routerv3.Router{})
	if err != nil {
		return nil, err
	}
	hcm, err := anypb.New(&hcmv3.HttpConnectionManager{
		StatPrefix: name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource:    adsSource(),
			RouteConfigName: GRPCRoutePrefix + name,
		}},
		HttpFilters: []*hcmv3.HttpFilter{router},
	})
	if err != nil {
		return nil, err
	}
	return &listenerv3.Listener{Name: name, ApiListener: &listenerv3.ApiListener{ApiListener: hcm}}, nil
}
