package compiler

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	gzipv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/gzip/compressor/v3"
	bufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/buffer/v3"
	compressorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/compressor/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	proxyprotocolv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/proxy_protocol/v3"
	connlimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/connection_limit/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	httpoptsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/flotilla-proxy/flotilla/controlplane/bundle"
	configv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/config/v1"
)

// This file compiles HTTP listeners: one filter chain whose network filter
// is an http_connection_manager taking its routes over RDS (ADS), and a
// RouteConfiguration named after the listener. It also compiles the HTTP
// settings of clusters (HttpProtocolOptions, retry budget).

// Names of the HTTP pieces the compiler emits that go-control-plane's
// wellknown lacks.
const (
	// CompressorFilter is Envoy's response compression HTTP filter.
	CompressorFilter = "envoy.filters.http.compressor"
	// GzipCompressor is the gzip library of the compressor filter.
	GzipCompressor = "envoy.compression.gzip.compressor"
	// HTTPProtocolOptions is the typed_extension_protocol_options key of a
	// cluster's HttpProtocolOptions.
	HTTPProtocolOptions = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
	// WebSocket is the upgrade type of WebSocket routes.
	WebSocket = "websocket"
	// RealIPHeader is the header HttpListener.real_ip_header sets.
	RealIPHeader = "x-real-ip"
	// ClientAddressOperator is the Envoy operator X-Real-IP is set to.
	ClientAddressOperator = "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"
)

// Defaults of the HTTP schema; its doc comments promise these values.
const (
	// DefaultHTTPIdleTimeout is HttpListener.idle_timeout and
	// Cluster.http_idle_timeout when unset.
	DefaultHTTPIdleTimeout = time.Hour
	// DefaultRequestHeadersTimeout is HttpListener.request_headers_timeout when unset.
	DefaultRequestHeadersTimeout = 10 * time.Second
	// DefaultStreamIdleTimeout is HttpListener.stream_idle_timeout when unset.
	DefaultStreamIdleTimeout = 5 * time.Minute
	// DefaultMaxRequestHeadersKB is HttpListener.max_request_headers_kb when unset.
	DefaultMaxRequestHeadersKB = 60
	// DefaultServerName is HttpListener.server_name when unset.
	DefaultServerName = "flotilla"
	// DefaultRouteTimeout is HttpRoute.timeout when unset.
	DefaultRouteTimeout = 15 * time.Second
	// DefaultRetryAttempts is RetryPolicy.attempts when unset (0).
	DefaultRetryAttempts = 1
	// DefaultCompressionMinLength is Compression.min_length when unset (0).
	DefaultCompressionMinLength = 30
	// DefaultRetryBudgetPercent is RetryBudget.percent when unset (0).
	DefaultRetryBudgetPercent = 20
	// DefaultMinRetryConcurrency is RetryBudget.min_concurrency when unset (0).
	DefaultMinRetryConcurrency = 3
)

// DefaultCompressionTypes are Compression.content_types when empty.
var DefaultCompressionTypes = []string{
	"text/html", "text/plain", "text/css", "application/javascript",
	"application/json", "application/xml", "image/svg+xml",
}

// DefaultHTTPALPN is ListenerTls.alpn of an HTTP listener when empty.
var DefaultHTTPALPN = []string{"h2", "http/1.1"}

// redirectCodes maps Redirect.code to Envoy's response_code.
var redirectCodes = map[uint32]routev3.RedirectAction_RedirectResponseCode{
	0:   routev3.RedirectAction_MOVED_PERMANENTLY,
	301: routev3.RedirectAction_MOVED_PERMANENTLY,
	302: routev3.RedirectAction_FOUND,
	303: routev3.RedirectAction_SEE_OTHER,
	307: routev3.RedirectAction_TEMPORARY_REDIRECT,
	308: routev3.RedirectAction_PERMANENT_REDIRECT,
}

// adsSource is the ConfigSource of everything fetched over ADS.
func adsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}
}

// httpClusterRefs lists the clusters an HTTP listener's routes proxy to.
func httpClusterRefs(h *configv1.HttpListener) []clusterRef {
	var refs []clusterRef
	for i, vh := range bundle.VirtualHosts(h) {
		for j, r := range vh.GetRoutes() {
			f := fmt.Sprintf("http.virtual_hosts[%d].routes[%d]", i, j)
			if len(h.GetRoutes()) > 0 {
				f = fmt.Sprintf("http.routes[%d]", j)
			}
			if r.GetCluster() != "" {
				refs = append(refs, clusterRef{f + ".cluster", r.GetCluster()})
			}
			for k, wc := range r.GetWeightedClusters() {
				refs = append(refs, clusterRef{fmt.Sprintf("%s.weighted_clusters[%d].cluster", f, k), wc.GetCluster()})
			}
		}
	}
	return refs
}

// httpListener fills in an HTTP listener: the proxy_protocol listener filter
// when it accepts the PROXY protocol, and one filter chain (matching only
// the trusted peers behind the PROXY protocol) with an optional
// connection_limit and the http_connection_manager.
func httpListener(out *listenerv3.Listener, l *configv1.Listener) error {
	switch {
	case l.GetTcp() != nil || l.GetUdp() != nil:
		return fmt.Errorf("http with tcp or udp: a listener has exactly one of tcp, udp and http")
	case len(l.GetSni()) > 0 || len(l.GetRoutes()) > 0:
		return fmt.Errorf("sni and routes are only for tcp listeners: an HTTP listener routes with http.virtual_hosts")
	}
	hcm, err := connectionManager(l)
	if err != nil {
		return err
	}
	var filters []*listenerv3.Filter
	if n := l.GetMaxConnections(); n > 0 {
		limit, err := networkFilter(ConnectionLimit, &connlimitv3.ConnectionLimit{
			StatPrefix:     l.GetName(),
			MaxConnections: wrapperspb.UInt64(uint64(n)),
		})
		if err != nil {
			return err
		}
		filters = append(filters, limit)
	}
	f, err := networkFilter(wellknown.HTTPConnectionManager, hcm)
	if err != nil {
		return err
	}
	chain := &listenerv3.FilterChain{Name: bundle.DefaultChainName, Filters: append(filters, f)}
	if pp := l.GetProxyProtocol(); pp != nil {
		trusted, err := cidrRanges(pp.GetTrusted())
		if err != nil {
			return fmt.Errorf("proxy_protocol.trusted: %w", err)
		}
		if len(trusted) == 0 {
			return fmt.Errorf("proxy_protocol.trusted: empty")
		}
		// As for TCP listeners: untrusted peers match no chain and are closed.
		chain.FilterChainMatch = &listenerv3.FilterChainMatch{DirectSourcePrefixRanges: trusted}
		lf, err := listenerFilter(wellknown.ProxyProtocol, &proxyprotocolv3.ProxyProtocol{})
		if err != nil {
			return err
		}
		out.ListenerFilters = []*listenerv3.ListenerFilter{lf}
		out.ListenerFiltersTimeout = orDuration(l.GetPrereadTimeout(), DefaultPrereadTimeout)
	} else if l.GetPrereadTimeout() != nil {
		return fmt.Errorf("preread_timeout is only for HTTP listeners with proxy_protocol")
	}
	out.FilterChains = []*listenerv3.FilterChain{chain}
	return nil
}

// connectionManager compiles a listener's http block into an
// HttpConnectionManager whose routes come over RDS, named like the listener.
func connectionManager(l *configv1.Listener) (*hcmv3.HttpConnectionManager, error) {
	h := l.GetHttp()
	codec := hcmv3.HttpConnectionManager_AUTO
	if h.H2C != nil && !h.GetH2C() && l.GetTls() == nil {
		codec = hcmv3.HttpConnectionManager_HTTP1
	}
	logs, err := httpAccessLogs(l.GetAccessLog())
	if err != nil {
		return nil, fmt.Errorf("access_log: %w", err)
	}
	kb := orUint32(h.GetMaxRequestHeadersKb(), DefaultMaxRequestHeadersKB)
	if kb > bundle.MaxRequestHeadersKB {
		return nil, fmt.Errorf("http.max_request_headers_kb %d is more than %d", kb, bundle.MaxRequestHeadersKB)
	}
	server := h.GetServerName()
	if server == "" {
		server = DefaultServerName
	}
	out := &hcmv3.HttpConnectionManager{
		CodecType:  codec,
		StatPrefix: l.GetName(),
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource:    adsSource(),
			RouteConfigName: l.GetName(),
		}},
		UseRemoteAddress:  wrapperspb.Bool(true),
		XffNumTrustedHops: h.GetXffTrustedHops(),
		// Routes match, and upstreams get, the normalised path, as with nginx's
		// `location` matching and `merge_slashes on`: /x/../admin, //admin and /%61dmin
		// all match a route for /admin.
		NormalizePath: wrapperspb.Bool(true),
		MergeSlashes:  true,
		CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{
			IdleTimeout: orDuration(h.GetIdleTimeout(), DefaultHTTPIdleTimeout),
		},
		RequestHeadersTimeout: orDuration(h.GetRequestHeadersTimeout(), DefaultRequestHeadersTimeout),
		StreamIdleTimeout:     orDuration(h.GetStreamIdleTimeout(), DefaultStreamIdleTimeout),
		MaxRequestHeadersKb:   wrapperspb.UInt32(kb),
		ServerName:            server,
		UpgradeConfigs: []*hcmv3.HttpConnectionManager_UpgradeConfig{{
			UpgradeType: WebSocket,
			Enabled:     wrapperspb.Bool(false), // routes with websocket: true enable it
		}},
		AccessLog: logs,
	}
	if d := h.GetRequestTimeout(); d != nil {
		out.RequestTimeout = proto.CloneOf(d)
	}
	if c := h.GetCompression(); c != nil {
		f, err := compressor(c)
		if err != nil {
			return nil, fmt.Errorf("http.compression: %w", err)
		}
		out.HttpFilters = append(out.HttpFilters, f)
	}
	if s := h.GetMaxRequestBody(); s != "" {
		n, err := bundle.ByteSize(s)
		if err != nil {
			return nil, fmt.Errorf("http.max_request_body: %w", err)
		}
		if n == 0 {
			return nil, fmt.Errorf("http.max_request_body: must be more than 0 bytes")
		}
		f, err := httpFilter(wellknown.Buffer, &bufferv3.Buffer{MaxRequestBytes: wrapperspb.UInt32(uint32(n))})
		if err != nil {
			return nil, err
		}
		out.HttpFilters = append(out.HttpFilters, f)
	}
	router, err := httpFilter(wellknown.Router, &routerv3.Router{})
	if err != nil {
		return nil, err
	}
	out.HttpFilters = append(out.HttpFilters, router)
	return out, nil
}

// compressor is the compressor HTTP filter with the gzip library.
func compressor(c *configv1.Compression) (*hcmv3.HttpFilter, error) {
	if c.GetLevel() > bundle.MaxGzipLevel {
		return nil, fmt.Errorf("level %d is more than %d", c.GetLevel(), bundle.MaxGzipLevel)
	}
	level := gzipv3.Gzip_DEFAULT_COMPRESSION
	if n := c.GetLevel(); n > 0 {
		level = gzipv3.Gzip_CompressionLevel(int32(gzipv3.Gzip_COMPRESSION_LEVEL_1) + int32(n) - 1)
	}
	lib, err := anypb.New(&gzipv3.Gzip{CompressionLevel: level})
	if err != nil {
		return nil, err
	}
	types := slices.Clone(DefaultCompressionTypes)
	if len(c.GetContentTypes()) > 0 {
		types = types[:0]
		for _, t := range c.GetContentTypes() {
			types = append(types, strings.ToLower(strings.TrimSpace(t)))
		}
	}
	return httpFilter(CompressorFilter, &compressorv3.Compressor{
		CompressorLibrary: &corev3.TypedExtensionConfig{Name: GzipCompressor, TypedConfig: lib},
		ResponseDirectionConfig: &compressorv3.Compressor_ResponseDirectionConfig{
			CommonConfig: &compressorv3.Compressor_CommonDirectionConfig{
				MinContentLength: wrapperspb.UInt32(orUint32(c.GetMinLength(), DefaultCompressionMinLength)),
				ContentType:      types,
			},
		},
	})
}

func httpFilter(name string, config proto.Message) (*hcmv3.HttpFilter, error) {
	a, err := anypb.New(config)
	if err != nil {
		return nil, err
	}
	return &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}}, nil
}

// routeConfiguration compiles an HTTP listener's virtual hosts into the
// RouteConfiguration named after it.
func routeConfiguration(l *configv1.Listener) (*routev3.RouteConfiguration, error) {
	h := l.GetHttp()
	if len(h.GetRoutes()) > 0 && len(h.GetVirtualHosts()) > 0 {
		return nil, fmt.Errorf("http.routes with http.virtual_hosts: routes is the shorthand for one virtual host")
	}
	out := &routev3.RouteConfiguration{Name: l.GetName()}
	if h.RealIpHeader == nil || h.GetRealIpHeader() {
		out.RequestHeadersToAdd = []*corev3.HeaderValueOption{overwrite(RealIPHeader, ClientAddressOperator)}
	}
	vhosts := bundle.VirtualHosts(h)
	if len(vhosts) == 0 {
		return nil, fmt.Errorf("http: no routes or virtual_hosts")
	}
	seen := map[string]bool{}
	for i, vh := range vhosts {
		f := fmt.Sprintf("http.virtual_hosts[%d]", i)
		if len(h.GetRoutes()) > 0 {
			f = "http"
		}
		v, err := virtualHost(vh, i, seen)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		out.VirtualHosts = append(out.VirtualHosts, v)
	}
	return out, nil
}

// virtualHost compiles virtual_hosts[i]; seen holds the domains of the
// listener's virtual hosts so far.
func virtualHost(vh *configv1.VirtualHost, i int, seen map[string]bool) (*routev3.VirtualHost, error) {
	out := &routev3.VirtualHost{Name: bundle.VirtualHostName(vh, i)}
	if len(vh.GetDomains()) == 0 {
		return nil, fmt.Errorf("domains: empty")
	}
	for _, d := range vh.GetDomains() {
		norm, err := bundle.Domain(d)
		if err != nil {
			return nil, fmt.Errorf("domains: %w", err)
		}
		if seen[norm] {
			return nil, fmt.Errorf("domains: %q is served by two virtual hosts", d)
		}
		seen[norm] = true
		out.Domains = append(out.Domains, norm)
	}
	if vh.GetHttpsRedirect() {
		out.RequireTls = routev3.VirtualHost_ALL
	}
	var err error
	if out.RequestHeadersToAdd, out.RequestHeadersToRemove, err = headerOps(vh.GetRequestHeaders()); err != nil {
		return nil, fmt.Errorf("request_headers: %w", err)
	}
	if out.ResponseHeadersToAdd, out.ResponseHeadersToRemove, err = headerOps(vh.GetResponseHeaders()); err != nil {
		return nil, fmt.Errorf("response_headers: %w", err)
	}
	if len(vh.GetRoutes()) == 0 {
		return nil, fmt.Errorf("routes: empty")
	}
	for j, r := range vh.GetRoutes() {
		route, err := httpRoute(r, j)
		if err != nil {
			return nil, fmt.Errorf("routes[%d]: %w", j, err)
		}
		out.Routes = append(out.Routes, route)
	}
	return out, nil
}

// headerOps compiles header additions (sorted by name, each overwriting)
// and removals (lowercase).
func headerOps(ops *configv1.HeaderOps) ([]*corev3.HeaderValueOption, []string, error) {
	var add []*corev3.HeaderValueOption
	for _, name := range slices.Sorted(maps.Keys(ops.GetAdd())) {
		if !validHeaderName(name) {
			return nil, nil, fmt.Errorf("add: %q is not a header name", name)
		}
		add = append(add, overwrite(strings.ToLower(name), ops.GetAdd()[name]))
	}
	var remove []string
	for _, name := range ops.GetRemove() {
		if !validHeaderName(name) {
			return nil, nil, fmt.Errorf("remove: %q is not a header name", name)
		}
		remove = append(remove, strings.ToLower(name))
	}
	return add, remove, nil
}

var headerNameRe = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

func validHeaderName(name string) bool { return headerNameRe.MatchString(name) }

// overwrite is a header set to value, replacing any value it had.
func overwrite(name, value string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: name, Value: value},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

// httpRoute compiles routes[j] of a virtual host.
func httpRoute(r *configv1.HttpRoute, j int) (*routev3.Route, error) {
	match, err := routeMatchHTTP(r.GetMatch())
	if err != nil {
		return nil, fmt.Errorf("match: %w", err)
	}
	out := &routev3.Route{Name: bundle.HTTPRouteName(r, j), Match: match}
	if out.RequestHeadersToAdd, out.RequestHeadersToRemove, err = headerOps(r.GetRequestHeaders()); err != nil {
		return nil, fmt.Errorf("request_headers: %w", err)
	}
	if out.ResponseHeadersToAdd, out.ResponseHeadersToRemove, err = headerOps(r.GetResponseHeaders()); err != nil {
		return nil, fmt.Errorf("response_headers: %w", err)
	}
	forwards := r.GetCluster() != "" || len(r.GetWeightedClusters()) > 0
	actions := 0
	for _, set := range []bool{r.GetCluster() != "", len(r.GetWeightedClusters()) > 0, r.GetRedirect() != nil, r.GetDirectResponse() != nil} {
		if set {
			actions++
		}
	}
	if actions != 1 {
		return nil, fmt.Errorf("needs exactly one of cluster, weighted_clusters, redirect and direct_response")
	}
	if !forwards && (r.GetPrefixRewrite() != "" || r.GetHostRewrite() != "" || r.GetAutoHostRewrite() || r.GetWebsocket() ||
		r.GetTimeout() != nil || r.GetIdleTimeout() != nil || r.GetRetries() != nil) {
		return nil, fmt.Errorf("prefix_rewrite, host_rewrite, auto_host_rewrite, websocket, timeout, idle_timeout and retries are only for routes with a cluster")
	}
	switch {
	case forwards:
		action, err := forward(r)
		if err != nil {
			return nil, err
		}
		out.Action = &routev3.Route_Route{Route: action}
	case r.GetRedirect() != nil:
		rd, err := redirect(r.GetRedirect())
		if err != nil {
			return nil, fmt.Errorf("redirect: %w", err)
		}
		out.Action = &routev3.Route_Redirect{Redirect: rd}
	default:
		d := r.GetDirectResponse()
		if d.GetStatus() < 200 || d.GetStatus() > 599 {
			return nil, fmt.Errorf("direct_response.status %d is not within 200-599", d.GetStatus())
		}
		if len(d.GetBody()) > bundle.MaxDirectResponseBody {
			return nil, fmt.Errorf("direct_response.body is longer than %d bytes", bundle.MaxDirectResponseBody)
		}
		dr := &routev3.DirectResponseAction{Status: d.GetStatus()}
		if d.GetBody() != "" {
			dr.Body = &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: d.GetBody()}}
		}
		out.Action = &routev3.Route_DirectResponse{DirectResponse: dr}
	}
	return out, nil
}

// routeMatchHTTP compiles a route's match; nil matches every request.
func routeMatchHTTP(m *configv1.RouteMatch) (*routev3.RouteMatch, error) {
	out := &routev3.RouteMatch{}
	n := 0
	for _, s := range []string{m.GetPrefix(), m.GetPath(), m.GetRegex()} {
		if s != "" {
			n++
		}
	}
	switch {
	case n > 1:
		return nil, fmt.Errorf("needs at most one of prefix, path and regex")
	case m.GetPath() != "":
		out.PathSpecifier = &routev3.RouteMatch_Path{Path: m.GetPath()}
	case m.GetRegex() != "":
		if _, err := regexp.Compile(m.GetRegex()); err != nil {
			return nil, fmt.Errorf("regex: %w", err)
		}
		out.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: m.GetRegex()}}
	default:
		prefix := m.GetPrefix()
		if prefix == "" {
			prefix = "/"
		}
		out.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: prefix}
	}
	switch methods := m.GetMethods(); len(methods) {
	case 0:
	case 1:
		out.Headers = append(out.Headers, stringHeader(":method", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: methods[0]}}))
	default:
		quoted := make([]string, len(methods))
		for i, meth := range methods {
			quoted[i] = regexp.QuoteMeta(meth)
		}
		out.Headers = append(out.Headers, stringHeader(":method", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{
			SafeRegex: &matcherv3.RegexMatcher{Regex: strings.Join(quoted, "|")},
		}}))
	}
	for i, h := range m.GetHeaders() {
		hm, err := headerMatch(h)
		if err != nil {
			return nil, fmt.Errorf("headers[%d]: %w", i, err)
		}
		out.Headers = append(out.Headers, hm)
	}
	if m.GetGrpc() {
		out.Grpc = &routev3.RouteMatch_GrpcRouteMatchOptions{}
	}
	return out, nil
}

func stringHeader(name string, sm *matcherv3.StringMatcher) *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: sm}}
}

// headerMatch compiles one header condition.
func headerMatch(h *configv1.HeaderMatch) (*routev3.HeaderMatcher, error) {
	name := strings.ToLower(h.GetName())
	if name == "" || !strings.HasPrefix(name, ":") && !validHeaderName(name) {
		return nil, fmt.Errorf("%q is not a header name", h.GetName())
	}
	var sms []*matcherv3.StringMatcher
	if h.GetExact() != "" {
		sms = append(sms, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: h.GetExact()}})
	}
	if h.GetPrefix() != "" {
		sms = append(sms, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: h.GetPrefix()}})
	}
	if h.GetSuffix() != "" {
		sms = append(sms, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: h.GetSuffix()}})
	}
	if h.GetContains() != "" {
		sms = append(sms, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: h.GetContains()}})
	}
	if h.GetRegex() != "" {
		if _, err := regexp.Compile(h.GetRegex()); err != nil {
			return nil, fmt.Errorf("regex: %w", err)
		}
		sms = append(sms, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: h.GetRegex()}}})
	}
	switch {
	case len(sms) == 1 && h.Present == nil:
		return stringHeader(name, sms[0]), nil
	case len(sms) == 0 && h.Present != nil:
		return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: h.GetPresent()}}, nil
	}
	return nil, fmt.Errorf("needs exactly one of exact, prefix, suffix, contains, regex and present")
}

// forward compiles the action of a route that proxies.
func forward(r *configv1.HttpRoute) (*routev3.RouteAction, error) {
	out := &routev3.RouteAction{
		Timeout:       orDuration(r.GetTimeout(), DefaultRouteTimeout),
		PrefixRewrite: r.GetPrefixRewrite(),
	}
	if r.GetCluster() != "" {
		out.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: r.GetCluster()}
	} else {
		wc := &routev3.WeightedCluster{}
		for i, c := range r.GetWeightedClusters() {
			if c.GetWeight() == 0 || c.GetCluster() == "" {
				return nil, fmt.Errorf("weighted_clusters[%d]: needs a cluster and a weight of at least 1", i)
			}
			wc.Clusters = append(wc.Clusters, &routev3.WeightedCluster_ClusterWeight{Name: c.GetCluster(), Weight: wrapperspb.UInt32(c.GetWeight())})
		}
		out.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}
	}
	if r.GetPrefixRewrite() != "" && r.GetMatch().GetRegex() != "" {
		return nil, fmt.Errorf("prefix_rewrite with match.regex: there is no prefix to replace")
	}
	switch {
	case r.GetHostRewrite() != "" && r.GetAutoHostRewrite():
		return nil, fmt.Errorf("host_rewrite with auto_host_rewrite")
	case r.GetHostRewrite() != "":
		out.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: r.GetHostRewrite()}
	case r.GetAutoHostRewrite():
		out.HostRewriteSpecifier = &routev3.RouteAction_AutoHostRewrite{AutoHostRewrite: wrapperspb.Bool(true)}
	}
	if d := r.GetIdleTimeout(); d != nil {
		out.IdleTimeout = proto.CloneOf(d)
	}
	if r.GetWebsocket() {
		out.UpgradeConfigs = []*routev3.RouteAction_UpgradeConfig{{UpgradeType: WebSocket, Enabled: wrapperspb.Bool(true)}}
	}
	if rp := r.GetRetries(); rp != nil {
		on := rp.GetOn()
		if len(on) == 0 {
			on = bundle.DefaultRetryOn
		}
		for _, c := range on {
			if !slices.Contains(bundle.RetryOn, c) {
				return nil, fmt.Errorf("retries.on: %q is not a retry condition", c)
			}
		}
		if rp.GetAttempts() > bundle.MaxRetryAttempts {
			return nil, fmt.Errorf("retries.attempts %d is more than %d", rp.GetAttempts(), bundle.MaxRetryAttempts)
		}
		out.RetryPolicy = &routev3.RetryPolicy{
			RetryOn:    strings.Join(on, ","),
			NumRetries: wrapperspb.UInt32(orUint32(rp.GetAttempts(), DefaultRetryAttempts)),
		}
		if d := rp.GetPerTryTimeout(); d != nil {
			out.RetryPolicy.PerTryTimeout = proto.CloneOf(d)
		}
	}
	return out, nil
}

// redirect compiles a route's redirect.
func redirect(rd *configv1.Redirect) (*routev3.RedirectAction, error) {
	code, ok := redirectCodes[rd.GetCode()]
	if !ok {
		return nil, fmt.Errorf("code %d is not a redirect status", rd.GetCode())
	}
	out := &routev3.RedirectAction{HostRedirect: rd.GetHost(), StripQuery: rd.GetStripQuery(), ResponseCode: code}
	switch s := rd.GetScheme(); s {
	case "":
	case "https":
		out.SchemeRewriteSpecifier = &routev3.RedirectAction_HttpsRedirect{HttpsRedirect: true}
	case "http":
		out.SchemeRewriteSpecifier = &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: s}
	default:
		return nil, fmt.Errorf("scheme %q is not http or https", s)
	}
	if p := rd.GetPort(); p > 65535 {
		return nil, fmt.Errorf("port %d is not a port", p)
	}
	out.PortRedirect = rd.GetPort()
	switch {
	case rd.GetPath() != "" && rd.GetPrefixRewrite() != "":
		return nil, fmt.Errorf("path with prefix_rewrite")
	case rd.GetPath() != "":
		out.PathRewriteSpecifier = &routev3.RedirectAction_PathRedirect{PathRedirect: rd.GetPath()}
	case rd.GetPrefixRewrite() != "":
		out.PathRewriteSpecifier = &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: rd.GetPrefixRewrite()}
	}
	return out, nil
}

// httpClusterOptions fills in a cluster's HTTP settings: HttpProtocolOptions
// for http2 (always) and for http1 with an http_idle_timeout, and the retry
// budget.
func httpClusterOptions(out *clusterv3.Cluster, c *configv1.Cluster) error {
	var explicit *httpoptsv3.HttpProtocolOptions_ExplicitHttpConfig
	switch p := c.GetProtocol(); {
	case p == bundle.ProtocolHTTP2:
		explicit = &httpoptsv3.HttpProtocolOptions_ExplicitHttpConfig{ProtocolConfig: &httpoptsv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
			Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
		}}
	case p != "" && p != bundle.ProtocolHTTP1:
		return fmt.Errorf("protocol %q is not http1 or http2", p)
	case c.GetHttpIdleTimeout() != nil:
		explicit = &httpoptsv3.HttpProtocolOptions_ExplicitHttpConfig{ProtocolConfig: &httpoptsv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{
			HttpProtocolOptions: &corev3.Http1ProtocolOptions{},
		}}
	}
	if explicit != nil {
		opts, err := anypb.New(&httpoptsv3.HttpProtocolOptions{
			CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{IdleTimeout: orDuration(c.GetHttpIdleTimeout(), DefaultHTTPIdleTimeout)},
			UpstreamProtocolOptions:   &httpoptsv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: explicit},
		})
		if err != nil {
			return err
		}
		out.TypedExtensionProtocolOptions = map[string]*anypb.Any{HTTPProtocolOptions: opts}
	}
	if rb := c.GetRetryBudget(); rb != nil {
		if rb.GetPercent() > 100 {
			return fmt.Errorf("retry_budget.percent %d is more than 100", rb.GetPercent())
		}
		out.CircuitBreakers.Thresholds[0].RetryBudget = &clusterv3.CircuitBreakers_Thresholds_RetryBudget{
			BudgetPercent:       &typev3.Percent{Value: float64(orUint32(rb.GetPercent(), DefaultRetryBudgetPercent))},
			MinRetryConcurrency: wrapperspb.UInt32(orUint32(rb.GetMinConcurrency(), DefaultMinRetryConcurrency)),
		}
	}
	return nil
}
