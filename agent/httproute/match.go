package httproute

import (
	"cmp"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// Request is what route selection looks at. Callers fill it from an *http.Request without
// copying headers: Authority is r.Host, Path is r.RequestURI (HTTP/1.1 origin form, or the
// HTTP/2 :path), Method is r.Method, Scheme is "https" when TLS was terminated, else "http",
// and Header is r.Header.
type Request struct {
	// Authority is the Host header or :authority, possibly with a port.
	Authority string
	// Path is the request target as the client sent it: the path and, after "?", the
	// query. An absolute-form target (http://host/p?q) is reduced to its path and query.
	Path   string
	Method string
	Scheme string
	Header http.Header
}

// splitPath returns the path of a request target without its query, and the query
// (without "?"; "" when there is none). An absolute-form target loses its scheme and
// authority.
func splitPath(target string) (path, query string) {
	target = originForm(target)
	if i := strings.IndexByte(target, '?'); i >= 0 {
		return target[:i], target[i+1:]
	}
	return target, ""
}

// originForm returns an absolute-form request target (http://host/p?q) without its scheme
// and authority ("/p?q"; "/" or "/?q" when it has no path); other targets as they are.
func originForm(target string) string {
	if target == "" || target[0] == '/' {
		return target
	}
	i := strings.Index(target, "://")
	if i < 0 {
		return target
	}
	rest := target[i+3:]
	j := strings.IndexAny(rest, "/?")
	switch {
	case j < 0:
		return "/"
	case rest[j] == '?':
		return "/" + rest[j:]
	}
	return rest[j:]
}

// domainIndex is a Table's precomputed virtual-host lookup.
type domainIndex struct {
	exact    map[string]*VirtualHost // lower-case domain → host
	suffixes wildcards               // "*.x" / "*x" by ".x" / "x"
	prefixes wildcards               // "x*" by "x"
	any      *VirtualHost            // "*"
	hasPort  bool                    // some domain names a port
}

// wildcards are wildcard domains grouped by the length of their fixed part, longest
// first, as Envoy keeps them: a lookup costs one map access per distinct length, however
// many wildcard domains there are.
type wildcards []wildcardGroup

type wildcardGroup struct {
	n  int                     // length of the fixed parts
	vh map[string]*VirtualHost // lower-case fixed part → host
}

// add files a lower-case fixed part; the first virtual host to claim one keeps it.
func (ws *wildcards) add(fixed string, vh *VirtualHost) {
	i, found := slices.BinarySearchFunc(*ws, len(fixed), func(g wildcardGroup, n int) int { return cmp.Compare(n, g.n) })
	if !found {
		*ws = slices.Insert(*ws, i, wildcardGroup{n: len(fixed), vh: map[string]*VirtualHost{}})
	}
	if _, ok := (*ws)[i].vh[fixed]; !ok {
		(*ws)[i].vh[fixed] = vh
	}
}

// suffix returns the host of the longest fixed part that is a proper suffix of host (lower
// case).
func (ws wildcards) suffix(host string) *VirtualHost {
	for _, g := range ws {
		if len(host) > g.n {
			if vh := g.vh[host[len(host)-g.n:]]; vh != nil {
				return vh
			}
		}
	}
	return nil
}

// prefix returns the host of the longest fixed part that is a proper prefix of host (lower
// case).
func (ws wildcards) prefix(host string) *VirtualHost {
	for _, g := range ws {
		if len(host) > g.n {
			if vh := g.vh[host[:g.n]]; vh != nil {
				return vh
			}
		}
	}
	return nil
}

// Index precomputes the table's virtual-host lookup. Call it once after the Table is filled
// and before it is shared; package runtime does. Select works on a Table that was not
// indexed too, by scanning every domain (tests build Tables by hand).
func (t *Table) Index() {
	t.index = buildIndex(t.VirtualHosts, t.IgnorePort)
}

func buildIndex(vhs []*VirtualHost, ignorePort bool) *domainIndex {
	idx := &domainIndex{exact: make(map[string]*VirtualHost)}
	for _, vh := range vhs {
		for _, d := range vh.Domains {
			d = strings.ToLower(d)
			if hasPort(d) && !ignorePort {
				idx.hasPort = true
			}
			switch {
			case d == "*":
				if idx.any == nil {
					idx.any = vh
				}
			case strings.HasPrefix(d, "*"):
				idx.suffixes.add(d[1:], vh)
			case strings.HasSuffix(d, "*"):
				idx.prefixes.add(d[:len(d)-1], vh)
			default:
				if _, ok := idx.exact[d]; !ok {
					idx.exact[d] = vh
				}
			}
		}
	}
	return idx
}

// hasPort reports whether a domain ends in ":<digits>" (outside IPv6 brackets).
func hasPort(d string) bool {
	_, port := splitHostPort(d)
	return port != ""
}

// splitHostPort splits "host:port" and "[v6]:port"; port is "" when there is none. A bare
// IPv6 address without brackets has no port.
func splitHostPort(h string) (host, port string) {
	i := strings.LastIndexByte(h, ':')
	if i < 0 {
		return h, ""
	}
	if strings.IndexByte(h, ']') > i || (h[0] != '[' && strings.IndexByte(h[:i], ':') >= 0) {
		return h, "" // inside [v6] or an unbracketed v6 address
	}
	p := h[i+1:]
	if p == "" {
		return h[:i], ""
	}
	for j := 0; j < len(p); j++ {
		if p[j] < '0' || p[j] > '9' {
			return h, ""
		}
	}
	return h[:i], p
}

// lookup finds the virtual host of a lower-case or mixed-case authority.
func (idx *domainIndex) lookup(host string) *VirtualHost {
	if idx.hasPort {
		// A domain with a port matches only an authority with that port; then the
		// authority without its port is tried against every domain.
		if vh := idx.lookupNoDefault(host); vh != nil {
			return vh
		}
	}
	if h, _ := splitHostPort(host); !idx.hasPort || h != host {
		if vh := idx.lookupNoDefault(h); vh != nil {
			return vh
		}
	}
	return idx.any
}

func (idx *domainIndex) lookupNoDefault(host string) *VirtualHost {
	host = lowerKey(host)
	if vh := idx.exact[host]; vh != nil {
		return vh
	}
	if vh := idx.suffixes.suffix(host); vh != nil {
		return vh
	}
	return idx.prefixes.prefix(host)
}

// lowerKey returns s in lower case, allocating only when s has an upper-case ASCII letter.
func lowerKey(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}

// VirtualHost returns the virtual host that serves authority (a Host header, possibly with
// a port), with Envoy's precedence: an exact domain, then the longest suffix wildcard
// ("*.example.com", "*-bar.example.com"), then the longest prefix wildcard ("example.*"),
// then "*". A wildcard never matches the empty string. Matching ignores case. The port is
// ignored unless a domain of the table names one: then "example.com:8080" first matches a
// domain with that port, and otherwise the same domains as "example.com". It returns nil
// when no virtual host matches.
func (t *Table) VirtualHost(authority string) *VirtualHost {
	if t == nil {
		return nil
	}
	idx := t.index
	if idx == nil {
		idx = buildIndex(t.VirtualHosts, t.IgnorePort)
	}
	return idx.lookup(authority)
}

// Select returns the virtual host for r's authority (see VirtualHost) and the first of its
// routes that matches r, or a nil route when none does (Envoy answers 404), or nil, nil when
// no virtual host matches. It does not allocate on an indexed Table unless a route matches
// on a header that the request carries more than once (the values are joined with ",", as
// in Envoy) or the authority has upper-case letters.
func (t *Table) Select(r *Request) (*VirtualHost, *Route) {
	vh := t.VirtualHost(r.Authority)
	if vh == nil {
		return nil, nil
	}
	path, _ := splitPath(r.Path)
	for _, rt := range vh.Routes {
		if rt.Match.matches(r, path) {
			return vh, rt
		}
	}
	return vh, nil
}

// Matches reports whether m matches r.
func (m *Match) Matches(r *Request) bool {
	path, _ := splitPath(r.Path)
	return m.matches(r, path)
}

// matches is Matches with r's path already split from its query.
func (m *Match) matches(r *Request, path string) bool {
	switch {
	case m.Regex != nil:
		if !m.Regex.MatchString(path) {
			return false
		}
	case m.Path != "":
		if m.CaseInsensitive {
			if !strings.EqualFold(path, m.Path) {
				return false
			}
		} else if path != m.Path {
			return false
		}
	case m.Prefix != "":
		if !hasPrefix(path, r.Path, m.Prefix, m.CaseInsensitive) {
			return false
		}
	}
	if m.GRPC && !isGRPC(r.Header) {
		return false
	}
	for i := range m.Headers {
		if !m.Headers[i].matches(r) {
			return false
		}
	}
	return true
}

// hasPrefix reports whether the :path starts with prefix. Like Envoy, a prefix is matched
// against the whole :path, query included, so it may reach into the query.
func hasPrefix(path, target, prefix string, fold bool) bool {
	s := path
	if len(prefix) > len(path) {
		// Only a prefix with a "?" can go on into the query.
		if strings.IndexByte(prefix, '?') < 0 {
			return false
		}
		s = originForm(target)
	}
	if len(s) < len(prefix) {
		return false
	}
	if fold {
		return strings.EqualFold(s[:len(prefix)], prefix)
	}
	return s[:len(prefix)] == prefix
}

// isGRPC reports whether a request's content-type is application/grpc, optionally
// followed by "+" or ";" and more (Envoy's Grpc::Common::hasGrpcContentType).
func isGRPC(h http.Header) bool {
	v := h["Content-Type"]
	if len(v) == 0 {
		return false
	}
	const ct = "application/grpc"
	s := v[0]
	if len(s) < len(ct) || !strings.EqualFold(s[:len(ct)], ct) {
		return false
	}
	return len(s) == len(ct) || s[len(ct)] == '+' || s[len(ct)] == ';'
}

// value returns the value of the header a HeaderMatch names: the pseudo-headers from the
// request line, others from Header, several values joined with ",".
func (hm *HeaderMatch) value(r *Request) (string, bool) {
	switch hm.Name {
	case ":method":
		return r.Method, r.Method != ""
	case ":authority":
		return r.Authority, r.Authority != ""
	case ":path":
		return r.Path, r.Path != ""
	case ":scheme":
		return r.Scheme, r.Scheme != ""
	}
	vs := r.Header[hm.Name]
	switch len(vs) {
	case 0:
		return "", false
	case 1:
		return vs[0], true
	}
	return strings.Join(vs, ","), true
}

// matches applies one header condition, Envoy-style: a missing header fails every string
// condition (inverted or not) unless MissingAsEmpty; present_match compares presence with
// Present; Invert negates.
func (hm *HeaderMatch) matches(r *Request) bool {
	v, ok := hm.value(r)
	if hm.Kind == HeaderPresent {
		return (ok == hm.Present) != hm.Invert
	}
	if !ok {
		if !hm.MissingAsEmpty {
			return false
		}
		v = ""
	}
	if hm.IgnoreCase {
		return hm.matchesFold(v) != hm.Invert
	}
	var m bool
	switch hm.Kind {
	case HeaderExact:
		m = v == hm.Exact
	case HeaderPrefix:
		m = strings.HasPrefix(v, hm.Prefix)
	case HeaderSuffix:
		m = strings.HasSuffix(v, hm.Suffix)
	case HeaderContains:
		m = strings.Contains(v, hm.Contains)
	case HeaderRegex:
		m = hm.Regex != nil && hm.Regex.MatchString(v)
	}
	return m != hm.Invert
}

// matchesFold is the string condition of a HeaderMatch with IgnoreCase (its patterns are
// lower case).
func (hm *HeaderMatch) matchesFold(v string) bool {
	switch hm.Kind {
	case HeaderExact:
		return strings.EqualFold(v, hm.Exact)
	case HeaderPrefix:
		return len(v) >= len(hm.Prefix) && strings.EqualFold(v[:len(hm.Prefix)], hm.Prefix)
	case HeaderSuffix:
		return len(v) >= len(hm.Suffix) && strings.EqualFold(v[len(v)-len(hm.Suffix):], hm.Suffix)
	case HeaderContains:
		for i := 0; i+len(hm.Contains) <= len(v); i++ {
			if strings.EqualFold(v[i:i+len(hm.Contains)], hm.Contains) {
				return true
			}
		}
		return false
	case HeaderRegex:
		return hm.Regex != nil && hm.Regex.MatchString(v)
	}
	return false
}

// PickCluster returns the cluster a request goes to: the only one, or for weighted
// clusters the one whose cumulative weight range holds rand % TotalWeight (pass a uniform
// random number). A cluster of weight 0 is never picked. It returns nil when f has no
// cluster.
func (f *Forward) PickCluster(rand uint32) *WeightedCluster {
	switch len(f.Clusters) {
	case 0:
		return nil
	case 1:
		return &f.Clusters[0]
	}
	total := f.TotalWeight
	if total == 0 {
		for _, c := range f.Clusters {
			total += c.Weight
		}
		if total == 0 {
			return &f.Clusters[0]
		}
	}
	r := rand % total
	var cum uint32
	for i := range f.Clusters {
		cum += f.Clusters[i].Weight
		if r < cum {
			return &f.Clusters[i]
		}
	}
	return &f.Clusters[len(f.Clusters)-1]
}

// RewritePath returns the path to send upstream for a request target path (with or
// without its query, which is kept as it is): with a Forward's PrefixRewrite, the matched
// Prefix is replaced by it; a route matched by Path or Regex has its whole path replaced.
// Without a rewrite, or for a route that does not forward, path comes back unchanged.
func (r *Route) RewritePath(path string) string {
	if r.Forward == nil || r.Forward.PrefixRewrite == "" {
		return path
	}
	p, q := splitPath(path)
	rw := r.Forward.PrefixRewrite
	var out string
	if r.Match.Prefix != "" && r.Match.Path == "" && r.Match.Regex == nil && len(p) >= len(r.Match.Prefix) {
		out = rw + p[len(r.Match.Prefix):]
	} else if r.Match.Prefix == "" && r.Match.Path == "" && r.Match.Regex == nil {
		out = rw + p // an empty prefix matched nothing of the path
	} else {
		out = rw
	}
	if q != "" || strings.HasSuffix(path, "?") {
		out += "?" + q
	}
	return out
}

// Location returns the URL of a redirect: the request's scheme, host (a Host header,
// possibly with a port), path and raw query (without "?"), changed as the Redirect says.
// matchedPrefix is the route's match prefix, which PrefixRewrite replaces. As in Envoy, a
// port equal to the default of the final scheme is left out, and when only the scheme
// changes a port that was the default of the old scheme is dropped; a path_redirect with a
// "?" brings its own query; StripQuery drops the query.
func (r *Redirect) Location(scheme, host, path, rawQuery string, matchedPrefix string) string {
	finalScheme := cmp.Or(r.Scheme, scheme)
	h, port := splitHostPort(host)
	if r.Host != "" {
		if rh, rp := splitHostPort(r.Host); rp != "" {
			h, port = rh, rp
		} else {
			h = r.Host
		}
	}
	if r.Port != 0 {
		port = strconv.FormatUint(uint64(r.Port), 10)
	}
	if port != "" && (port == defaultPort(finalScheme) || (r.Port == 0 && finalScheme != scheme && port == defaultPort(scheme))) {
		port = ""
	}
	p := path
	q := rawQuery
	switch {
	case r.Path != "":
		p = r.Path
		if i := strings.IndexByte(p, '?'); i >= 0 {
			p, q = p[:i], p[i+1:]
		}
	case r.PrefixRewrite != "":
		if len(path) >= len(matchedPrefix) && strings.EqualFold(path[:len(matchedPrefix)], matchedPrefix) {
			p = r.PrefixRewrite + path[len(matchedPrefix):]
		}
	}
	if p == "" {
		p = "/"
	}
	var b strings.Builder
	b.Grow(len(finalScheme) + 3 + len(h) + 6 + len(p) + 1 + len(q))
	b.WriteString(finalScheme)
	b.WriteString("://")
	b.WriteString(h)
	if port != "" {
		b.WriteByte(':')
		b.WriteString(port)
	}
	b.WriteString(p)
	if !r.StripQuery && q != "" {
		b.WriteByte('?')
		b.WriteString(q)
	}
	return b.String()
}

// defaultPort is the port a scheme implies.
func defaultPort(scheme string) string {
	switch strings.ToLower(scheme) {
	case "http":
		return "80"
	case "https":
		return "443"
	}
	return ""
}
