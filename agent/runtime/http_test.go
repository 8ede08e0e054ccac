package runtime_test

import (
	"compress/gzip"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	gzipv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/gzip/compressor/v3"
	bufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/buffer/v3"
	compressorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/compressor/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	httpoptsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/flotilla-proxy/flotilla/agent/httproute"
	"github.com/flotilla-proxy/flotilla/agent/runtime"
	"github.com/flotilla-proxy/flotilla/agent/runtime/runtimetest"
)

// hcm returns the compiler-shaped manager of listener "web" (route configuration "web")
// after edit.
func hcm(edit func(h *hcmv3.HttpConnectionManager)) *listenerv3.Listener {
	h := runtimetest.HTTPConnectionManager("web", "web")
	if edit != nil {
		edit(h)
	}
	return runtimetest.HTTPListener("web", "0.0.0.0", 8080, h)
}

// rc returns route configuration "web" with one virtual host "api" (domains "*") and one
// route prefix "/" → backend, after edit.
func rc(edit func(rc *routev3.RouteConfiguration)) *routev3.RouteConfiguration {
	r := runtimetest.RouteConfig("web", runtimetest.VirtualHost("api", []string{"*"}, runtimetest.PrefixRoute("/", "backend")))
	if edit != nil {
		edit(r)
	}
	return r
}

// route edits the first route of rc.
func route(edit func(r *routev3.Route)) *routev3.RouteConfiguration {
	return rc(func(rc *routev3.RouteConfiguration) { edit(rc.VirtualHosts[0].Routes[0]) })
}

// action edits the route action of the first route.
func action(edit func(a *routev3.RouteAction)) *routev3.RouteConfiguration {
	return route(func(r *routev3.Route) { edit(r.GetRoute()) })
}

func httpFilter(m proto.Message) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: "f", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(m)}}
}

func gzipCompressor(level gzipv3.Gzip_CompressionLevel) *compressorv3.Compressor {
	return &compressorv3.Compressor{
		CompressorLibrary: &corev3.TypedExtensionConfig{Name: "gzip", TypedConfig: mustAny(&gzipv3.Gzip{CompressionLevel: level})},
		ResponseDirectionConfig: &compressorv3.Compressor_ResponseDirectionConfig{
			CommonConfig: &compressorv3.Compressor_CommonDirectionConfig{
				MinContentLength: wrapperspb.UInt32(1024),
				ContentType:      []string{"text/html", "Application/JSON"},
			},
		},
	}
}

func headerValue(k, v string, action corev3.HeaderValueOption_HeaderAppendAction) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}, AppendAction: action}
}

func exactHeader(name, v string) *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
		StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: v}}}}
}

func regexMatcher(re string) *matcherv3.RegexMatcher { return &matcherv3.RegexMatcher{Regex: re} }

// httpResources is a consistent HTTP set: listener "web" (full manager), route
// configuration "web" and clusters backend (HTTP/2), a and b.
func httpResources() *runtime.Resources {
	l := hcm(func(h *hcmv3.HttpConnectionManager) {
		h.CodecType = hcmv3.HttpConnectionManager_HTTP1
		h.ServerName = "edge"
		h.XffNumTrustedHops = 2
		h.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{IdleTimeout: durationpb.New(time.Minute)}
		h.StreamIdleTimeout = durationpb.New(0)
		h.RequestTimeout = durationpb.New(30 * time.Second)
		h.MaxRequestHeadersKb = wrapperspb.UInt32(16)
		h.UpgradeConfigs = []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket", Enabled: wrapperspb.Bool(false)}}
		h.AccessLog = []*accesslogv3.AccessLog{runtimetest.FileAccessLog("/dev/stdout", "%RESPONSE_CODE% %DURATION%", nil)}
		h.HttpFilters = []*hcmv3.HttpFilter{
			httpFilter(gzipCompressor(gzipv3.Gzip_COMPRESSION_LEVEL_6)),
			httpFilter(&bufferv3.Buffer{MaxRequestBytes: wrapperspb.UInt32(1 << 20)}),
			runtimetest.RouterFilter(),
		}
	})
	api := runtimetest.VirtualHost("api", []string{"api.example.com", "*.example.com"},
		runtimetest.WeightedRoute("/canary", []string{"a", "b"}, []uint32{90, 10}),
		runtimetest.PrefixRoute("/", "backend"))
	api.RequireTls = routev3.VirtualHost_ALL
	api.ResponseHeadersToAdd = []*corev3.HeaderValueOption{headerValue("strict-transport-security", "max-age=1", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)}
	api.Routes[1].GetRoute().PrefixRewrite = "/v1/"
	api.Routes[1].GetRoute().Timeout = durationpb.New(0)
	api.Routes[1].GetRoute().UpgradeConfigs = []*routev3.RouteAction_UpgradeConfig{{UpgradeType: "websocket"}}
	api.Routes[1].GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "connect-failure,5xx", NumRetries: wrapperspb.UInt32(2), PerTryTimeout: durationpb.New(2 * time.Second)}
	fallback := runtimetest.VirtualHost("fallback", []string{"*"}, runtimetest.DirectRoute("/", 404, "nothing here\n"))
	routes := runtimetest.RouteConfig("web", api, fallback)
	routes.RequestHeadersToAdd = []*corev3.HeaderValueOption{headerValue("x-real-ip", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)}
	backend := runtimetest.HTTPProtocolOptions(runtimetest.StaticCluster("backend", runtimetest.Endpoint("192.0.2.1:8080", 1)), true, 30*time.Second)
	backend.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{BudgetPercent: &typev3.Percent{Value: 25}, MinRetryConcurrency: wrapperspb.UInt32(5)},
	}}}
	return &runtime.Resources{
		Listeners: map[string]*listenerv3.Listener{"web": l},
		Routes:    map[string]*routev3.RouteConfiguration{"web": routes},
		Clusters: map[string]*clusterv3.Cluster{
			"backend": backend,
			"a":       runtimetest.StaticCluster("a", runtimetest.Endpoint("192.0.2.2:80", 1)),
			"b":       runtimetest.StaticCluster("b", runtimetest.Endpoint("192.0.2.3:80", 1)),
		},
	}
}

func TestBuildHTTP(t *testing.T) {
	g, err := runtime.Build(httpResources())
	if err != nil {
		t.Fatal(err)
	}
	l := g.Listener("web")
	chains := l.Chains()
	if len(chains) != 1 || chains[0].HTTP == nil {
		t.Fatalf("chains = %+v, want one HTTP chain", chains)
	}
	m := chains[0].HTTP
	checks := []struct {
		name      string
		got, want any
	}{
		{"StatPrefix", m.StatPrefix, "web"},
		{"RouteConfigName", m.RouteConfigName, "web"},
		{"Codec", m.Codec, httproute.CodecHTTP1},
		{"ServerName", m.ServerName, "edge"},
		{"UseRemoteAddress", m.UseRemoteAddress, true},
		{"XFFNumTrustedHops", m.XFFNumTrustedHops, uint32(2)},
		{"IdleTimeout", m.IdleTimeout, time.Minute},
		{"RequestHeadersTimeout", m.RequestHeadersTimeout, 10 * time.Second},
		{"RequestTimeout", m.RequestTimeout, 30 * time.Second},
		{"StreamIdleTimeout", m.StreamIdleTimeout, time.Duration(0)},
		{"MaxRequestHeadersBytes", m.MaxRequestHeadersBytes, 16 << 10},
		{"MaxRequestBodyBytes", m.MaxRequestBodyBytes, int64(1 << 20)},
		{"Upgrades", m.Upgrades["websocket"], false},
		{"Compression.Level", m.Compression.Level, 6},
		{"Compression.MinContentLength", m.Compression.MinContentLength, 1024},
		{"Compression.ContentTypes", strings.Join(m.Compression.ContentTypes, ","), "text/html,application/json"},
		{"AccessLog", m.AccessLog.Path, "/dev/stdout"},
		{"TCP.AccessLog", chains[0].TCP.AccessLog.Path, "/dev/stdout"},
		{"TCP.Cluster", chains[0].TCP.Cluster == nil, true},
		{"Listener.Clusters", len(l.Clusters()), 0},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}

	tbl := g.RouteTable("web")
	if tbl == nil || g.RouteTable("nope") != nil {
		t.Fatalf("RouteTable(web) = %v", tbl)
	}
	if len(tbl.Headers.RequestAdd) != 1 || tbl.Headers.RequestAdd[0].Name != "X-Real-Ip" || tbl.Headers.RequestAdd[0].Append {
		t.Errorf("table headers = %+v", tbl.Headers)
	}
	vh, r := tbl.Select(&httproute.Request{Authority: "WWW.example.com:443", Path: "/canary/x", Method: "GET", Header: http.Header{}})
	if vh == nil || vh.Name != "api" || vh.RequireTLS != httproute.TLSAll || r == nil || r.Forward == nil {
		t.Fatalf("Select = %+v, %+v", vh, r)
	}
	if f := r.Forward; len(f.Clusters) != 2 || f.TotalWeight != 100 || f.PickCluster(95).Name != "b" || f.Timeout != runtime.DefaultRouteTimeout {
		t.Errorf("weighted forward = %+v", f)
	}
	if h := vh.Headers.ResponseAdd; len(h) != 1 || h[0].Name != "Strict-Transport-Security" {
		t.Errorf("virtual host headers = %+v", vh.Headers)
	}
	_, r = tbl.Select(&httproute.Request{Authority: "api.example.com", Path: "/users?id=1", Method: "GET", Header: http.Header{}})
	f := r.Forward
	if f.Timeout != 0 || !f.Upgrades["websocket"] || f.Retry == nil || f.Retry.NumRetries != 2 || !f.Retry.On["5xx"] || f.Retry.PerTryTimeout != 2*time.Second {
		t.Errorf("forward = %+v retry %+v", f, f.Retry)
	}
	if got := r.RewritePath("/users?id=1"); got != "/v1/users?id=1" {
		t.Errorf("RewritePath = %q", got)
	}
	vh, r = tbl.Select(&httproute.Request{Authority: "other.org", Path: "/", Header: http.Header{}})
	if vh.Name != "fallback" || r.Direct == nil || r.Direct.Status != 404 || string(r.Direct.Body) != "nothing here\n" {
		t.Errorf("fallback = %+v %+v", vh, r)
	}

	backend := g.Cluster("backend")
	if !backend.HTTP2() || backend.HTTPIdleTimeout() != 30*time.Second {
		t.Errorf("backend HTTP2 = %v, idle = %v", backend.HTTP2(), backend.HTTPIdleTimeout())
	}
	if p, m := backend.RetryBudget(); p != 25 || m != 5 {
		t.Errorf("backend RetryBudget = %v, %v", p, m)
	}
	a := g.Cluster("a")
	if a.HTTP2() || a.HTTPIdleTimeout() != runtime.DefaultHTTPIdleTimeout {
		t.Errorf("a HTTP2 = %v, idle = %v", a.HTTP2(), a.HTTPIdleTimeout())
	}
	if p, m := a.RetryBudget(); p != runtime.DefaultRetryBudgetPercent || m != runtime.DefaultMinRetryConcurrency {
		t.Errorf("a RetryBudget = %v, %v", p, m)
	}
	if got := g.Resources().Routes["web"]; got == nil {
		t.Error("Resources().Routes lacks web")
	}
}

// TestRouteOnlyChange: a new route table gives a new graph whose listener is the same
// socket with the same manager; only RouteTable changes.
func TestRouteOnlyChange(t *testing.T) {
	r := httpResources()
	g1, err := runtime.Build(r)
	if err != nil {
		t.Fatal(err)
	}
	r.Routes = map[string]*routev3.RouteConfiguration{"web": rc(func(rc *routev3.RouteConfiguration) {
		rc.VirtualHosts[0].Routes[0] = runtimetest.DirectRoute("/", 200, "ok")
	})}
	g2, err := runtime.Build(r)
	if err != nil {
		t.Fatal(err)
	}
	l1, l2 := g1.Listener("web"), g2.Listener("web")
	if l1.Addr() != l2.Addr() || l1.Network() != l2.Network() || l2.Chains()[0].HTTP.RouteConfigName != "web" {
		t.Errorf("listener changed: %v %v", l1, l2)
	}
	_, rt := g2.RouteTable("web").Select(&httproute.Request{Authority: "x", Path: "/", Header: http.Header{}})
	if rt == nil || rt.Direct == nil || rt.Direct.Status != 200 {
		t.Errorf("new table route = %+v", rt)
	}
}

func TestMissingHTTP(t *testing.T) {
	tests := []struct {
		name string
		edit func(r *runtime.Resources)
		want string
	}{
		{"consistent", func(*runtime.Resources) {}, ""},
		{"no route configuration", func(r *runtime.Resources) { r.Routes = nil },
			`listener "web" references unknown route configuration "web"`},
		{"weighted cluster missing", func(r *runtime.Resources) { delete(r.Clusters, "b") },
			`route configuration "web" references unknown cluster "b"`},
		{"cluster missing", func(r *runtime.Resources) { delete(r.Clusters, "backend") },
			`route configuration "web" references unknown cluster "backend"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httpResources()
			tt.edit(r)
			err := r.Missing()
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tt.want {
				t.Errorf("Missing() = %q, want %q", got, tt.want)
			}
			if tt.want != "" {
				if _, err := runtime.Build(r); err == nil || err.Error() != tt.want {
					t.Errorf("Build() = %v, want %q", err, tt.want)
				}
			}
		})
	}
	if got := httpResources().RDSNames(); len(got) != 1 || got[0] != "web" {
		t.Errorf("RDSNames() = %v", got)
	}
}

func TestBuildRouteNameMismatch(t *testing.T) {
	r := httpResources()
	r.Routes["web"].Name = "other"
	_, err := runtime.Build(r)
	var re *runtime.ResourceError
	if !errors.As(err, &re) || re.TypeURL != resourcev3.RouteType ||
		err.Error() != `route configuration "web": resource is named "other" but was delivered as "web"` {
		t.Fatalf("Build() = %v", err)
	}
}

func TestValidateHTTP(t *testing.T) {
	const (
		lds = resourcev3.ListenerType
		rds = resourcev3.RouteType
		cds = resourcev3.ClusterType
		hp  = `listener "web": filter_chains[0].filters[0].typed_config`
		rp  = `route configuration "web": virtual_hosts[0]`
	)
	tests := []struct {
		name    string
		typeURL string
		msg     proto.Message
		want    string // "" means valid
	}{
		// The manager.
		{"manager", lds, hcm(nil), ""},
		{"path normalisation", lds, hcm(func(h *hcmv3.HttpConnectionManager) {
			h.NormalizePath = wrapperspb.Bool(true)
			h.MergeSlashes = true
			h.PathWithEscapedSlashesAction = hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT
		}), ""},
		{"prefix_rewrite without slash", rds, route(func(r *routev3.Route) { r.GetRoute().PrefixRewrite = "v2/" }),
			rp + `.routes[0].route.prefix_rewrite: "v2/" must start with /`},
		{"prefix_rewrite bad escape", rds, route(func(r *routev3.Route) { r.GetRoute().PrefixRewrite = "/x%zz/" }),
			rp + `.routes[0].route.prefix_rewrite: "/x%zz/" is not a valid escaped path: invalid URL escape "%zz"`},
		{"full manager", lds, httpResources().Listeners["web"], ""},
		{"behind connection_limit", lds, runtimetest.WithConnectionLimit(hcm(nil), 10), ""},
		{"inline route_config", lds, hcm(func(h *hcmv3.HttpConnectionManager) {
			h.RouteSpecifier = &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: rc(nil)}
		}), hp + `.route_config is not supported by flotilla-agent`},
		{"rds without ads", lds, hcm(func(h *hcmv3.HttpConnectionManager) {
			h.GetRds().ConfigSource = &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Path{Path: "/x"}}
		}), hp + `.rds.config_source.path is not supported by flotilla-agent`},
		{"rds without name", lds, hcm(func(h *hcmv3.HttpConnectionManager) { h.GetRds().RouteConfigName = "" }),
			hp + `.rds.route_config_name is required`},
		{"generate_request_id", lds, hcm(func(h *hcmv3.HttpConnectionManager) { h.GenerateRequestId = wrapperspb.Bool(false) }),
			hp + `.generate_request_id is not supported by flotilla-agent`},
		{"codec http3", lds, hcm(func(h *hcmv3.HttpConnectionManager) { h.CodecType = hcmv3.HttpConnectionManager_HTTP3 }),
			hp + `.codec_type HTTP3 is not supported by flotilla-agent (AUTO, HTTP1 or HTTP2)`},
		{"server header append", lds, hcm(func(h *hcmv3.HttpConnectionManager) {
			h.ServerHeaderTransformation = hcmv3.HttpConnectionManager_APPEND_IF_ABSENT
		}), hp + `.server_header_transformation APPEND_IF_ABSENT is not supported by flotilla-agent (OVERWRITE or PASS_THROUGH)`},
		{"common options", lds, hcm(func(h *hcmv3.HttpConnectionManager) {
			h.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{MaxHeadersCount: wrapperspb.UInt32(10)}
		}), hp + `.common_http_protocol_options.max_headers_count is not supported by flotilla-agent`},
		{"negative timeout", lds, hcm(func(h *hcmv3.HttpConnectionManager) { h.RequestTimeout = durationpb.New(-time.Second) }),
			hp + `.request_timeout: must not be negative, got -1s`},
		{"max headers", lds, hcm(func(h *hcmv3.HttpConnectionManager) { h.MaxRequestHeadersKb = wrapperspb.UInt32(9000) }),
			hp + `.max_request_headers_kb: 9000 is not within 1-8192`},
		{"upgrade connect", lds, hcm(func(h *hcmv3.HttpConnectionManager) {
			h.UpgradeConfigs = []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "CONNECT"}}
		}), hp + `.upgrade_configs[0].upgrade_type "CONNECT" is not supported by flotilla-agent (websocket only)`},
		{"no filters", lds, hcm(func(h *hcmv3.HttpConnectionManager) { h.HttpFilters = nil }),
			hp + `.http_filters: the envoy.filters.http.router filter is required (last)`},
		{"router not last", lds, hcm(func(h *hcmv3.HttpConnectionManager) {
			h.HttpFilters = append(h.HttpFilters, httpFilter(&bufferv3.Buffer{MaxRequestBytes: wrapperspb.UInt32(1)}))
		}), hp + `.http_filters[0].typed_config: envoy.filters.http.router must be the last HTTP filter`},
		{"buffer last", lds, hcm(func(h *hcmv3.HttpConnectionManager) {
			h.HttpFilters = []*hcmv3.HttpFilter{httpFilter(&bufferv3.Buffer{MaxRequestBytes: wrapperspb.UInt32(1)})}
		}), hp + `.http_filters[0].typed_config: the last HTTP filter must be envoy.filters.http.router`},
		{"unknown filter", lds, hcm(func(h *hcmv3.HttpConnectionManager) {
			h.HttpFilters = append([]*hcmv3.HttpFilter{httpFilter(&hcmv3.HttpConnectionManager{})}, h.HttpFilters...)
		}), hp + `.http_filters[0].typed_config: HTTP filter type "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager" is not supported by flotilla-agent (only envoy.filters.http.compressor, envoy.filters.http.buffer and envoy.filters.http.router)`},
		{"two buffers", lds, hcm(func(h *hcmv3.HttpConnectionManager) {
			b := httpFilter(&bufferv3.Buffer{MaxRequestBytes: wrapperspb.UInt32(1)})
			h.HttpFilters = append([]*hcmv3.HttpFilter{b, b}, h.HttpFilters...)
		}), hp + `.http_filters[1]: a second f filter (first at ` + hp[len(`listener "web": `):] + `.http_filters[0]) is not supported by flotilla-agent`},
		{"router option", lds, hcm(func(h *hcmv3.HttpConnectionManager) {
			h.HttpFilters = []*hcmv3.HttpFilter{httpFilter(&routerv3.Router{StartChildSpan: true})}
		}), hp + `.http_filters[0].typed_config.start_child_span is not supported by flotilla-agent`},
		{"buffer without limit", lds, hcm(func(h *hcmv3.HttpConnectionManager) {
			h.HttpFilters = append([]*hcmv3.HttpFilter{httpFilter(&bufferv3.Buffer{})}, h.HttpFilters...)
		}), hp + `.http_filters[0].typed_config.max_request_bytes is required (at least 1)`},
		{"compressor brotli", lds, hcm(func(h *hcmv3.HttpConnectionManager) {
			c := gzipCompressor(0)
			c.CompressorLibrary.TypedConfig = mustAny(&routerv3.Router{})
			h.HttpFilters = append([]*hcmv3.HttpFilter{httpFilter(c)}, h.HttpFilters...)
		}), hp + `.http_filters[0].typed_config.compressor_library.typed_config: compressor library "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" is not supported by flotilla-agent (only envoy.compression.gzip.compressor)`},
		{"gzip window bits", lds, hcm(func(h *hcmv3.HttpConnectionManager) {
			c := gzipCompressor(0)
			c.CompressorLibrary.TypedConfig = mustAny(&gzipv3.Gzip{WindowBits: wrapperspb.UInt32(10)})
			h.HttpFilters = append([]*hcmv3.HttpFilter{httpFilter(c)}, h.HttpFilters...)
		}), hp + `.http_filters[0].typed_config.compressor_library.typed_config.window_bits is not supported by flotilla-agent`},
		{"compressor request direction", lds, hcm(func(h *hcmv3.HttpConnectionManager) {
			c := gzipCompressor(0)
			c.RequestDirectionConfig = &compressorv3.Compressor_RequestDirectionConfig{}
			h.HttpFilters = append([]*hcmv3.HttpFilter{httpFilter(c)}, h.HttpFilters...)
		}), hp + `.http_filters[0].typed_config.request_direction_config is not supported by flotilla-agent`},
		{"access log", lds, hcm(func(h *hcmv3.HttpConnectionManager) {
			h.AccessLog = []*accesslogv3.AccessLog{runtimetest.FileAccessLog("/tmp/x", "%NOPE%", nil)}
		}), hp + `.access_log[0].typed_config.log_format.text_format_source: access log format: command operator %NOPE% is not supported by flotilla-agent`},

		// Route configurations.
		{"route config", rds, rc(nil), ""},
		{"full route config", rds, httpResources().Routes["web"], ""},
		{"vhds", rds, rc(func(rc *routev3.RouteConfiguration) { rc.Vhds = &routev3.Vhds{} }),
			`route configuration "web": vhds is not supported by flotilla-agent`},
		{"no name", rds, rc(func(rc *routev3.RouteConfiguration) { rc.Name = "" }),
			`route configuration: name is required`},
		{"duplicate domain", rds, rc(func(rc *routev3.RouteConfiguration) {
			rc.VirtualHosts = append(rc.VirtualHosts, runtimetest.VirtualHost("b", []string{"x", "*"}))
		}), `route configuration "web": virtual_hosts[1].domains[1]: "*" is already a domain of virtual_hosts[0] (a domain must be unique in a route configuration)`},
		{"wildcard in the middle", rds, rc(func(rc *routev3.RouteConfiguration) { rc.VirtualHosts[0].Domains = []string{"a.*.com"} }),
			rp + `.domains[0]: "a.*.com" has a wildcard in the middle (only a leading or trailing * is supported)`},
		{"vhost cors", rds, rc(func(rc *routev3.RouteConfiguration) { rc.VirtualHosts[0].Cors = &routev3.CorsPolicy{} }),
			rp + `.cors is not supported by flotilla-agent`},
		{"query match", rds, route(func(r *routev3.Route) {
			r.Match.QueryParameters = []*routev3.QueryParameterMatcher{{Name: "x"}}
		}), rp + `.routes[0].match.query_parameters is not supported by flotilla-agent`},
		{"bad regex", rds, route(func(r *routev3.Route) {
			r.Match.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: regexMatcher("/v[0-9")}
		}), rp + `.routes[0].match.safe_regex.regex: "/v[0-9" is not a valid RE2 regular expression: error parsing regexp: missing closing ]: ` + "`[0-9)$`"},
		{"regex", rds, route(func(r *routev3.Route) {
			r.Match.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: regexMatcher("/v[0-9]+/.*")}
		}), ""},
		{"case insensitive regex", rds, route(func(r *routev3.Route) {
			r.Match.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: regexMatcher("/x")}
			r.Match.CaseSensitive = wrapperspb.Bool(false)
		}), rp + `.routes[0].match.case_sensitive: false does not apply to safe_regex (use (?i) in the regex)`},
		{"no path specifier", rds, route(func(r *routev3.Route) { r.Match.PathSpecifier = nil }),
			rp + `.routes[0].match: one of prefix, path and safe_regex is required`},
		{"headers and grpc", rds, route(func(r *routev3.Route) {
			r.Match.Grpc = &routev3.RouteMatch_GrpcRouteMatchOptions{}
			r.Match.Headers = []*routev3.HeaderMatcher{
				exactHeader(":method", "GET"),
				{Name: "x-foo", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}, InvertMatch: true},
				{Name: "x-re", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
					MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: regexMatcher("GET|POST")}}}},
			}
		}), ""},
		{"legacy exact_match", rds, route(func(r *routev3.Route) {
			r.Match.Headers = []*routev3.HeaderMatcher{{Name: "x", HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: "1"}}}
		}), rp + `.routes[0].match.headers[0].exact_match is not supported by flotilla-agent`},
		{"unknown pseudo-header", rds, route(func(r *routev3.Route) {
			r.Match.Headers = []*routev3.HeaderMatcher{exactHeader(":protocol", "websocket")}
		}), rp + `.routes[0].match.headers[0].name: pseudo-header ":protocol" is not supported by flotilla-agent (:method, :authority, :path, :scheme)`},
		{"header regex", rds, route(func(r *routev3.Route) {
			r.Match.Headers = []*routev3.HeaderMatcher{{Name: "x", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
				MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: regexMatcher("(")}}}}}
		}), rp + `.routes[0].match.headers[0].string_match.safe_regex.regex: "(" is not a valid RE2 regular expression: error parsing regexp: missing closing ): ` + "`^(?:()$`"},
		{"no action", rds, route(func(r *routev3.Route) { r.Action = nil }),
			rp + `.routes[0]: one of route, redirect and direct_response is required`},
		{"cluster_header", rds, action(func(a *routev3.RouteAction) {
			a.ClusterSpecifier = &routev3.RouteAction_ClusterHeader{ClusterHeader: "x"}
		}), rp + `.routes[0].route.cluster_header is not supported by flotilla-agent`},
		{"hash_policy", rds, action(func(a *routev3.RouteAction) { a.HashPolicy = []*routev3.RouteAction_HashPolicy{{}} }),
			rp + `.routes[0].route.hash_policy is not supported by flotilla-agent`},
		{"weights zero", rds, route(func(r *routev3.Route) {
			*r = *runtimetest.WeightedRoute("/", []string{"a", "b"}, []uint32{0, 0})
		}), rp + `.routes[0].route.weighted_clusters: the weights add up to 0 (must be 1 to 4294967295)`},
		{"total weight", rds, route(func(r *routev3.Route) {
			*r = *runtimetest.WeightedRoute("/", []string{"a", "b"}, []uint32{1, 2})
			r.GetRoute().GetWeightedClusters().TotalWeight = wrapperspb.UInt32(100)
		}), rp + `.routes[0].route.weighted_clusters.total_weight: 100, but the weights add up to 3`},
		{"host rewrite", rds, action(func(a *routev3.RouteAction) {
			a.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: "bad host"}
		}), rp + `.routes[0].route.host_rewrite_literal: "bad host" is not a host`},
		{"retry on", rds, action(func(a *routev3.RouteAction) { a.RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx,refused-stream"} }),
			rp + `.routes[0].route.retry_policy.retry_on: "refused-stream" is not supported by flotilla-agent (connect-failure, 5xx, gateway-error, reset or retriable-status-codes)`},
		{"retry back off", rds, action(func(a *routev3.RouteAction) {
			a.RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", RetryBackOff: &routev3.RetryPolicy_RetryBackOff{}}
		}), rp + `.routes[0].route.retry_policy.retry_back_off is not supported by flotilla-agent`},
		{"redirect", rds, route(func(r *routev3.Route) {
			r.Action = &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{
				SchemeRewriteSpecifier: &routev3.RedirectAction_HttpsRedirect{HttpsRedirect: true},
				PathRewriteSpecifier:   &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: "/new"},
				ResponseCode:           routev3.RedirectAction_PERMANENT_REDIRECT, StripQuery: true, PortRedirect: 8443,
			}}
		}), ""},
		{"redirect scheme", rds, route(func(r *routev3.Route) {
			r.Action = &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{
				SchemeRewriteSpecifier: &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: "ftp"}}}
		}), rp + `.routes[0].redirect.scheme_redirect: "ftp" is not supported by flotilla-agent (http or https)`},
		{"redirect regex", rds, route(func(r *routev3.Route) {
			r.Action = &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{
				PathRewriteSpecifier: &routev3.RedirectAction_RegexRewrite{RegexRewrite: &matcherv3.RegexMatchAndSubstitute{}}}}
		}), rp + `.routes[0].redirect.regex_rewrite is not supported by flotilla-agent`},
		{"direct status", rds, route(func(r *routev3.Route) { *r = *runtimetest.DirectRoute("/", 101, "") }),
			rp + `.routes[0].direct_response.status: 101 is not within 200-599`},
		{"direct body file", rds, route(func(r *routev3.Route) {
			*r = *runtimetest.DirectRoute("/", 200, "")
			r.GetDirectResponse().Body = &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: "/etc/passwd"}}
		}), rp + `.routes[0].direct_response.body.filename is not supported by flotilla-agent`},
		{"header add action", rds, rc(func(rc *routev3.RouteConfiguration) {
			rc.RequestHeadersToAdd = []*corev3.HeaderValueOption{headerValue("x", "y", corev3.HeaderValueOption_ADD_IF_ABSENT)}
		}), `route configuration "web": request_headers_to_add[0].append_action ADD_IF_ABSENT is not supported by flotilla-agent (APPEND_IF_EXISTS_OR_ADD or OVERWRITE_IF_EXISTS_OR_ADD)`},
		{"header add pseudo", rds, rc(func(rc *routev3.RouteConfiguration) {
			rc.VirtualHosts[0].RequestHeadersToAdd = []*corev3.HeaderValueOption{headerValue(":path", "/", 0)}
		}), rp + `.request_headers_to_add[0].header.key: ":path" cannot be changed by header mutations (use host_rewrite_literal for the host)`},
		{"header remove host", rds, route(func(r *routev3.Route) { r.RequestHeadersToRemove = []string{"Host"} }),
			rp + `.routes[0].request_headers_to_remove[0]: "Host" cannot be changed by header mutations (use host_rewrite_literal for the host)`},
		{"header value operator", rds, rc(func(rc *routev3.RouteConfiguration) {
			rc.RequestHeadersToAdd = []*corev3.HeaderValueOption{headerValue("x-y", "%NOPE%", 0)}
		}), `route configuration "web": request_headers_to_add[0].header.value: access log format: command operator %NOPE% is not supported by flotilla-agent`},
		{"header value newline", rds, rc(func(rc *routev3.RouteConfiguration) {
			rc.RequestHeadersToAdd = []*corev3.HeaderValueOption{headerValue("x-y", "a\nb", 0)}
		}), `route configuration "web": request_headers_to_add[0].header.value: "a\nb" is not a valid header value`},
		{"unknown field", rds, withUnknownField(rc(nil)),
			`route configuration "web": resource carries field number 999, which flotilla-agent does not know (an Envoy API newer than the agent?)`},

		// Clusters.
		{"http2 cluster", cds, runtimetest.HTTPProtocolOptions(eds(nil), true, time.Minute), ""},
		{"http1 cluster", cds, runtimetest.HTTPProtocolOptions(eds(nil), false, 0), ""},
		{"other protocol options", cds, eds(func(c *clusterv3.Cluster) {
			c.TypedExtensionProtocolOptions = map[string]*anypb.Any{"envoy.filters.network.tcp_proxy": mustAny(&httpoptsv3.HttpProtocolOptions{})}
		}), `cluster "backend": typed_extension_protocol_options["envoy.filters.network.tcp_proxy"]: only envoy.extensions.upstreams.http.v3.HttpProtocolOptions is supported by flotilla-agent`},
		{"auto config", cds, eds(func(c *clusterv3.Cluster) {
			c.TypedExtensionProtocolOptions = map[string]*anypb.Any{runtime.HTTPProtocolOptionsName: mustAny(&httpoptsv3.HttpProtocolOptions{
				UpstreamProtocolOptions: &httpoptsv3.HttpProtocolOptions_AutoConfig{AutoConfig: &httpoptsv3.HttpProtocolOptions_AutoHttpConfig{}}})}
		}), `cluster "backend": typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].auto_config is not supported by flotilla-agent`},
		{"retry budget interval", cds, eds(func(c *clusterv3.Cluster) {
			c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
				RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{BudgetInterval: durationpb.New(time.Second)}}}}
		}), `cluster "backend": circuit_breakers.thresholds[0].retry_budget.budget_interval is not supported by flotilla-agent`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := runtime.Validate(tt.typeURL, tt.msg)
			got := ""
			if err != nil {
				got = err.Error()
				var re *runtime.ResourceError
				if !errors.As(err, &re) || re.TypeURL != tt.typeURL {
					t.Errorf("Validate() error is %#v, want a *runtime.ResourceError of %s", err, tt.typeURL)
				}
			}
			if got != tt.want {
				t.Errorf("Validate() error\n got: %s\nwant: %s", got, tt.want)
			}
		})
	}
}

// TestCompressionLevels: gzip's enum maps onto compress/gzip levels.
func TestCompressionLevels(t *testing.T) {
	tests := []struct {
		level gzipv3.Gzip_CompressionLevel
		want  int
	}{
		{gzipv3.Gzip_DEFAULT_COMPRESSION, gzip.DefaultCompression},
		{gzipv3.Gzip_BEST_SPEED, gzip.BestSpeed},
		{gzipv3.Gzip_BEST_COMPRESSION, gzip.BestCompression},
		{gzipv3.Gzip_COMPRESSION_LEVEL_1, 1},
		{gzipv3.Gzip_COMPRESSION_LEVEL_9, 9},
	}
	for _, tt := range tests {
		r := httpResources()
		h := runtimetest.HTTPManagerOf(r.Listeners["web"])
		h.HttpFilters = []*hcmv3.HttpFilter{httpFilter(gzipCompressor(tt.level)), runtimetest.RouterFilter()}
		runtimetest.SetHTTPManager(r.Listeners["web"], h)
		g, err := runtime.Build(r)
		if err != nil {
			t.Fatal(err)
		}
		if got := g.Listener("web").Chains()[0].HTTP.Compression.Level; got != tt.want {
			t.Errorf("%s: level %d, want %d", tt.level, got, tt.want)
		}
	}
}

// BenchmarkBuildRoutes builds a graph with one HTTP listener and a route configuration of
// 100 virtual hosts × 10 routes (every fifth a regex): "changed" is the cost of an update
// that brings a new route configuration, "unchanged" of one that does not (the compiled
// table of the same message is reused).
func BenchmarkBuildRoutes(b *testing.B) {
	r := httpResources()
	rcfg := runtimetest.RouteConfig("web")
	for i := range 100 {
		vh := runtimetest.VirtualHost(fmt.Sprintf("vh%d", i), []string{fmt.Sprintf("h%d.example.com", i), fmt.Sprintf("*.h%d.example.org", i)})
		for j := range 10 {
			rt := runtimetest.PrefixRoute(fmt.Sprintf("/p%d/", j), "backend")
			if j%5 == 0 {
				rt.Match.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: regexMatcher(fmt.Sprintf("/v[0-9]+/r%d/.*", j))}
			}
			vh.Routes = append(vh.Routes, rt)
		}
		rcfg.VirtualHosts = append(rcfg.VirtualHosts, vh)
	}
	r.Routes["web"] = rcfg
	b.Run("changed", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			b.StopTimer()
			r.Routes["web"] = proto.CloneOf(rcfg)
			b.StartTimer()
			if _, err := runtime.Build(r); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("unchanged", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := runtime.Build(r); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestRouteTableReuse: a Build from the same RouteConfiguration message reuses the table
// compiled before; a new message (even with the same content) is compiled afresh.
func TestRouteTableReuse(t *testing.T) {
	r := httpResources()
	g1, err := runtime.Build(r)
	if err != nil {
		t.Fatal(err)
	}
	g2, err := runtime.Build(r)
	if err != nil {
		t.Fatal(err)
	}
	if g1.RouteTable("web") != g2.RouteTable("web") {
		t.Error("same message: table compiled again")
	}
	r.Routes["web"] = proto.CloneOf(r.Routes["web"])
	g3, err := runtime.Build(r)
	if err != nil {
		t.Fatal(err)
	}
	if g3.RouteTable("web") == g2.RouteTable("web") {
		t.Error("new message: old table reused")
	}
}

// TestBuildHTTPRouteToProxyProtocolCluster: HTTP routes may not forward to a cluster that
// sends the PROXY protocol (pooled HTTP connections are shared by clients); the route
// configuration is rejected, naming the route and the cluster.
func TestBuildHTTPRouteToProxyProtocolCluster(t *testing.T) {
	r := httpResources()
	r.Clusters["b"].TransportSocket = runtimetest.UpstreamProxyProtocol(2)
	_, err := runtime.Build(r)
	var re *runtime.ResourceError
	want := `route configuration "web": virtual_hosts[0].routes[0].route: cluster "b" sends the PROXY protocol (upstream_proxy_protocol transport socket), which flotilla-agent supports for tcp_proxy only: HTTP connections to endpoints are pooled and shared by clients`
	if !errors.As(err, &re) || re.TypeURL != resourcev3.RouteType || err.Error() != want {
		t.Fatalf("Build() = %v\nwant %s", err, want)
	}
}

// TestBuildHTTPPathNormalisation: normalize_path, merge_slashes and
// path_with_escaped_slashes_action reach the manager.
func TestBuildHTTPPathNormalisation(t *testing.T) {
	r := httpResources()
	h := runtimetest.HTTPManagerOf(r.Listeners["web"])
	h.NormalizePath = wrapperspb.Bool(true)
	h.MergeSlashes = true
	h.PathWithEscapedSlashesAction = hcmv3.HttpConnectionManager_REJECT_REQUEST
	runtimetest.SetHTTPManager(r.Listeners["web"], h)
	g, err := runtime.Build(r)
	if err != nil {
		t.Fatal(err)
	}
	m := g.Listener("web").Chains()[0].HTTP
	if !m.NormalizePath || !m.MergeSlashes || m.EscapedSlashes != httproute.EscapedSlashesReject {
		t.Errorf("manager = normalize %v, merge %v, escaped slashes %v; want true, true, reject", m.NormalizePath, m.MergeSlashes, m.EscapedSlashes)
	}
}
