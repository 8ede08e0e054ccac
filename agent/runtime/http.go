package runtime

import (
	"compress/gzip"
	"fmt"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	gzipv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/gzip/compressor/v3"
	bufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/buffer/v3"
	compressorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/compressor/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	httpoptsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/flotilla-proxy/flotilla/agent/fieldcheck"
	"github.com/flotilla-proxy/flotilla/agent/httproute"
)

// HTTP on the agent. A filter chain whose network filter is an http_connection_manager
// serves HTTP: the manager is compiled into an httproute.Manager here, and the
// RouteConfiguration it names arrives over RDS and is compiled into an httproute.Table
// (routes.go). A cluster's HttpProtocolOptions say how the agent speaks HTTP to it.

// The well-known names of the HTTP pieces flotilla-agent runs.
const (
	// HTTPConnectionManagerFilterName is the network filter that serves HTTP.
	HTTPConnectionManagerFilterName = "envoy.filters.network.http_connection_manager"
	// RouterFilterName is the HTTP filter that routes requests; it must come last.
	RouterFilterName = "envoy.filters.http.router"
	// CompressorFilterName is the HTTP filter that compresses responses (gzip library only).
	CompressorFilterName = "envoy.filters.http.compressor"
	// BufferFilterName is the HTTP filter that limits request bodies (max_request_bytes).
	BufferFilterName = "envoy.filters.http.buffer"
	// GzipCompressorName is the compressor library flotilla-agent supports.
	GzipCompressorName = "envoy.compression.gzip.compressor"
	// HTTPProtocolOptionsName is the key of a cluster's typed_extension_protocol_options
	// that holds its HttpProtocolOptions.
	HTTPProtocolOptionsName = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
)

// Envoy's defaults for the HTTP connection manager and HTTP clusters.
const (
	// DefaultHTTPIdleTimeout is common_http_protocol_options.idle_timeout when unset, for
	// downstream connections (the manager) and upstream pools (a cluster) alike.
	DefaultHTTPIdleTimeout = time.Hour
	// DefaultStreamIdleTimeout is the manager's stream_idle_timeout when unset.
	DefaultStreamIdleTimeout = 5 * time.Minute
	// DefaultMaxRequestHeadersKB is max_request_headers_kb when unset.
	DefaultMaxRequestHeadersKB = 60
	// DefaultRouteTimeout is a route's timeout when unset.
	DefaultRouteTimeout = 15 * time.Second
	// DefaultRetryBudgetPercent and DefaultMinRetryConcurrency are a retry_budget's
	// budget_percent and min_retry_concurrency when unset (also what RetryBudget reports
	// for a cluster without one).
	DefaultRetryBudgetPercent  = 20.0
	DefaultMinRetryConcurrency = 3
	// DefaultCompressionMinLength is the compressor's min_content_length when unset.
	DefaultCompressionMinLength = 30
)

var (
	hcmTypeURL         = typeURLOf(&hcmv3.HttpConnectionManager{})
	routerTypeURL      = typeURLOf(&routerv3.Router{})
	compressorTypeURL  = typeURLOf(&compressorv3.Compressor{})
	bufferTypeURL      = typeURLOf(&bufferv3.Buffer{})
	gzipTypeURL        = typeURLOf(&gzipv3.Gzip{})
	httpOptionsTypeURL = typeURLOf(&httpoptsv3.HttpProtocolOptions{})
)

// isHTTPFilter reports whether a chain's network filter is an http_connection_manager.
func isHTTPFilter(f *listenerv3.Filter) bool {
	return f.GetTypedConfig().GetTypeUrl() == hcmTypeURL
}

// parseHTTPFilter decodes and checks an http_connection_manager network filter at path
// (the filter) and compiles it, with its access log (also returned for connection-level
// failures).
func parseHTTPFilter(f *listenerv3.Filter, path string) (*httproute.Manager, *AccessLog, error) {
	if err := fieldcheck.Only(f, path, "name", "typed_config"); err != nil {
		return nil, nil, err
	}
	path += ".typed_config"
	h := &hcmv3.HttpConnectionManager{}
	if err := f.GetTypedConfig().UnmarshalTo(h); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return parseHTTPManager(h, path)
}

// parseHTTPManager compiles an HttpConnectionManager at path.
func parseHTTPManager(h *hcmv3.HttpConnectionManager, path string) (*httproute.Manager, *AccessLog, error) {
	if err := fieldcheck.Only(h, path, "codec_type", "stat_prefix", "rds", "http_filters", "common_http_protocol_options",
		"server_name", "server_header_transformation", "max_request_headers_kb", "stream_idle_timeout", "request_timeout",
		"request_headers_timeout", "access_log", "use_remote_address", "xff_num_trusted_hops", "skip_xff_append",
		"upgrade_configs", "normalize_path", "merge_slashes", "path_with_escaped_slashes_action"); err != nil {
		return nil, nil, err
	}
	m := &httproute.Manager{
		NormalizePath:          h.GetNormalizePath().GetValue(),
		MergeSlashes:           h.GetMergeSlashes(),
		StatPrefix:             h.GetStatPrefix(),
		ServerName:             h.GetServerName(),
		UseRemoteAddress:       h.GetUseRemoteAddress().GetValue(),
		XFFNumTrustedHops:      h.GetXffNumTrustedHops(),
		SkipXFFAppend:          h.GetSkipXffAppend(),
		IdleTimeout:            DefaultHTTPIdleTimeout,
		StreamIdleTimeout:      DefaultStreamIdleTimeout,
		MaxRequestHeadersBytes: DefaultMaxRequestHeadersKB * 1024,
	}
	switch c := h.GetCodecType(); c {
	case hcmv3.HttpConnectionManager_AUTO:
		m.Codec = httproute.CodecAuto
	case hcmv3.HttpConnectionManager_HTTP1:
		m.Codec = httproute.CodecHTTP1
	case hcmv3.HttpConnectionManager_HTTP2:
		m.Codec = httproute.CodecHTTP2
	default:
		return nil, nil, fmt.Errorf("%s.codec_type %s is not supported by flotilla-agent (AUTO, HTTP1 or HTTP2)", path, c)
	}
	switch t := h.GetServerHeaderTransformation(); t {
	case hcmv3.HttpConnectionManager_OVERWRITE:
	case hcmv3.HttpConnectionManager_PASS_THROUGH:
		m.ServerHeaderPassThrough = true
	default:
		return nil, nil, fmt.Errorf("%s.server_header_transformation %s is not supported by flotilla-agent (OVERWRITE or PASS_THROUGH)", path, t)
	}
	switch a := h.GetPathWithEscapedSlashesAction(); a {
	case hcmv3.HttpConnectionManager_IMPLEMENTATION_SPECIFIC_DEFAULT, hcmv3.HttpConnectionManager_KEEP_UNCHANGED:
		m.EscapedSlashes = httproute.EscapedSlashesKeep
	case hcmv3.HttpConnectionManager_REJECT_REQUEST:
		m.EscapedSlashes = httproute.EscapedSlashesReject
	case hcmv3.HttpConnectionManager_UNESCAPE_AND_FORWARD:
		m.EscapedSlashes = httproute.EscapedSlashesUnescapeAndForward
	case hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT:
		m.EscapedSlashes = httproute.EscapedSlashesUnescapeAndRedirect
	default:
		return nil, nil, fmt.Errorf("%s.path_with_escaped_slashes_action %s is not supported by flotilla-agent", path, a)
	}
	name, err := parseRDS(h.GetRds(), path+".rds")
	if err != nil {
		return nil, nil, err
	}
	m.RouteConfigName = name
	if o := h.GetCommonHttpProtocolOptions(); o != nil {
		if m.IdleTimeout, err = commonHTTPOptions(o, path+".common_http_protocol_options"); err != nil {
			return nil, nil, err
		}
	}
	for _, d := range []struct {
		field string
		v     *durationpb.Duration
		dst   *time.Duration
	}{
		{"stream_idle_timeout", h.GetStreamIdleTimeout(), &m.StreamIdleTimeout},
		{"request_timeout", h.GetRequestTimeout(), &m.RequestTimeout},
		{"request_headers_timeout", h.GetRequestHeadersTimeout(), &m.RequestHeadersTimeout},
	} {
		if d.v == nil {
			continue
		}
		if *d.dst, err = duration(d.v, path+"."+d.field); err != nil {
			return nil, nil, err
		}
	}
	if kb := h.GetMaxRequestHeadersKb(); kb != nil {
		// Envoy: 1 to 8192.
		if kb.GetValue() < 1 || kb.GetValue() > 8192 {
			return nil, nil, fmt.Errorf("%s.max_request_headers_kb: %d is not within 1-8192", path, kb.GetValue())
		}
		m.MaxRequestHeadersBytes = int(kb.GetValue()) * 1024
	}
	if m.Upgrades, err = parseUpgrades(h.GetUpgradeConfigs(), path+".upgrade_configs"); err != nil {
		return nil, nil, err
	}
	if err := parseHTTPFilters(h.GetHttpFilters(), path+".http_filters", m); err != nil {
		return nil, nil, err
	}
	al, err := parseAccessLogs(h.GetAccessLog(), path+".access_log")
	if err != nil {
		return nil, nil, err
	}
	if al != nil {
		m.AccessLog = &httproute.AccessLog{Path: al.Path, Format: al.Format}
	}
	if err := h.Validate(); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, al, nil
}

// parseRDS checks rds {config_source {ads {}, resource_api_version V3}, route_config_name}
// and returns the route configuration's name.
func parseRDS(r *hcmv3.Rds, path string) (string, error) {
	if r == nil {
		return "", fmt.Errorf("%s is required (flotilla-agent takes route configurations over RDS only; route_config and scoped_routes are not supported)", path)
	}
	if err := fieldcheck.Only(r, path, "config_source", "route_config_name"); err != nil {
		return "", err
	}
	if r.GetRouteConfigName() == "" {
		return "", fmt.Errorf("%s.route_config_name is required", path)
	}
	if err := checkADSSource(r.GetConfigSource(), path+".config_source"); err != nil {
		return "", err
	}
	return r.GetRouteConfigName(), nil
}

// checkADSSource accepts a ConfigSource that is ads {} with resource_api_version AUTO or V3.
func checkADSSource(cs *corev3.ConfigSource, path string) error {
	if cs == nil {
		return fmt.Errorf("%s is required", path)
	}
	if err := fieldcheck.Only(cs, path, "ads", "resource_api_version"); err != nil {
		return err
	}
	if cs.GetAds() == nil {
		return fmt.Errorf("%s.ads is required (flotilla-agent fetches resources over ADS only)", path)
	}
	if err := fieldcheck.Only(cs.GetAds(), path+".ads"); err != nil {
		return err
	}
	if v := cs.GetResourceApiVersion(); v != corev3.ApiVersion_AUTO && v != corev3.ApiVersion_V3 {
		return fmt.Errorf("%s.resource_api_version %s is not supported by flotilla-agent (V3 only)", path, v)
	}
	return nil
}

// commonHTTPOptions checks common_http_protocol_options, of which only idle_timeout is
// supported, and returns the idle timeout (DefaultHTTPIdleTimeout when unset; 0 disables).
func commonHTTPOptions(o *corev3.HttpProtocolOptions, path string) (time.Duration, error) {
	if err := fieldcheck.Only(o, path, "idle_timeout"); err != nil {
		return 0, err
	}
	if o.IdleTimeout == nil {
		return DefaultHTTPIdleTimeout, nil
	}
	return duration(o.GetIdleTimeout(), path+".idle_timeout")
}

// upgradeConfig is an upgrade_configs entry of a manager or of a route.
type upgradeConfig interface {
	proto.Message
	GetUpgradeType() string
	GetEnabled() *wrapperspb.BoolValue
}

// parseUpgrades checks upgrade_configs (of a manager or a route): upgrade types and whether
// each is enabled (default true). Only websocket is supported. nil when there are none.
func parseUpgrades[U upgradeConfig](ucs []U, path string) (map[string]bool, error) {
	if len(ucs) == 0 {
		return nil, nil
	}
	out := make(map[string]bool, len(ucs))
	for i, u := range ucs {
		p := fmt.Sprintf("%s[%d]", path, i)
		if err := fieldcheck.Only(u, p, "upgrade_type", "enabled"); err != nil {
			return nil, err
		}
		t := strings.ToLower(u.GetUpgradeType())
		if t != "websocket" {
			return nil, fmt.Errorf("%s.upgrade_type %q is not supported by flotilla-agent (websocket only)", p, u.GetUpgradeType())
		}
		if _, dup := out[t]; dup {
			return nil, fmt.Errorf("%s.upgrade_type %q is given twice", p, u.GetUpgradeType())
		}
		out[t] = u.GetEnabled() == nil || u.GetEnabled().GetValue()
	}
	return out, nil
}

// parseHTTPFilters checks http_filters: optionally a compressor (gzip) and a buffer, each at
// most once, then the router, which must be last.
func parseHTTPFilters(fs []*hcmv3.HttpFilter, path string, m *httproute.Manager) error {
	if len(fs) == 0 {
		return fmt.Errorf("%s: the %s filter is required (last)", path, RouterFilterName)
	}
	seen := map[string]int{}
	for i, f := range fs {
		p := fmt.Sprintf("%s[%d]", path, i)
		if err := fieldcheck.Only(f, p, "name", "typed_config"); err != nil {
			return err
		}
		tc := f.GetTypedConfig()
		if tc == nil {
			return fmt.Errorf("%s.typed_config is required", p)
		}
		if j, ok := seen[tc.GetTypeUrl()]; ok {
			return fmt.Errorf("%s: a second %s filter (first at %s[%d]) is not supported by flotilla-agent", p, f.GetName(), path, j)
		}
		seen[tc.GetTypeUrl()] = i
		last := i == len(fs)-1
		p += ".typed_config"
		switch tc.GetTypeUrl() {
		case routerTypeURL:
			if !last {
				return fmt.Errorf("%s: %s must be the last HTTP filter", p, RouterFilterName)
			}
			r := &routerv3.Router{}
			if err := tc.UnmarshalTo(r); err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			// The agent adds no x-envoy-* headers and keeps no per-cluster dynamic stats,
			// so these two change nothing.
			if err := fieldcheck.Only(r, p, "dynamic_stats", "suppress_envoy_headers"); err != nil {
				return err
			}
			continue
		case compressorTypeURL:
			c := &compressorv3.Compressor{}
			if err := tc.UnmarshalTo(c); err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			comp, err := parseCompressor(c, p)
			if err != nil {
				return err
			}
			m.Compression = comp
		case bufferTypeURL:
			b := &bufferv3.Buffer{}
			if err := tc.UnmarshalTo(b); err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			if err := fieldcheck.Only(b, p, "max_request_bytes"); err != nil {
				return err
			}
			if b.GetMaxRequestBytes().GetValue() < 1 {
				return fmt.Errorf("%s.max_request_bytes is required (at least 1)", p)
			}
			m.MaxRequestBodyBytes = int64(b.GetMaxRequestBytes().GetValue())
		default:
			return fmt.Errorf("%s: HTTP filter type %q is not supported by flotilla-agent (only %s, %s and %s)", p, tc.GetTypeUrl(), CompressorFilterName, BufferFilterName, RouterFilterName)
		}
		if last {
			return fmt.Errorf("%s: the last HTTP filter must be %s", p, RouterFilterName)
		}
	}
	return nil
}

// parseCompressor checks a compressor filter: a gzip compressor_library and the response
// direction's min_content_length and content_type (or the deprecated top-level
// content_length and content_type).
func parseCompressor(c *compressorv3.Compressor, path string) (*httproute.Compression, error) {
	if err := fieldcheck.Only(c, path, "content_length", "content_type", "compressor_library", "response_direction_config"); err != nil {
		return nil, err
	}
	out := &httproute.Compression{MinContentLength: DefaultCompressionMinLength, Level: gzip.DefaultCompression}
	if cl := c.GetContentLength(); cl != nil {
		out.MinContentLength = int(cl.GetValue())
	}
	types := c.GetContentType()
	if rd := c.GetResponseDirectionConfig(); rd != nil {
		p := path + ".response_direction_config"
		if err := fieldcheck.Only(rd, p, "common_config"); err != nil {
			return nil, err
		}
		cc := rd.GetCommonConfig()
		if err := fieldcheck.Only(cc, p+".common_config", "min_content_length", "content_type"); err != nil {
			return nil, err
		}
		if cl := cc.GetMinContentLength(); cl != nil {
			if c.ContentLength != nil {
				return nil, fmt.Errorf("%s.common_config.min_content_length: content_length is set too", p)
			}
			out.MinContentLength = int(cl.GetValue())
		}
		if len(cc.GetContentType()) > 0 {
			if len(types) > 0 {
				return nil, fmt.Errorf("%s.common_config.content_type: content_type is set too", p)
			}
			types = cc.GetContentType()
		}
	}
	for i, t := range types {
		t = strings.ToLower(strings.TrimSpace(t))
		if t == "" || strings.ContainsAny(t, " ;,") {
			return nil, fmt.Errorf("%s.content_type[%d]: %q is not a media type", path, i, types[i])
		}
		out.ContentTypes = append(out.ContentTypes, t)
	}
	lib := c.GetCompressorLibrary()
	p := path + ".compressor_library"
	if lib == nil {
		return nil, fmt.Errorf("%s is required", p)
	}
	if err := fieldcheck.Only(lib, p, "name", "typed_config"); err != nil {
		return nil, err
	}
	if lib.GetTypedConfig().GetTypeUrl() != gzipTypeURL {
		return nil, fmt.Errorf("%s.typed_config: compressor library %q is not supported by flotilla-agent (only %s)", p, lib.GetTypedConfig().GetTypeUrl(), GzipCompressorName)
	}
	p += ".typed_config"
	g := &gzipv3.Gzip{}
	if err := lib.GetTypedConfig().UnmarshalTo(g); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if err := fieldcheck.Only(g, p, "compression_level"); err != nil {
		return nil, err
	}
	switch l := g.GetCompressionLevel(); l {
	case gzipv3.Gzip_DEFAULT_COMPRESSION:
	case gzipv3.Gzip_BEST_SPEED:
		out.Level = gzip.BestSpeed
	case gzipv3.Gzip_BEST_COMPRESSION:
		out.Level = gzip.BestCompression
	default:
		// COMPRESSION_LEVEL_1 … COMPRESSION_LEVEL_9 follow BEST_SPEED and BEST_COMPRESSION.
		n := int(l) - int(gzipv3.Gzip_COMPRESSION_LEVEL_1) + 1
		if n < 1 || n > 9 {
			return nil, fmt.Errorf("%s.compression_level %s is not supported by flotilla-agent", p, l)
		}
		out.Level = n
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return out, nil
}

// clusterHTTP is a cluster's HttpProtocolOptions as the agent runs them.
type clusterHTTP struct {
	http2       bool
	idleTimeout time.Duration
}

// parseClusterHTTP checks typed_extension_protocol_options: only HTTPProtocolOptionsName,
// an HttpProtocolOptions with explicit_http_config (http_protocol_options {} or
// http2_protocol_options {}) and common_http_protocol_options.idle_timeout.
func parseClusterHTTP(c *clusterv3.Cluster) (clusterHTTP, error) {
	out := clusterHTTP{idleTimeout: DefaultHTTPIdleTimeout}
	for key, a := range c.GetTypedExtensionProtocolOptions() {
		path := fmt.Sprintf("typed_extension_protocol_options[%q]", key)
		if key != HTTPProtocolOptionsName || a.GetTypeUrl() != httpOptionsTypeURL {
			return out, fmt.Errorf("%s: only %s is supported by flotilla-agent", path, HTTPProtocolOptionsName)
		}
		o := &httpoptsv3.HttpProtocolOptions{}
		if err := a.UnmarshalTo(o); err != nil {
			return out, fmt.Errorf("%s: %w", path, err)
		}
		if err := fieldcheck.Only(o, path, "common_http_protocol_options", "explicit_http_config"); err != nil {
			return out, err
		}
		if co := o.GetCommonHttpProtocolOptions(); co != nil {
			d, err := commonHTTPOptions(co, path+".common_http_protocol_options")
			if err != nil {
				return out, err
			}
			out.idleTimeout = d
		}
		if e := o.GetExplicitHttpConfig(); e != nil {
			p := path + ".explicit_http_config"
			if err := fieldcheck.Only(e, p, "http_protocol_options", "http2_protocol_options"); err != nil {
				return out, err
			}
			switch {
			case e.GetHttp2ProtocolOptions() != nil:
				if err := fieldcheck.Only(e.GetHttp2ProtocolOptions(), p+".http2_protocol_options"); err != nil {
					return out, err
				}
				out.http2 = true
			case e.GetHttpProtocolOptions() != nil:
				if err := fieldcheck.Only(e.GetHttpProtocolOptions(), p+".http_protocol_options"); err != nil {
					return out, err
				}
			default:
				return out, fmt.Errorf("%s: http_protocol_options or http2_protocol_options is required", p)
			}
		} else if o.UpstreamProtocolOptions == nil {
			return out, fmt.Errorf("%s.explicit_http_config is required", path)
		}
		if err := o.Validate(); err != nil {
			return out, fmt.Errorf("%s: %w", path, err)
		}
	}
	return out, nil
}

// parseRetryBudget reads circuit_breakers.thresholds[i].retry_budget.
func parseRetryBudget(rb *clusterv3.CircuitBreakers_Thresholds_RetryBudget, path string) (float64, uint32, error) {
	if err := fieldcheck.Only(rb, path, "budget_percent", "min_retry_concurrency"); err != nil {
		return 0, 0, err
	}
	pct, minc := DefaultRetryBudgetPercent, uint32(DefaultMinRetryConcurrency)
	if p := rb.GetBudgetPercent(); p != nil {
		pct = p.GetValue()
		if pct < 0 || pct > 100 {
			return 0, 0, fmt.Errorf("%s.budget_percent: %g is not within 0-100", path, pct)
		}
	}
	if m := rb.GetMinRetryConcurrency(); m != nil {
		minc = m.GetValue()
	}
	return pct, minc, nil
}

// HTTP2 reports whether the agent speaks HTTP/2 to the cluster's endpoints (cleartext h2c
// with prior knowledge, or h2 over the cluster's TLS): explicit_http_config
// http2_protocol_options in its HttpProtocolOptions. Otherwise HTTP/1.1.
func (c *Cluster) HTTP2() bool { return c.http.http2 }

// HTTPIdleTimeout returns how long an idle upstream HTTP connection stays in the pool
// (common_http_protocol_options.idle_timeout of the cluster's HttpProtocolOptions;
// DefaultHTTPIdleTimeout when unset; 0 means no limit).
func (c *Cluster) HTTPIdleTimeout() time.Duration { return c.http.idleTimeout }

// RetryBudget returns the cluster's retry budget (circuit_breakers.thresholds[0]
// .retry_budget): active retries may be at most percent % of the active requests, but
// minConcurrency are always allowed. Without one, Envoy's defaults (20%, 3).
func (c *Cluster) RetryBudget() (percent float64, minConcurrency uint32) {
	return c.retryPercent, c.minRetryConcurrency
}
