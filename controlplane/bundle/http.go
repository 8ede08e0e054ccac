package bundle

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/flotilla-proxy/flotilla/agent/accesslog"
	configv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/config/v1"
)

// This file validates HTTP listeners (virtual hosts, routes, their matches
// and actions), the HTTP fields of clusters, and grpc_services. What Envoy
// itself would refuse (two virtual hosts with one domain, a regex that does
// not compile, a route without an action) is caught here, where the error
// can name the file and field.

// Values of Cluster.protocol.
const (
	// ProtocolHTTP1 is HTTP/1.1 to the endpoints, the default.
	ProtocolHTTP1 = "http1"
	// ProtocolHTTP2 is HTTP/2 to the endpoints (h2c without tls).
	ProtocolHTTP2 = "http2"
)

// Limits of the HTTP schema.
const (
	// MaxRequestHeadersKB is the largest HttpListener.max_request_headers_kb (Envoy's).
	MaxRequestHeadersKB = 8192
	// MaxRetryAttempts is the most RetryPolicy.attempts may ask for.
	MaxRetryAttempts = 10
	// MaxDirectResponseBody is the longest DirectResponse.body (Envoy's
	// default max_direct_response_body_size_bytes).
	MaxDirectResponseBody = 4096
	// MaxGzipLevel is the largest Compression.level.
	MaxGzipLevel = 9
	// MaxXFFTrustedHops is the largest HttpListener.xff_trusted_hops.
	MaxXFFTrustedHops = 32
)

// RetryOn lists the values of RetryPolicy.on.
var RetryOn = []string{"connect-failure", "reset", "5xx", "gateway-error"}

// DefaultRetryOn is RetryPolicy.on when empty.
var DefaultRetryOn = []string{"connect-failure", "reset"}

// RedirectCodes lists the values of Redirect.code, the default first.
var RedirectCodes = []uint32{301, 302, 303, 307, 308}

// ShorthandVirtualHost is the name of the virtual host HttpListener.routes
// stands for.
const ShorthandVirtualHost = "default"

var (
	// tokenRe is an HTTP token (RFC 9110): method and header names.
	tokenRe = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
	// grpcNameRe is a GrpcService.name: a host name, optionally with a port.
	grpcNameRe = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,252})(:[0-9]{1,5})?$`)
	// mediaTypeRe is a media type without parameters.
	mediaTypeRe = regexp.MustCompile(`^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9*][a-z0-9!#$&^_.+-]*$`)
)

// pseudoHeaders are the HTTP/2 pseudo-headers a route may match on.
var pseudoHeaders = []string{":authority", ":method", ":path", ":scheme"}

// VirtualHostName is the name of virtual_hosts[i] of a listener: its name,
// or "vhost-<i>".
func VirtualHostName(vh *configv1.VirtualHost, i int) string {
	if vh.GetName() != "" {
		return vh.GetName()
	}
	return "vhost-" + strconv.Itoa(i)
}

// HTTPRouteName is the name of routes[i] of a virtual host: its name, or
// "route-<i>".
func HTTPRouteName(r *configv1.HttpRoute, i int) string {
	if r.GetName() != "" {
		return r.GetName()
	}
	return "route-" + strconv.Itoa(i)
}

// VirtualHosts returns a listener's virtual hosts: virtual_hosts, or the one
// virtual host its routes shorthand stands for (ShorthandVirtualHost,
// domains ["*"]).
func VirtualHosts(h *configv1.HttpListener) []*configv1.VirtualHost {
	if len(h.GetRoutes()) > 0 {
		return []*configv1.VirtualHost{{Name: ShorthandVirtualHost, Domains: []string{"*"}, Routes: h.GetRoutes()}}
	}
	return h.GetVirtualHosts()
}

// Domain checks a virtual host domain and returns it in lowercase: an exact
// host, optionally with a port, "*.suffix" or "*suffix", "prefix*", or "*".
func Domain(s string) (string, error) {
	if s == "" {
		return "", errors.New(`required: a host such as "example.com", "*.example.com" or "*"`)
	}
	d := strings.ToLower(s)
	if d == "*" {
		return d, nil
	}
	if n := strings.Count(d, "*"); n > 1 || n == 1 && d[0] != '*' && d[len(d)-1] != '*' {
		return "", fmt.Errorf(`%q: a wildcard is one "*" at the start ("*.example.com") or the end ("api.*")`, s)
	}
	for _, c := range []byte(strings.Trim(d, "*")) {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '.' || c == '-' || c == '_' || c == ':' || c == '[' || c == ']') {
			return "", fmt.Errorf("%q is not a host: use letters, digits, '.', '-' and an optional \":port\"", s)
		}
	}
	return d, nil
}

// ByteSize parses a size such as "10MiB", "512KiB", "1GB", "1.5MB" or a
// number of bytes ("1048576"). KB, MB and GB are powers of 1000, KiB, MiB
// and GiB of 1024; the suffix is case-insensitive.
func ByteSize(s string) (uint64, error) {
	bad := fmt.Errorf(`%q is not a size such as "10MiB", "512KiB", "1GB" or a number of bytes`, s)
	t := strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   float64
	}{
		{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30},
		{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"b", 1},
	}
	mult := 1.0
	lower := strings.ToLower(t)
	for _, u := range units {
		if strings.HasSuffix(lower, u.suffix) {
			mult, t = u.mult, strings.TrimSpace(t[:len(t)-len(u.suffix)])
			break
		}
	}
	if t == "" || strings.ContainsAny(t, "+-eE") {
		return 0, bad
	}
	n, err := strconv.ParseFloat(t, 64)
	if err != nil || math.IsNaN(n) || math.IsInf(n, 0) {
		return 0, bad
	}
	size := n * mult
	if size != math.Trunc(size) || size > math.MaxUint32 {
		if size > math.MaxUint32 {
			return 0, fmt.Errorf("%q is too large: at most 4GiB - 1 byte", s)
		}
		return 0, fmt.Errorf("%q is not a whole number of bytes", s)
	}
	return uint64(size), nil
}

// http validates an HTTP listener: its http block, and that nothing only
// TCP or UDP listeners have is set.
func (v *validator) http(at site, l *configv1.Listener) {
	const notHTTP = "only with tcp: an HTTP listener routes requests with http.virtual_hosts or http.routes"
	if l.GetTcp() != nil {
		v.add(at, "http", "cannot be combined with tcp: a listener has exactly one of tcp, udp and http")
	}
	if l.GetUdp() != nil {
		v.add(at, "http", "cannot be combined with udp: a listener has exactly one of tcp, udp and http")
	}
	if len(l.GetSni()) > 0 {
		v.add(at, "sni", notHTTP)
	}
	if len(l.GetRoutes()) > 0 {
		v.add(at, "routes", notHTTP)
	}
	if pp := l.GetProxyProtocol(); pp != nil {
		if len(pp.GetTrusted()) == 0 {
			v.add(at, "proxy_protocol.trusted", "required: the CIDRs of the peers allowed to send a PROXY header (connections from other peers are closed)")
		}
		v.cidrs(at, "proxy_protocol.trusted", pp.GetTrusted())
	}
	v.duration(at, "preread_timeout", l.GetPrereadTimeout(), false)
	if l.GetPrereadTimeout() != nil && l.GetProxyProtocol() == nil {
		v.add(at, "preread_timeout", "has no effect: an HTTP listener uses it only with proxy_protocol")
	}
	v.httpAccessLog(at, l.GetAccessLog())
	v.tlsListener(at, l)

	h := l.GetHttp()
	const f = "http"
	switch {
	case len(h.GetRoutes()) > 0 && len(h.GetVirtualHosts()) > 0:
		v.add(at, f+".routes", "cannot be combined with virtual_hosts: routes is the shorthand for one virtual host with domains [\"*\"]")
	case len(h.GetRoutes()) == 0 && len(h.GetVirtualHosts()) == 0:
		v.add(at, f, "needs routes (one site) or virtual_hosts (sites by Host)")
	}
	if n := h.GetXffTrustedHops(); n > MaxXFFTrustedHops {
		v.add(at, f+".xff_trusted_hops", "%d is too many: at most %d", n, MaxXFFTrustedHops)
	}
	v.duration(at, f+".idle_timeout", h.GetIdleTimeout(), true)
	v.duration(at, f+".request_headers_timeout", h.GetRequestHeadersTimeout(), true)
	v.duration(at, f+".request_timeout", h.GetRequestTimeout(), true)
	v.duration(at, f+".stream_idle_timeout", h.GetStreamIdleTimeout(), true)
	if kb := h.GetMaxRequestHeadersKb(); kb > MaxRequestHeadersKB {
		v.add(at, f+".max_request_headers_kb", "%d is out of range: use 1 to %d (0 means the default, 60)", kb, MaxRequestHeadersKB)
	}
	if s := h.GetMaxRequestBody(); s != "" {
		if n, err := ByteSize(s); err != nil {
			v.add(at, f+".max_request_body", "%v", err)
		} else if n == 0 {
			v.add(at, f+".max_request_body", "must be more than 0 bytes (leave it out for no limit)")
		}
	}
	if c := h.GetCompression(); c != nil {
		if c.GetLevel() > MaxGzipLevel {
			v.add(at, f+".compression.level", "%d is out of range: use 1 (fastest) to 9 (smallest), or leave it out for 6", c.GetLevel())
		}
		seen := map[string]int{}
		for i, t := range c.GetContentTypes() {
			tf := fmt.Sprintf("%s.compression.content_types[%d]", f, i)
			lt := strings.ToLower(strings.TrimSpace(t))
			switch first, dup := seen[lt]; {
			case !mediaTypeRe.MatchString(lt):
				v.add(at, tf, "%q is not a media type such as \"text/html\" (no parameters)", t)
			case dup:
				v.add(at, tf, "duplicate media type %q: same as content_types[%d]", t, first)
			default:
				seen[lt] = i
			}
		}
	}
	if s := h.GetServerName(); s != "" && !headerValue(s) {
		v.add(at, f+".server_name", "%q must not contain control characters", s)
	}

	domains := map[string]string{} // domain → field of its first use
	vhosts := map[string]string{}  // name → field
	for i, vh := range h.GetVirtualHosts() {
		vf := fmt.Sprintf("%s.virtual_hosts[%d]", f, i)
		name := VirtualHostName(vh, i)
		switch {
		case vh.GetName() != "" && !nameRe.MatchString(vh.GetName()):
			v.add(at, vf+".name", "%q is not a valid name: %s", vh.GetName(), nameRule)
		case vhosts[name] != "":
			v.add(at, vf+".name", "duplicate virtual host name %q: already the name of %s", name, vhosts[name])
		default:
			vhosts[name] = vf
		}
		if len(vh.GetDomains()) == 0 {
			v.add(at, vf+".domains", `required: the hosts this site serves, such as ["example.com", "*.example.com"] or ["*"]`)
		}
		for j, d := range vh.GetDomains() {
			df := fmt.Sprintf("%s.domains[%d]", vf, j)
			norm, err := Domain(d)
			if err != nil {
				v.add(at, df, "%v", err)
				continue
			}
			if first, ok := domains[norm]; ok {
				v.add(at, df, "duplicate domain %q: already served by %s (Envoy refuses a domain in two virtual hosts)", d, first)
				continue
			}
			domains[norm] = df
		}
		v.headerOps(at, vf+".request_headers", vh.GetRequestHeaders())
		v.headerOps(at, vf+".response_headers", vh.GetResponseHeaders())
		if len(vh.GetRoutes()) == 0 {
			v.add(at, vf+".routes", "required: at least one route")
		}
		v.httpRoutes(at, vf+".routes", vh.GetRoutes())
	}
	v.httpRoutes(at, f+".routes", h.GetRoutes())
}

// httpAccessLog validates the access_log of an HTTP listener, whose format
// may also use the HTTP variables ($request, $status of the response, …).
func (v *validator) httpAccessLog(at site, al *configv1.AccessLog) {
	if al == nil {
		return
	}
	if _, err := AccessLogPath(al.GetPath()); err != nil {
		v.add(at, "access_log.path", "%v", err)
	}
	if _, _, err := HTTPAccessLogFormat(al.GetFormat()); err != nil {
		v.add(at, "access_log.format", "%v", err)
	}
}

// HTTPAccessLogFormat is AccessLogFormat for HTTP listeners: "json" carries
// the request fields too, and "combined" is nginx's combined format with the
// upstream address and timings (accesslog.ToEnvoyHTTP).
func HTTPAccessLogFormat(format string) (text string, json map[string]string, err error) {
	if format == "" {
		format = AccessLogJSON
	}
	text, json, err = accesslog.ToEnvoyHTTP(format)
	if err != nil {
		return "", nil, errors.New(strings.TrimPrefix(err.Error(), "access log format: "))
	}
	return text, json, nil
}

// httpRoutes validates the routes of one virtual host.
func (v *validator) httpRoutes(at site, f string, routes []*configv1.HttpRoute) {
	names := map[string]string{}
	for i, r := range routes {
		rf := fmt.Sprintf("%s[%d]", f, i)
		name := HTTPRouteName(r, i)
		switch {
		case r.GetName() != "" && !nameRe.MatchString(r.GetName()):
			v.add(at, rf+".name", "%q is not a valid name: %s", r.GetName(), nameRule)
		case names[name] != "":
			v.add(at, rf+".name", "duplicate route name %q: already the name of %s", name, names[name])
		default:
			names[name] = rf
		}
		v.httpRoute(at, rf, r)
	}
}

func (v *validator) httpRoute(at site, f string, r *configv1.HttpRoute) {
	m := r.GetMatch()
	v.routeMatch(at, f+".match", m)

	actions := 0
	for _, set := range []bool{r.GetCluster() != "", len(r.GetWeightedClusters()) > 0, r.GetRedirect() != nil, r.GetDirectResponse() != nil} {
		if set {
			actions++
		}
	}
	if actions != 1 {
		v.add(at, f, "needs exactly one of cluster, weighted_clusters, redirect and direct_response")
	}
	forwards := r.GetCluster() != "" || len(r.GetWeightedClusters()) > 0
	if r.GetCluster() != "" {
		v.clusterRef(at, f+".cluster", r.GetCluster())
		v.httpUpstream(at, f+".cluster", r.GetCluster())
	}
	seen := map[string]int{}
	for i, wc := range r.GetWeightedClusters() {
		wf := fmt.Sprintf("%s.weighted_clusters[%d]", f, i)
		v.clusterRef(at, wf+".cluster", wc.GetCluster())
		v.httpUpstream(at, wf+".cluster", wc.GetCluster())
		if first, ok := seen[wc.GetCluster()]; ok && wc.GetCluster() != "" {
			v.add(at, wf+".cluster", "duplicate cluster %q: same as weighted_clusters[%d]", wc.GetCluster(), first)
		} else {
			seen[wc.GetCluster()] = i
		}
		if wc.GetWeight() == 0 {
			v.add(at, wf+".weight", "required: a weight of at least 1")
		}
	}
	var total uint64
	for _, wc := range r.GetWeightedClusters() {
		total += uint64(wc.GetWeight())
	}
	if total > math.MaxUint32 {
		v.add(at, f+".weighted_clusters", "the weights add up to %d: at most %d", total, uint64(math.MaxUint32))
	}

	onlyForward := func(field, what string) {
		if !forwards {
			v.add(at, f+"."+field, "only with cluster or weighted_clusters: %s", what)
		}
	}
	if r.GetPrefixRewrite() != "" {
		onlyForward("prefix_rewrite", "it rewrites the path sent upstream")
		if m.GetRegex() != "" {
			v.add(at, f+".prefix_rewrite", "cannot be combined with match.regex: there is no prefix to replace")
		}
		switch pr := r.GetPrefixRewrite(); {
		case !strings.HasPrefix(pr, "/"):
			v.add(at, f+".prefix_rewrite", "%q must start with \"/\"", pr)
		case !printable(pr):
			v.add(at, f+".prefix_rewrite", "%q must not contain spaces or control characters", pr)
		default:
			if _, err := url.PathUnescape(pr); err != nil {
				v.add(at, f+".prefix_rewrite", "%q is not a valid escaped path: %v", pr, err)
			}
		}
	}
	if r.GetHostRewrite() != "" {
		onlyForward("host_rewrite", "it sets the Host sent upstream")
		if r.GetAutoHostRewrite() {
			v.add(at, f+".host_rewrite", "cannot be combined with auto_host_rewrite")
		}
		if !isHost(r.GetHostRewrite()) {
			v.add(at, f+".host_rewrite", "%q is not a host name (no spaces, control characters, non-ASCII or any of / ? # @ *)", r.GetHostRewrite())
		}
	}
	if r.GetAutoHostRewrite() {
		onlyForward("auto_host_rewrite", "it sets the Host sent upstream")
	}
	if r.GetWebsocket() {
		onlyForward("websocket", "a WebSocket is proxied to a cluster")
	}
	if r.GetTimeout() != nil {
		onlyForward("timeout", "it bounds the wait for the upstream")
	}
	if r.GetIdleTimeout() != nil {
		onlyForward("idle_timeout", "it bounds a proxied request")
	}
	v.duration(at, f+".timeout", r.GetTimeout(), true)
	v.duration(at, f+".idle_timeout", r.GetIdleTimeout(), true)
	if rp := r.GetRetries(); rp != nil {
		onlyForward("retries", "only proxied requests are retried")
		seen := map[string]int{}
		for i, on := range rp.GetOn() {
			of := fmt.Sprintf("%s.retries.on[%d]", f, i)
			switch first, dup := seen[on]; {
			case !slices.Contains(RetryOn, on):
				v.add(at, of, "%q is not a retry condition: use %s", on, orList(RetryOn))
			case dup:
				v.add(at, of, "duplicate %q: same as on[%d]", on, first)
			default:
				seen[on] = i
			}
		}
		if n := rp.GetAttempts(); n > MaxRetryAttempts {
			v.add(at, f+".retries.attempts", "%d is too many: at most %d (0 means the default, 1)", n, MaxRetryAttempts)
		}
		v.duration(at, f+".retries.per_try_timeout", rp.GetPerTryTimeout(), false)
	}
	if rd := r.GetRedirect(); rd != nil {
		v.redirect(at, f+".redirect", rd)
	}
	if d := r.GetDirectResponse(); d != nil {
		if s := d.GetStatus(); s < 200 || s > 599 {
			v.add(at, f+".direct_response.status", "%d is out of range: use 200 to 599 (redirects are written with redirect)", s)
		}
		if n := len(d.GetBody()); n > MaxDirectResponseBody {
			v.add(at, f+".direct_response.body", "%d bytes is too long: at most %d", n, MaxDirectResponseBody)
		}
	}
	v.headerOps(at, f+".request_headers", r.GetRequestHeaders())
	v.headerOps(at, f+".response_headers", r.GetResponseHeaders())
}

// httpUpstream refuses a cluster an HTTP route cannot proxy to as
// configured: HTTP routes send no PROXY protocol header (the client's
// address goes in X-Forwarded-For and X-Real-IP) and no client SNI (there
// is no ClientHello to take it from on plain HTTP).
func (v *validator) httpUpstream(at site, f, name string) {
	c := v.defs[name]
	switch {
	case c == nil:
	case c.GetProxyProtocol() != "":
		v.add(at, f, "cluster %q sends the PROXY protocol (proxy_protocol: %s), which HTTP routes do not: they pass the client's address in X-Forwarded-For and X-Real-IP; use a cluster without it", name, c.GetProxyProtocol())
	case c.GetTls().GetPassClientSni():
		v.add(at, f, "cluster %q passes the client's SNI (tls.pass_client_sni), which HTTP routes do not: give it a fixed tls.sni", name)
	}
}

// routeMatch validates a route's match.
func (v *validator) routeMatch(at site, f string, m *configv1.RouteMatch) {
	paths := 0
	for _, s := range []string{m.GetPrefix(), m.GetPath(), m.GetRegex()} {
		if s != "" {
			paths++
		}
	}
	if paths > 1 {
		v.add(at, f, "needs at most one of prefix, path and regex")
	}
	for _, p := range []struct{ field, val string }{{"prefix", m.GetPrefix()}, {"path", m.GetPath()}} {
		switch {
		case p.val == "":
		case !strings.HasPrefix(p.val, "/"):
			v.add(at, f+"."+p.field, "%q must start with \"/\"", p.val)
		case !printable(p.val):
			v.add(at, f+"."+p.field, "%q must not contain spaces or control characters", p.val)
		case strings.Contains(p.val, "?"):
			v.add(at, f+"."+p.field, "%q contains '?': paths are matched without the query", p.val)
		}
	}
	if re := m.GetRegex(); re != "" {
		if _, err := regexp.Compile(re); err != nil {
			v.add(at, f+".regex", "%q is not a valid RE2 regular expression: %s", re, regexError(err))
		}
	}
	seen := map[string]int{}
	for i, meth := range m.GetMethods() {
		mf := fmt.Sprintf("%s.methods[%d]", f, i)
		switch first, dup := seen[meth]; {
		case !tokenRe.MatchString(meth):
			v.add(at, mf, "%q is not a method such as GET or POST", meth)
		case meth != strings.ToUpper(meth):
			v.add(at, mf, "%q: methods are case-sensitive, write %q", meth, strings.ToUpper(meth))
		case dup:
			v.add(at, mf, "duplicate method %q: same as methods[%d]", meth, first)
		default:
			seen[meth] = i
		}
	}
	for i, h := range m.GetHeaders() {
		hf := fmt.Sprintf("%s.headers[%d]", f, i)
		if err := matchHeaderName(h.GetName()); err != nil {
			v.add(at, hf+".name", "%v", err)
		}
		if strings.EqualFold(h.GetName(), ":method") && len(m.GetMethods()) > 0 {
			v.add(at, hf+".name", "\":method\" cannot be combined with methods")
		}
		n := 0
		for _, set := range []bool{h.GetExact() != "", h.GetPrefix() != "", h.GetSuffix() != "", h.GetContains() != "", h.GetRegex() != "", h.Present != nil} {
			if set {
				n++
			}
		}
		if n != 1 {
			v.add(at, hf, "needs exactly one of exact, prefix, suffix, contains, regex and present")
		}
		if re := h.GetRegex(); re != "" {
			if _, err := regexp.Compile(re); err != nil {
				v.add(at, hf+".regex", "%q is not a valid RE2 regular expression: %s", re, regexError(err))
			}
		}
	}
}

// regexError is regexp's reason without its "error parsing regexp: " prefix.
func regexError(err error) string {
	return strings.TrimPrefix(err.Error(), "error parsing regexp: ")
}

// matchHeaderName checks a header name a route matches on: a token, or one
// of the pseudo-headers.
func matchHeaderName(name string) error {
	switch {
	case name == "":
		return errors.New(`required: a header name such as "x-canary"`)
	case strings.HasPrefix(name, ":"):
		if !slices.Contains(pseudoHeaders, strings.ToLower(name)) {
			return fmt.Errorf("%q is not a pseudo-header a route can match: use %s", name, orList(pseudoHeaders))
		}
	case !tokenRe.MatchString(name):
		return fmt.Errorf("%q is not a header name (letters, digits and !#$%%&'*+-.^_`|~)", name)
	}
	return nil
}

// headerOps validates header additions and removals. Like Envoy, it refuses
// to change pseudo-headers and Host (use host_rewrite); values are Envoy
// format strings, in which a '%' starts an operator.
func (v *validator) headerOps(at site, f string, ops *configv1.HeaderOps) {
	if ops == nil {
		return
	}
	check := func(field, name string) bool {
		switch {
		case !tokenRe.MatchString(name):
			v.add(at, field, "%q is not a header name (letters, digits and !#$%%&'*+-.^_`|~)", name)
		case strings.EqualFold(name, "host"):
			v.add(at, field, "Host cannot be changed here: use the route's host_rewrite or auto_host_rewrite")
		default:
			return true
		}
		return false
	}
	lower := map[string]string{}
	for _, name := range slices.Sorted(maps.Keys(ops.GetAdd())) {
		af := join(f+".add", name)
		if !check(af, name) {
			continue
		}
		if other, dup := lower[strings.ToLower(name)]; dup {
			v.add(at, af, "duplicate header %q: same as %q (names are case-insensitive)", name, other)
			continue
		}
		lower[strings.ToLower(name)] = name
		val := ops.GetAdd()[name]
		switch _, err := accesslog.ParseEnvoyFormat(val, nil); {
		case val == "":
			v.add(at, af, "empty: to delete a header, list it in remove")
		case !headerValue(val):
			v.add(at, af, "%q must not contain control characters", val)
		case err != nil:
			v.add(at, af, "%q: %s (a '%%' must start an operator such as %s; a literal '%%' cannot be sent)", val, strings.TrimPrefix(err.Error(), "access log format: "), "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%")
		}
	}
	seen := map[string]int{}
	for i, name := range ops.GetRemove() {
		rf := fmt.Sprintf("%s.remove[%d]", f, i)
		if !check(rf, name) {
			continue
		}
		if first, dup := seen[strings.ToLower(name)]; dup {
			v.add(at, rf, "duplicate header %q: same as remove[%d]", name, first)
			continue
		}
		seen[strings.ToLower(name)] = i
		if _, added := lower[strings.ToLower(name)]; added {
			v.add(at, rf, "%q is also in add: add replaces its value already", name)
		}
	}
}

// headerValue reports whether s may be an HTTP header value: no control
// characters other than tab.
func headerValue(s string) bool {
	for _, c := range []byte(s) {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// redirect validates a route's redirect.
func (v *validator) redirect(at site, f string, rd *configv1.Redirect) {
	switch s := rd.GetScheme(); s {
	case "", "http", "https":
	default:
		v.add(at, f+".scheme", "%q is not a scheme: use \"http\" or \"https\" (or leave it out to keep the request's)", s)
	}
	if h := rd.GetHost(); h != "" && !isHost(h) {
		v.add(at, f+".host", "%q is not a host name (no spaces, control characters, non-ASCII or any of / ? # @ *)", h)
	}
	if p := rd.GetPort(); p > 65535 {
		v.add(at, f+".port", "%d is not a port: use 1 to 65535", p)
	}
	if rd.GetPath() != "" && rd.GetPrefixRewrite() != "" {
		v.add(at, f+".prefix_rewrite", "cannot be combined with path: path replaces the whole path")
	}
	for _, p := range []struct{ field, val string }{{"path", rd.GetPath()}, {"prefix_rewrite", rd.GetPrefixRewrite()}} {
		switch {
		case p.val == "":
		case !strings.HasPrefix(p.val, "/"):
			v.add(at, f+"."+p.field, "%q must start with \"/\"", p.val)
		case !printable(p.val):
			v.add(at, f+"."+p.field, "%q must not contain spaces or control characters", p.val)
		}
	}
	if c := rd.GetCode(); c != 0 && !slices.Contains(RedirectCodes, c) {
		v.add(at, f+".code", "%d is not a redirect status: use 301 (the default), 302, 303, 307 or 308", c)
	}
}

// httpCluster validates a cluster's HTTP fields.
func (v *validator) httpCluster(at site, c *configv1.Cluster) {
	switch p := c.GetProtocol(); p {
	case "", ProtocolHTTP1, ProtocolHTTP2:
	default:
		v.add(at, "protocol", "%q is not an upstream protocol: use %q (the default) or %q", p, ProtocolHTTP1, ProtocolHTTP2)
	}
	v.duration(at, "http_idle_timeout", c.GetHttpIdleTimeout(), true)
	if rb := c.GetRetryBudget(); rb != nil && rb.GetPercent() > 100 {
		v.add(at, "retry_budget.percent", "%d is more than 100 (0 means the default, 20)", rb.GetPercent())
	}
}

// GRPCLBPolicies are the Cluster.lb values gRPC clients implement.
var GRPCLBPolicies = []string{LBRoundRobin, LBLeastRequest, LBRingHash}

// grpcService validates one grpc_services entry.
func (v *validator) grpcService(at site, g *configv1.GrpcService, defined map[string]site) {
	switch name := g.GetName(); {
	case name == "":
		v.add(at, "name", `required: the name clients dial as "xds:///<name>"`)
	case !grpcNameRe.MatchString(name):
		v.add(at, "name", "%q is not a valid gRPC service name: a host name of letters, digits, '.', '_' or '-', optionally with \":port\"", name)
	default:
		if first, ok := defined[name]; ok {
			v.add(at, "name", "duplicate gRPC service name %q: already defined in %s", name, first)
		} else {
			defined[name] = at
		}
	}
	v.clusterRef(at, "cluster", g.GetCluster())
	if c := v.defs[g.GetCluster()]; c != nil {
		if c.GetLb() != "" && !slices.Contains(GRPCLBPolicies, c.GetLb()) {
			v.add(at, "cluster", "cluster %q uses lb %q, which gRPC clients do not implement: use %s", c.GetName(), c.GetLb(), orList(GRPCLBPolicies))
		}
	}
	v.selector(at, g.GetAgents())
}

// isHost reports whether h can be sent as a Host header or redirect host: printable ASCII
// without / ? # @ or * (what the agent accepts in host_rewrite_literal and host_redirect).
func isHost(h string) bool {
	for i := 0; i < len(h); i++ {
		if c := h[i]; c <= ' ' || c >= 0x7f || strings.IndexByte("/?#@*", c) >= 0 {
			return false
		}
	}
	return h != ""
}
