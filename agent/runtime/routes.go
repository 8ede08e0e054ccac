package runtime

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/flotilla-proxy/flotilla/agent/accesslog"
	"github.com/flotilla-proxy/flotilla/agent/fieldcheck"
	"github.com/flotilla-proxy/flotilla/agent/httproute"
)

// routeTables remembers the tables the latest Build compiled, by RouteConfiguration message:
// the xDS client hands Build the very same message for a route configuration that did not
// change, so an update of other resources (endpoints, say) does not compile every route and
// regex again. Messages are read-only once handed to Build, and tables are immutable, so a
// table can serve every graph built from its message. Only the latest Build's tables are
// kept.
var routeTables tableCache

type tableCache struct {
	mu sync.Mutex
	m  map[*routev3.RouteConfiguration]*httproute.Table
}

// get returns the tables of the latest Build; the map must not be modified.
func (c *tableCache) get() map[*routev3.RouteConfiguration]*httproute.Table {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m
}

// put remembers the tables built from msgs (both keyed by resource name).
func (c *tableCache) put(msgs map[string]*routev3.RouteConfiguration, tables map[string]*httproute.Table) {
	m := make(map[*routev3.RouteConfiguration]*httproute.Table, len(tables))
	for name, t := range tables {
		m[msgs[name]] = t
	}
	c.mu.Lock()
	c.m = m
	c.mu.Unlock()
}

// maxRegexLen bounds a safe_regex: RE2 runs in linear time, but a huge program still costs
// memory per route.
const maxRegexLen = 4096

// parseRouteConfig checks a RouteConfiguration (RDS) against the supported subset and
// compiles it into an indexed httproute.Table.
func parseRouteConfig(rc *routev3.RouteConfiguration) (*httproute.Table, error) {
	if rc == nil {
		return nil, errors.New("resource is empty")
	}
	if err := fieldcheck.Only(rc, "", "name", "virtual_hosts", "response_headers_to_add", "response_headers_to_remove",
		"request_headers_to_add", "request_headers_to_remove", "validate_clusters", "ignore_port_in_host_matching"); err != nil {
		return nil, err
	}
	if rc.GetName() == "" {
		return nil, errors.New("name is required")
	}
	t := &httproute.Table{Name: rc.GetName(), IgnorePort: rc.GetIgnorePortInHostMatching()}
	var err error
	if t.Headers, err = parseHeaderMutations(rc, ""); err != nil {
		return nil, err
	}
	domains := map[string]int{} // lower-case domain → virtual host index
	for i, vh := range rc.GetVirtualHosts() {
		path := fmt.Sprintf("virtual_hosts[%d]", i)
		v, err := parseVirtualHost(vh, path)
		if err != nil {
			return nil, err
		}
		for j, d := range v.Domains {
			if k, ok := domains[d]; ok {
				return nil, fmt.Errorf("%s.domains[%d]: %q is already a domain of virtual_hosts[%d] (a domain must be unique in a route configuration)", path, j, d, k)
			}
			domains[d] = i
		}
		t.VirtualHosts = append(t.VirtualHosts, v)
	}
	if err := rc.Validate(); err != nil {
		return nil, err
	}
	t.Index()
	return t, nil
}

// parseVirtualHost compiles one virtual host; its domains come back in lower case.
func parseVirtualHost(vh *routev3.VirtualHost, path string) (*httproute.VirtualHost, error) {
	if err := fieldcheck.Only(vh, path, "name", "domains", "routes", "require_tls", "request_headers_to_add",
		"request_headers_to_remove", "response_headers_to_add", "response_headers_to_remove"); err != nil {
		return nil, err
	}
	if vh.GetName() == "" {
		return nil, fmt.Errorf("%s.name is required", path)
	}
	v := &httproute.VirtualHost{Name: vh.GetName()}
	if len(vh.GetDomains()) == 0 {
		return nil, fmt.Errorf("%s.domains: at least one domain is required", path)
	}
	for i, d := range vh.GetDomains() {
		d = strings.ToLower(d)
		if err := checkDomain(d); err != nil {
			return nil, fmt.Errorf("%s.domains[%d]: %q %w", path, i, vh.GetDomains()[i], err)
		}
		if slices.Contains(v.Domains, d) {
			return nil, fmt.Errorf("%s.domains[%d]: %q is given twice", path, i, vh.GetDomains()[i])
		}
		v.Domains = append(v.Domains, d)
	}
	switch r := vh.GetRequireTls(); r {
	case routev3.VirtualHost_NONE:
	case routev3.VirtualHost_EXTERNAL_ONLY:
		v.RequireTLS = httproute.TLSExternalOnly
	case routev3.VirtualHost_ALL:
		v.RequireTLS = httproute.TLSAll
	default:
		return nil, fmt.Errorf("%s.require_tls %s is not supported by flotilla-agent", path, r)
	}
	var err error
	if v.Headers, err = parseHeaderMutations(vh, path); err != nil {
		return nil, err
	}
	for i, r := range vh.GetRoutes() {
		rt, err := parseRoute(r, fmt.Sprintf("%s.routes[%d]", path, i))
		if err != nil {
			return nil, err
		}
		v.Routes = append(v.Routes, rt)
	}
	return v, nil
}

// checkDomain checks a lower-case virtual host domain: "*", or a host name (or IP,
// optionally with a port) with at most one "*", as its first or last character.
func checkDomain(d string) error {
	switch {
	case d == "":
		return errors.New("is empty")
	case d == "*":
		return nil
	case strings.Count(d, "*") > 1:
		return errors.New("has more than one wildcard")
	case len(d) > 2 && strings.Contains(d[1:len(d)-1], "*"):
		return errors.New("has a wildcard in the middle (only a leading or trailing * is supported)")
	}
	for i := 0; i < len(d); i++ {
		if c := d[i]; c <= ' ' || c >= 0x7f || c == '/' || c == '?' || c == '#' || c == '@' {
			return fmt.Errorf("has the character %q, which cannot appear in a host", c)
		}
	}
	return nil
}

// parseRoute compiles one route.
func parseRoute(r *routev3.Route, path string) (*httproute.Route, error) {
	if err := fieldcheck.Only(r, path, "name", "match", "metadata", "route", "redirect", "direct_response",
		"request_headers_to_add", "request_headers_to_remove", "response_headers_to_add", "response_headers_to_remove"); err != nil {
		return nil, err
	}
	rt := &httproute.Route{Name: r.GetName()}
	if r.GetMatch() == nil {
		return nil, fmt.Errorf("%s.match is required", path)
	}
	var err error
	if rt.Match, err = parseRouteMatch(r.GetMatch(), path+".match"); err != nil {
		return nil, err
	}
	if rt.Headers, err = parseHeaderMutations(r, path); err != nil {
		return nil, err
	}
	switch {
	case r.GetRoute() != nil:
		rt.Forward, err = parseRouteAction(r.GetRoute(), path+".route")
	case r.GetRedirect() != nil:
		rt.Redirect, err = parseRedirect(r.GetRedirect(), path+".redirect")
	case r.GetDirectResponse() != nil:
		rt.Direct, err = parseDirectResponse(r.GetDirectResponse(), path+".direct_response")
	default:
		err = fmt.Errorf("%s: one of route, redirect and direct_response is required", path)
	}
	if err != nil {
		return nil, err
	}
	return rt, nil
}

// parseRouteMatch compiles a route's match: prefix, path or safe_regex, case_sensitive,
// headers and grpc.
func parseRouteMatch(m *routev3.RouteMatch, path string) (httproute.Match, error) {
	var out httproute.Match
	if err := fieldcheck.Only(m, path, "case_sensitive", "headers", "grpc", "prefix", "path", "safe_regex"); err != nil {
		return out, err
	}
	switch ps := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		out.Prefix = ps.Prefix // "" matches every request, even "*" and absolute targets
	case *routev3.RouteMatch_Path:
		if ps.Path == "" {
			return out, fmt.Errorf("%s.path: must not be empty", path)
		}
		out.Path = ps.Path
	case *routev3.RouteMatch_SafeRegex:
		re, err := parseRegex(ps.SafeRegex, path+".safe_regex")
		if err != nil {
			return out, err
		}
		out.Regex = re
	default:
		return out, fmt.Errorf("%s: one of prefix, path and safe_regex is required", path)
	}
	if cs := m.GetCaseSensitive(); cs != nil && !cs.GetValue() {
		if out.Regex != nil {
			// Envoy ignores case_sensitive for safe_regex; say so rather than ignore it.
			return out, fmt.Errorf("%s.case_sensitive: false does not apply to safe_regex (use (?i) in the regex)", path)
		}
		out.CaseInsensitive = true
	}
	if g := m.GetGrpc(); g != nil {
		if err := fieldcheck.Only(g, path+".grpc"); err != nil {
			return out, err
		}
		out.GRPC = true
	}
	for i, h := range m.GetHeaders() {
		hm, err := parseHeaderMatcher(h, fmt.Sprintf("%s.headers[%d]", path, i))
		if err != nil {
			return out, err
		}
		out.Headers = append(out.Headers, hm)
	}
	return out, nil
}

// parseRegex compiles a RegexMatcher (RE2 syntax) anchored at both ends: Envoy's safe_regex
// must match the whole value.
func parseRegex(rm *matcherv3.RegexMatcher, path string) (*regexp.Regexp, error) {
	if err := fieldcheck.Only(rm, path, "regex", "google_re2"); err != nil {
		return nil, err
	}
	if g := rm.GetGoogleRe2(); g != nil {
		if err := fieldcheck.Only(g, path+".google_re2"); err != nil {
			return nil, err
		}
	}
	src := rm.GetRegex()
	if src == "" {
		return nil, fmt.Errorf("%s.regex is required", path)
	}
	if len(src) > maxRegexLen {
		return nil, fmt.Errorf("%s.regex: longer than %d bytes", path, maxRegexLen)
	}
	re, err := regexp.Compile(`^(?:` + src + `)$`)
	if err != nil {
		return nil, fmt.Errorf("%s.regex: %q is not a valid RE2 regular expression: %w", path, src, err)
	}
	return re, nil
}

// headerMatchName maps a header name of a route match to the form httproute.HeaderMatch
// uses: the pseudo-headers as they are ("host" is ":authority"), others canonical.
func headerMatchName(name, path string) (string, error) {
	n := strings.ToLower(name)
	switch n {
	case ":method", ":authority", ":path", ":scheme":
		return n, nil
	case "host":
		return ":authority", nil
	}
	if strings.HasPrefix(n, ":") {
		return "", fmt.Errorf("%s: pseudo-header %q is not supported by flotilla-agent (:method, :authority, :path, :scheme)", path, name)
	}
	if !validHeaderName(name) {
		return "", fmt.Errorf("%s: %q is not a valid header name", path, name)
	}
	return http.CanonicalHeaderKey(name), nil
}

// parseHeaderMatcher compiles one headers entry of a route match: string_match (exact,
// prefix, suffix, contains, safe_regex; ignore_case) or present_match, with invert_match.
func parseHeaderMatcher(h *routev3.HeaderMatcher, path string) (httproute.HeaderMatch, error) {
	var out httproute.HeaderMatch
	if err := fieldcheck.Only(h, path, "name", "invert_match", "treat_missing_header_as_empty", "string_match", "present_match"); err != nil {
		return out, err
	}
	name, err := headerMatchName(h.GetName(), path+".name")
	if err != nil {
		return out, err
	}
	out.Name, out.Invert, out.MissingAsEmpty = name, h.GetInvertMatch(), h.GetTreatMissingHeaderAsEmpty()
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case *routev3.HeaderMatcher_PresentMatch:
		out.Kind, out.Present = httproute.HeaderPresent, s.PresentMatch
	case *routev3.HeaderMatcher_StringMatch:
		p := path + ".string_match"
		sm := s.StringMatch
		if err := fieldcheck.Only(sm, p, "ignore_case", "exact", "prefix", "suffix", "safe_regex", "contains"); err != nil {
			return out, err
		}
		out.IgnoreCase = sm.GetIgnoreCase()
		switch ms := sm.GetMatchPattern().(type) {
		case *matcherv3.StringMatcher_Exact:
			out.Kind, out.Exact = httproute.HeaderExact, ms.Exact
		case *matcherv3.StringMatcher_Prefix:
			out.Kind, out.Prefix = httproute.HeaderPrefix, ms.Prefix
		case *matcherv3.StringMatcher_Suffix:
			out.Kind, out.Suffix = httproute.HeaderSuffix, ms.Suffix
		case *matcherv3.StringMatcher_Contains:
			out.Kind, out.Contains = httproute.HeaderContains, ms.Contains
		case *matcherv3.StringMatcher_SafeRegex:
			if out.IgnoreCase {
				return out, fmt.Errorf("%s.ignore_case does not apply to safe_regex (use (?i) in the regex)", p)
			}
			re, err := parseRegex(ms.SafeRegex, p+".safe_regex")
			if err != nil {
				return out, err
			}
			out.Kind, out.Regex = httproute.HeaderRegex, re
		default:
			return out, fmt.Errorf("%s: one of exact, prefix, suffix, contains and safe_regex is required", p)
		}
		if out.IgnoreCase {
			out.Exact, out.Prefix, out.Suffix, out.Contains = strings.ToLower(out.Exact), strings.ToLower(out.Prefix), strings.ToLower(out.Suffix), strings.ToLower(out.Contains)
		}
	default:
		return out, fmt.Errorf("%s: string_match or present_match is required", path)
	}
	if err := h.Validate(); err != nil {
		return out, fmt.Errorf("%s: %w", path, err)
	}
	return out, nil
}

// parseRouteAction compiles a route action that forwards.
func parseRouteAction(a *routev3.RouteAction, path string) (*httproute.Forward, error) {
	if err := fieldcheck.Only(a, path, "cluster", "weighted_clusters", "prefix_rewrite", "host_rewrite_literal",
		"auto_host_rewrite", "timeout", "idle_timeout", "upgrade_configs", "retry_policy"); err != nil {
		return nil, err
	}
	f := &httproute.Forward{Timeout: DefaultRouteTimeout, PrefixRewrite: a.GetPrefixRewrite()}
	if pr := f.PrefixRewrite; pr != "" {
		if pr[0] != '/' {
			return nil, fmt.Errorf("%s.prefix_rewrite: %q must start with /", path, pr)
		}
		if _, err := url.PathUnescape(pr); err != nil {
			return nil, fmt.Errorf("%s.prefix_rewrite: %q is not a valid escaped path: %w", path, pr, err)
		}
	}
	switch cs := a.GetClusterSpecifier().(type) {
	case *routev3.RouteAction_Cluster:
		if cs.Cluster == "" {
			return nil, fmt.Errorf("%s.cluster: must not be empty", path)
		}
		f.Clusters = []httproute.WeightedCluster{{Name: cs.Cluster, Weight: 1}}
		f.TotalWeight = 1
	case *routev3.RouteAction_WeightedClusters:
		p := path + ".weighted_clusters"
		wc := cs.WeightedClusters
		if err := fieldcheck.Only(wc, p, "clusters", "total_weight"); err != nil {
			return nil, err
		}
		var total uint64
		for i, c := range wc.GetClusters() {
			q := fmt.Sprintf("%s.clusters[%d]", p, i)
			if err := fieldcheck.Only(c, q, "name", "weight", "request_headers_to_add", "request_headers_to_remove",
				"response_headers_to_add", "response_headers_to_remove"); err != nil {
				return nil, err
			}
			if c.GetName() == "" {
				return nil, fmt.Errorf("%s.name is required", q)
			}
			hm, err := parseHeaderMutations(c, q)
			if err != nil {
				return nil, err
			}
			w := c.GetWeight().GetValue()
			total += uint64(w)
			f.Clusters = append(f.Clusters, httproute.WeightedCluster{Name: c.GetName(), Weight: w, Headers: hm})
		}
		if len(f.Clusters) == 0 {
			return nil, fmt.Errorf("%s.clusters: at least one cluster is required", p)
		}
		if total == 0 || total > 1<<32-1 {
			return nil, fmt.Errorf("%s: the weights add up to %d (must be 1 to 4294967295)", p, total)
		}
		if tw := wc.GetTotalWeight(); tw != nil && uint64(tw.GetValue()) != total {
			return nil, fmt.Errorf("%s.total_weight: %d, but the weights add up to %d", p, tw.GetValue(), total)
		}
		f.TotalWeight = uint32(total)
	default:
		return nil, fmt.Errorf("%s: cluster or weighted_clusters is required", path)
	}
	switch hr := a.GetHostRewriteSpecifier().(type) {
	case nil:
	case *routev3.RouteAction_HostRewriteLiteral:
		if hr.HostRewriteLiteral == "" || checkDomain(strings.ToLower(hr.HostRewriteLiteral)) != nil || strings.Contains(hr.HostRewriteLiteral, "*") {
			return nil, fmt.Errorf("%s.host_rewrite_literal: %q is not a host", path, hr.HostRewriteLiteral)
		}
		f.HostRewrite = hr.HostRewriteLiteral
	case *routev3.RouteAction_AutoHostRewrite:
		f.AutoHostRewrite = hr.AutoHostRewrite.GetValue()
	}
	var err error
	if a.Timeout != nil {
		if f.Timeout, err = duration(a.GetTimeout(), path+".timeout"); err != nil {
			return nil, err
		}
	}
	if a.IdleTimeout != nil {
		if f.IdleTimeout, err = duration(a.GetIdleTimeout(), path+".idle_timeout"); err != nil {
			return nil, err
		}
		f.IdleTimeoutSet = true
	}
	if f.Upgrades, err = parseUpgrades(a.GetUpgradeConfigs(), path+".upgrade_configs"); err != nil {
		return nil, err
	}
	if rp := a.GetRetryPolicy(); rp != nil {
		if f.Retry, err = parseRetryPolicy(rp, path+".retry_policy"); err != nil {
			return nil, err
		}
	}
	if err := a.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// parseRetryPolicy compiles retry_on (connect-failure, 5xx, gateway-error, reset,
// retriable-status-codes), num_retries (default 1), per_try_timeout and
// retriable_status_codes.
func parseRetryPolicy(rp *routev3.RetryPolicy, path string) (*httproute.RetryPolicy, error) {
	if err := fieldcheck.Only(rp, path, "retry_on", "num_retries", "per_try_timeout", "retriable_status_codes"); err != nil {
		return nil, err
	}
	out := &httproute.RetryPolicy{On: map[string]bool{}, NumRetries: 1}
	for _, c := range strings.Split(rp.GetRetryOn(), ",") {
		switch c = strings.TrimSpace(c); c {
		case "":
		case httproute.RetryConnectFailure, httproute.Retry5xx, httproute.RetryGatewayError, httproute.RetryReset, httproute.RetryRetriableStatusCodes:
			out.On[c] = true
		default:
			return nil, fmt.Errorf("%s.retry_on: %q is not supported by flotilla-agent (%s, %s, %s, %s or %s)", path, c,
				httproute.RetryConnectFailure, httproute.Retry5xx, httproute.RetryGatewayError, httproute.RetryReset, httproute.RetryRetriableStatusCodes)
		}
	}
	if n := rp.GetNumRetries(); n != nil {
		out.NumRetries = n.GetValue()
	}
	if rp.PerTryTimeout != nil {
		d, err := duration(rp.GetPerTryTimeout(), path+".per_try_timeout")
		if err != nil {
			return nil, err
		}
		out.PerTryTimeout = d
	}
	for i, s := range rp.GetRetriableStatusCodes() {
		if s < 100 || s > 599 {
			return nil, fmt.Errorf("%s.retriable_status_codes[%d]: %d is not an HTTP status code", path, i, s)
		}
		out.RetriableStatusCodes = append(out.RetriableStatusCodes, int(s))
	}
	if len(out.RetriableStatusCodes) > 0 && !out.On[httproute.RetryRetriableStatusCodes] {
		return nil, fmt.Errorf("%s.retriable_status_codes: set, but retry_on lacks %s", path, httproute.RetryRetriableStatusCodes)
	}
	return out, nil
}

// parseRedirect compiles a redirect action.
func parseRedirect(r *routev3.RedirectAction, path string) (*httproute.Redirect, error) {
	if err := fieldcheck.Only(r, path, "host_redirect", "port_redirect", "response_code", "strip_query", "https_redirect",
		"scheme_redirect", "path_redirect", "prefix_rewrite"); err != nil {
		return nil, err
	}
	out := &httproute.Redirect{Host: r.GetHostRedirect(), StripQuery: r.GetStripQuery()}
	switch s := r.GetSchemeRewriteSpecifier().(type) {
	case *routev3.RedirectAction_HttpsRedirect:
		if s.HttpsRedirect {
			out.Scheme = "https"
		}
	case *routev3.RedirectAction_SchemeRedirect:
		sc := strings.ToLower(s.SchemeRedirect)
		if sc != "http" && sc != "https" {
			return nil, fmt.Errorf("%s.scheme_redirect: %q is not supported by flotilla-agent (http or https)", path, s.SchemeRedirect)
		}
		out.Scheme = sc
	}
	if out.Host != "" && (checkDomain(strings.ToLower(out.Host)) != nil || strings.Contains(out.Host, "*")) {
		return nil, fmt.Errorf("%s.host_redirect: %q is not a host", path, out.Host)
	}
	if p := r.GetPortRedirect(); p > 65535 {
		return nil, fmt.Errorf("%s.port_redirect: %d is not a TCP port", path, p)
	} else {
		out.Port = p
	}
	switch pr := r.GetPathRewriteSpecifier().(type) {
	case *routev3.RedirectAction_PathRedirect:
		if pr.PathRedirect == "" || pr.PathRedirect[0] != '/' {
			return nil, fmt.Errorf("%s.path_redirect: %q must start with /", path, pr.PathRedirect)
		}
		out.Path = pr.PathRedirect
	case *routev3.RedirectAction_PrefixRewrite:
		if pr.PrefixRewrite == "" || pr.PrefixRewrite[0] != '/' {
			return nil, fmt.Errorf("%s.prefix_rewrite: %q must start with /", path, pr.PrefixRewrite)
		}
		out.PrefixRewrite = pr.PrefixRewrite
	}
	switch c := r.GetResponseCode(); c {
	case routev3.RedirectAction_MOVED_PERMANENTLY:
		out.Code = http.StatusMovedPermanently
	case routev3.RedirectAction_FOUND:
		out.Code = http.StatusFound
	case routev3.RedirectAction_SEE_OTHER:
		out.Code = http.StatusSeeOther
	case routev3.RedirectAction_TEMPORARY_REDIRECT:
		out.Code = http.StatusTemporaryRedirect
	case routev3.RedirectAction_PERMANENT_REDIRECT:
		out.Code = http.StatusPermanentRedirect
	default:
		return nil, fmt.Errorf("%s.response_code %s is not supported by flotilla-agent", path, c)
	}
	return out, nil
}

// maxDirectBody is Envoy's default max_direct_response_body_size_bytes.
const maxDirectBody = 4096

// parseDirectResponse compiles a direct_response: status and an inline body.
func parseDirectResponse(d *routev3.DirectResponseAction, path string) (*httproute.Direct, error) {
	if err := fieldcheck.Only(d, path, "status", "body"); err != nil {
		return nil, err
	}
	if s := d.GetStatus(); s < 200 || s > 599 {
		return nil, fmt.Errorf("%s.status: %d is not within 200-599", path, s)
	}
	out := &httproute.Direct{Status: int(d.GetStatus())}
	if b := d.GetBody(); b != nil {
		p := path + ".body"
		if err := fieldcheck.Only(b, p, "inline_string", "inline_bytes"); err != nil {
			return nil, err
		}
		switch s := b.GetSpecifier().(type) {
		case *corev3.DataSource_InlineString:
			out.Body = []byte(s.InlineString)
		case *corev3.DataSource_InlineBytes:
			out.Body = slices.Clone(s.InlineBytes)
		default:
			return nil, fmt.Errorf("%s: inline_string or inline_bytes is required", p)
		}
		if len(out.Body) > maxDirectBody {
			return nil, fmt.Errorf("%s: %d bytes, more than the %d a direct response may carry", p, len(out.Body), maxDirectBody)
		}
	}
	return out, nil
}

// headerMutator is a message with request/response headers to add and remove: a route
// configuration, virtual host, route or weighted cluster.
type headerMutator interface {
	GetRequestHeadersToAdd() []*corev3.HeaderValueOption
	GetRequestHeadersToRemove() []string
	GetResponseHeadersToAdd() []*corev3.HeaderValueOption
	GetResponseHeadersToRemove() []string
}

// parseHeaderMutations compiles request/response_headers_to_add/remove of the message at
// path.
func parseHeaderMutations(m headerMutator, path string) (httproute.HeaderMutations, error) {
	var out httproute.HeaderMutations
	var err error
	if out.RequestAdd, err = parseHeadersToAdd(m.GetRequestHeadersToAdd(), fieldcheck.Join(path, "request_headers_to_add")); err != nil {
		return out, err
	}
	if out.ResponseAdd, err = parseHeadersToAdd(m.GetResponseHeadersToAdd(), fieldcheck.Join(path, "response_headers_to_add")); err != nil {
		return out, err
	}
	if out.RequestRemove, err = parseHeadersToRemove(m.GetRequestHeadersToRemove(), fieldcheck.Join(path, "request_headers_to_remove")); err != nil {
		return out, err
	}
	if out.ResponseRemove, err = parseHeadersToRemove(m.GetResponseHeadersToRemove(), fieldcheck.Join(path, "response_headers_to_remove")); err != nil {
		return out, err
	}
	return out, nil
}

// parseHeadersToAdd compiles HeaderValueOptions: header {key, value} with append_action
// APPEND_IF_EXISTS_OR_ADD (Envoy's default) or OVERWRITE_IF_EXISTS_OR_ADD, or the
// deprecated append. Values may hold Envoy command operators
// (%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%).
func parseHeadersToAdd(hvs []*corev3.HeaderValueOption, path string) ([]httproute.HeaderValue, error) {
	var out []httproute.HeaderValue
	for i, hv := range hvs {
		p := fmt.Sprintf("%s[%d]", path, i)
		if err := fieldcheck.Only(hv, p, "header", "append", "append_action"); err != nil {
			return nil, err
		}
		h := hv.GetHeader()
		if h == nil {
			return nil, fmt.Errorf("%s.header is required", p)
		}
		if err := fieldcheck.Only(h, p+".header", "key", "value"); err != nil {
			return nil, err
		}
		name, err := mutableHeaderName(h.GetKey(), p+".header.key")
		if err != nil {
			return nil, err
		}
		if !validHeaderValue(h.GetValue()) {
			return nil, fmt.Errorf("%s.header.value: %q is not a valid header value", p, h.GetValue())
		}
		if h.GetValue() == "" {
			return nil, fmt.Errorf("%s.header.value: empty values are not supported by flotilla-agent (use request_headers_to_remove)", p)
		}
		f, err := accesslog.ParseEnvoyFormat(h.GetValue(), nil)
		if err != nil {
			return nil, fmt.Errorf("%s.header.value: %w", p, err)
		}
		appendIt := true
		switch a := hv.GetAppendAction(); a {
		case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
			appendIt = false
		default:
			return nil, fmt.Errorf("%s.append_action %s is not supported by flotilla-agent (APPEND_IF_EXISTS_OR_ADD or OVERWRITE_IF_EXISTS_OR_ADD)", p, a)
		}
		if ap := hv.GetAppend(); ap != nil {
			if hv.GetAppendAction() != corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD {
				return nil, fmt.Errorf("%s: append and append_action are both set", p)
			}
			appendIt = ap.GetValue()
		}
		out = append(out, httproute.HeaderValue{Name: name, Value: f, Append: appendIt})
	}
	return out, nil
}

// parseHeadersToRemove canonicalises header names to remove.
func parseHeadersToRemove(names []string, path string) ([]string, error) {
	var out []string
	for i, n := range names {
		c, err := mutableHeaderName(n, fmt.Sprintf("%s[%d]", path, i))
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// mutableHeaderName checks the name of a header to add or remove: not a pseudo-header, not
// Host, valid; it returns it canonical.
func mutableHeaderName(name, path string) (string, error) {
	switch {
	case name == "":
		return "", fmt.Errorf("%s: must not be empty", path)
	case strings.HasPrefix(name, ":") || strings.EqualFold(name, "host"):
		return "", fmt.Errorf("%s: %q cannot be changed by header mutations (use host_rewrite_literal for the host)", path, name)
	case !validHeaderName(name):
		return "", fmt.Errorf("%s: %q is not a valid header name", path, name)
	}
	return http.CanonicalHeaderKey(name), nil
}

// httpManagersOf returns the http_connection_managers of a raw listener's chains that
// decode; malformed ones are skipped (Validate reports them).
func httpManagersOf(l *listenerv3.Listener) []*hcmv3.HttpConnectionManager {
	var out []*hcmv3.HttpConnectionManager
	for _, fc := range listenerChains(l) {
		fs := fc.GetFilters()
		if len(fs) == 0 || !isHTTPFilter(fs[len(fs)-1]) {
			continue
		}
		h := &hcmv3.HttpConnectionManager{}
		if fs[len(fs)-1].GetTypedConfig().UnmarshalTo(h) == nil {
			out = append(out, h)
		}
	}
	return out
}

// routeNamesOf returns the RDS route configuration names a raw listener's managers name.
func routeNamesOf(l *listenerv3.Listener) []string {
	var names []string
	for _, h := range httpManagersOf(l) {
		if n := h.GetRds().GetRouteConfigName(); n != "" && !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	return names
}

// RDSNames returns, sorted and without duplicates, the route configuration names the
// listeners' HTTP connection managers in r name: the resource names of the RDS
// subscription.
func (r *Resources) RDSNames() []string {
	var names []string
	for _, l := range r.Listeners {
		names = append(names, routeNamesOf(l)...)
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// routeClusters returns the clusters a raw RouteConfiguration's routes send to, in order
// of appearance, each once.
func routeClusters(rc *routev3.RouteConfiguration) []string {
	var out []string
	add := func(n string) {
		if n != "" && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	for _, vh := range rc.GetVirtualHosts() {
		for _, rt := range vh.GetRoutes() {
			a := rt.GetRoute()
			add(a.GetCluster())
			for _, wc := range a.GetWeightedClusters().GetClusters() {
				add(wc.GetName())
			}
		}
	}
	return out
}

// missingRoutes lists, in a stable order, the route configurations r's listeners name that
// r does not hold, and the clusters r's route configurations send to that r does not hold.
func (r *Resources) missingRoutes() []string {
	var missing []string
	for _, name := range sortedKeys(r.Listeners) {
		for _, rn := range routeNamesOf(r.Listeners[name]) {
			if _, ok := r.Routes[rn]; !ok {
				missing = append(missing, fmt.Sprintf("listener %q references unknown route configuration %q", name, rn))
			}
		}
	}
	for _, name := range sortedKeys(r.Routes) {
		for _, c := range routeClusters(r.Routes[name]) {
			if _, ok := r.Clusters[c]; !ok {
				missing = append(missing, fmt.Sprintf("route configuration %q references unknown cluster %q", name, c))
			}
		}
	}
	return missing
}

// validateRoute is Validate for a RouteConfiguration.
func validateRoute(rc *routev3.RouteConfiguration) error {
	if _, err := parseRouteConfig(rc); err != nil {
		return &ResourceError{TypeURL: resourcev3.RouteType, Name: rc.GetName(), Err: err}
	}
	return nil
}

// validHeaderName reports whether name is an RFC 9110 token.
func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validHeaderValue reports whether v may be sent as a header value: no control characters
// but tab.
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}
