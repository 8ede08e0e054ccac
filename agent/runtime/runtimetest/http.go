package runtimetest

import (
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	httpoptsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// HTTPConnectionManager returns an http_connection_manager serving the RDS route
// configuration routeConfig over ADS, with codec AUTO, use_remote_address, X-Real-IP-free
// defaults and the router as its only HTTP filter: the shape the compiler emits.
func HTTPConnectionManager(statPrefix, routeConfig string) *hcmv3.HttpConnectionManager {
	return &hcmv3.HttpConnectionManager{
		StatPrefix: statPrefix,
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource: &corev3.ConfigSource{
				ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
				ResourceApiVersion:    corev3.ApiVersion_V3,
			},
			RouteConfigName: routeConfig,
		}},
		UseRemoteAddress:      wrapperspb.Bool(true),
		RequestHeadersTimeout: durationpb.New(10 * time.Second),
		HttpFilters:           []*hcmv3.HttpFilter{RouterFilter()},
	}
}

// RouterFilter returns the envoy.filters.http.router HTTP filter.
func RouterFilter() *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{
		Name:       "envoy.filters.http.router",
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&routerv3.Router{})},
	}
}

// HTTPListener returns a listener on ip:port whose single filter chain runs h.
func HTTPListener(name, ip string, port uint32, h *hcmv3.HttpConnectionManager) *listenerv3.Listener {
	return &listenerv3.Listener{
		Name:    name,
		Address: SocketAddress(ip, port),
		FilterChains: []*listenerv3.FilterChain{{
			Filters: []*listenerv3.Filter{HTTPFilter(h)},
		}},
	}
}

// HTTPFilter wraps h as a network filter.
func HTTPFilter(h *hcmv3.HttpConnectionManager) *listenerv3.Filter {
	return &listenerv3.Filter{
		Name:       "envoy.filters.network.http_connection_manager",
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(h)},
	}
}

// HTTPManagerOf decodes the http_connection_manager of a listener built by HTTPListener
// (first chain, last filter).
func HTTPManagerOf(l *listenerv3.Listener) *hcmv3.HttpConnectionManager {
	fs := l.GetFilterChains()[0].GetFilters()
	h := &hcmv3.HttpConnectionManager{}
	if err := fs[len(fs)-1].GetTypedConfig().UnmarshalTo(h); err != nil {
		panic("runtimetest: " + err.Error())
	}
	return h
}

// SetHTTPManager replaces the http_connection_manager of a listener built by HTTPListener.
func SetHTTPManager(l *listenerv3.Listener, h *hcmv3.HttpConnectionManager) {
	fs := l.GetFilterChains()[0].GetFilters()
	fs[len(fs)-1] = HTTPFilter(h)
}

// RouteConfig returns a RouteConfiguration with the given virtual hosts.
func RouteConfig(name string, vhs ...*routev3.VirtualHost) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{Name: name, VirtualHosts: vhs}
}

// VirtualHost returns a virtual host with the given domains and routes.
func VirtualHost(name string, domains []string, routes ...*routev3.Route) *routev3.VirtualHost {
	return &routev3.VirtualHost{Name: name, Domains: domains, Routes: routes}
}

// PrefixRoute returns a route sending requests whose path starts with prefix to cluster.
func PrefixRoute(prefix, cluster string) *routev3.Route {
	return &routev3.Route{
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster},
		}},
	}
}

// WeightedRoute returns a route sending requests whose path starts with prefix to the
// clusters, weighted (name → weight, in the order given by names).
func WeightedRoute(prefix string, names []string, weights []uint32) *routev3.Route {
	wc := &routev3.WeightedCluster{}
	for i, n := range names {
		wc.Clusters = append(wc.Clusters, &routev3.WeightedCluster_ClusterWeight{Name: n, Weight: wrapperspb.UInt32(weights[i])})
	}
	return &routev3.Route{
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: wc},
		}},
	}
}

// DirectRoute returns a route answering requests whose path starts with prefix with status
// and body.
func DirectRoute(prefix string, status uint32, body string) *routev3.Route {
	return &routev3.Route{
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}},
		Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
			Status: status,
			Body:   &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: body}},
		}},
	}
}

// HTTPProtocolOptions sets c's typed_extension_protocol_options to an HttpProtocolOptions
// with explicit HTTP/2 (http2) or HTTP/1.1 and, when idle is not 0, that idle timeout; it
// returns c.
func HTTPProtocolOptions(c *clusterv3.Cluster, http2 bool, idle time.Duration) *clusterv3.Cluster {
	o := &httpoptsv3.HttpProtocolOptions{}
	e := &httpoptsv3.HttpProtocolOptions_ExplicitHttpConfig{}
	if http2 {
		e.ProtocolConfig = &httpoptsv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}}
	} else {
		e.ProtocolConfig = &httpoptsv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &corev3.Http1ProtocolOptions{}}
	}
	o.UpstreamProtocolOptions = &httpoptsv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: e}
	if idle != 0 {
		o.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{IdleTimeout: durationpb.New(idle)}
	}
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{
		"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": mustAny(o),
	}
	return c
}
