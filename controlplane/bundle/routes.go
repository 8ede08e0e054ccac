package bundle

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	configv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/config/v1"
)

// This file validates how a listener routes connections: sni, routes, the
// default route in tcp, proxy_protocol and preread_timeout. Each sni entry
// and each route becomes one Envoy filter chain, and Envoy refuses a listener
// whose filter chains can match the same connection, so that is checked here
// where the error can name the fields.

// Values of StreamMatch.transport and of Envoy's transport_protocol.
const (
	// TransportTLS is the transport of a connection that starts with a TLS
	// ClientHello, in the schema and on the wire.
	TransportTLS = "tls"
	// TransportRaw is the schema's name for any other connection.
	TransportRaw = "raw"
	// TransportRawBuffer is Envoy's name for TransportRaw.
	TransportRawBuffer = "raw_buffer"
)

// MaxALPNLength is the longest ALPN protocol ID TLS can carry (RFC 7301).
const MaxALPNLength = 255

// ServerNameRule says what a valid server name looks like, in errors.
const ServerNameRule = `each dot-separated label has 1 to 63 letters, digits or '-', not starting or ending with '-'; a wildcard starts with "*." (such as "*.example.com")`

// ServerName checks an SNI name — exact ("example.com") or a wildcard
// ("*.example.com", where "*." is the whole first label) — and returns it in
// lowercase, the form compared and sent to agents.
func ServerName(s string) (string, error) {
	if s == "" {
		return "", fmt.Errorf(`required: a server name such as "example.com" or "*.example.com"`)
	}
	name := strings.ToLower(s)
	rest := strings.TrimPrefix(name, "*.")
	if len(rest) > 253 {
		return "", fmt.Errorf("%q is too long: at most 253 characters", s)
	}
	for label := range strings.SplitSeq(rest, ".") {
		if !ldhLabel(label) {
			return "", fmt.Errorf("%q is not a server name: %s", s, ServerNameRule)
		}
	}
	if _, err := netip.ParseAddr(rest); err == nil {
		return "", fmt.Errorf("%q is an IP address: TLS clients never send one as SNI", s)
	}
	return name, nil
}

// ldhLabel reports whether label is a DNS label of letters, digits and
// hyphens (LDH), 1 to 63 characters, not starting or ending with a hyphen.
func ldhLabel(label string) bool {
	if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
		return false
	}
	for _, c := range []byte(label) {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// CIDR parses an address range: a CIDR ("10.0.0.0/8", "2001:db8::/32") or a
// bare IP, which means /32 or /128. Bits set after the prefix are an error
// rather than silently dropped.
func CIDR(s string) (netip.Prefix, error) {
	bad := fmt.Errorf(`%q is not a CIDR such as "10.0.0.0/8" or an IP address`, s)
	if s == "" {
		return netip.Prefix{}, fmt.Errorf(`required: a CIDR such as "10.0.0.0/8" or an IP address`)
	}
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, bad
		}
		if m := p.Masked(); m != p {
			return netip.Prefix{}, fmt.Errorf("%q has bits set after the /%d prefix: write %q", s, p.Bits(), m)
		}
		return p, nil
	}
	ip, err := netip.ParseAddr(s)
	if err != nil || ip.Zone() != "" {
		return netip.Prefix{}, bad
	}
	return netip.PrefixFrom(ip, ip.BitLen()), nil
}

// RouteName is the name of the filter chain of routes[i] of a listener: the
// route's name, or "route-<i>".
func RouteName(r *configv1.StreamRoute, i int) string {
	if r.GetName() != "" {
		return r.GetName()
	}
	return "route-" + strconv.Itoa(i)
}

// SNIChainName is the name of the filter chain of sni[i] of a listener.
func SNIChainName(i int) string { return "sni-" + strconv.Itoa(i) }

// DefaultChainName names the filter chain of a listener's default route
// (tcp.cluster).
const DefaultChainName = "default"

// RouteTransport is the Envoy transport_protocol a route matches: "tls" when
// it matches on sni, alpn or transport tls, "raw_buffer" for transport raw,
// else "" (any).
func RouteTransport(m *configv1.StreamMatch) string {
	switch {
	case len(m.GetSni()) > 0 || len(m.GetAlpn()) > 0 || m.GetTransport() == TransportTLS:
		return TransportTLS
	case m.GetTransport() == TransportRaw:
		return TransportRawBuffer
	}
	return ""
}

// Routed reports whether a listener uses sni, routes or proxy_protocol: it
// compiles to filter chains with matches (and the listener filters they
// need), and preread_timeout applies to it. Other listeners compile to one
// filter chain without a match.
func Routed(l *configv1.Listener) bool {
	return len(l.GetSni()) > 0 || len(l.GetRoutes()) > 0 || l.GetProxyProtocol() != nil
}

// chainMatch is what one filter chain of a listener matches, each dimension
// as a set of normalized values, in Envoy's filter_chain_match order. An
// empty dimension is the set {""}: in Envoy it is a match value of its own
// (the fallback at that level), not a wildcard overlapping the others.
type chainMatch struct {
	label      string // "sni[0]", "routes[2]"
	field      string // where to report a clash, relative to the listener
	port       []string
	dst        []string
	names      []string
	transport  []string
	alpn       []string
	src        []string
	isSNIEntry bool
}

// routing validates how listener l routes connections, apart from the
// tcp block, which listener checks.
func (v *validator) routing(at site, l *configv1.Listener) {
	before := len(v.errs)
	if pp := l.GetProxyProtocol(); pp != nil {
		if len(pp.GetTrusted()) == 0 {
			v.add(at, "proxy_protocol.trusted", "required: the CIDRs of the peers allowed to send a PROXY header (connections from other peers are closed)")
		}
		v.cidrs(at, "proxy_protocol.trusted", pp.GetTrusted())
	}
	v.duration(at, "preread_timeout", l.GetPrereadTimeout(), false)
	if l.GetPrereadTimeout() != nil && !Routed(l) {
		v.add(at, "preread_timeout", "has no effect: only listeners with sni, routes or proxy_protocol use it")
	}

	chains := make(map[string]string) // filter chain name → what defines it
	if l.GetTcp().GetCluster() != "" {
		chains[DefaultChainName] = "tcp.cluster"
	}
	var matches []chainMatch
	names := make(map[string]string) // server name → field of its first use in sni
	for i, r := range l.GetSni() {
		f := fmt.Sprintf("sni[%d]", i)
		chains[SNIChainName(i)] = f
		if len(r.GetNames()) == 0 {
			v.add(at, f+".names", `required: at least one server name, such as "example.com" or "*.example.com"`)
		}
		var norm []string
		for j, n := range r.GetNames() {
			nf := fmt.Sprintf("%s.names[%d]", f, j)
			name, err := ServerName(n)
			if err != nil {
				v.add(at, nf, "%v", err)
				continue
			}
			if first, ok := names[name]; ok {
				v.add(at, nf, "duplicate server name %q: already routed by %s", n, first)
				continue
			}
			names[name] = nf
			norm = append(norm, name)
		}
		v.clusterRef(at, f+".cluster", r.GetCluster())
		matches = append(matches, chainMatch{
			label: f, field: f, isSNIEntry: true,
			port: orAny(nil), dst: orAny(nil), names: orAny(norm), transport: orAny([]string{TransportTLS}), alpn: orAny(nil), src: orAny(nil),
		})
	}
	for i, r := range l.GetRoutes() {
		f := fmt.Sprintf("routes[%d]", i)
		name := RouteName(r, i)
		switch {
		case r.GetName() != "" && !nameRe.MatchString(r.GetName()):
			v.add(at, f+".name", "%q is not a valid name: %s", r.GetName(), nameRule)
		case chains[name] != "":
			what := "route name"
			if r.GetName() == "" {
				what = "default route name"
			}
			v.add(at, f+".name", "duplicate %s %q: already the name of the filter chain of %s", what, name, chains[name])
		default:
			chains[name] = f
		}
		m := v.match(at, f+".match", r.GetMatch())
		m.label, m.field = f, f+".match"
		if isEmptyMatch(r.GetMatch()) && l.GetTcp().GetCluster() != "" {
			v.add(at, f+".match", "empty: this route takes every connection, like tcp.cluster (the default route); keep one of them")
		}
		v.clusterRef(at, f+".cluster", r.GetCluster())
		matches = append(matches, m)
	}
	if len(v.errs) == before {
		v.overlaps(at, matches)
	}
}

// match validates a route's match and returns what its filter chain matches.
func (v *validator) match(at site, f string, m *configv1.StreamMatch) chainMatch {
	var names []string
	seen := make(map[string]int)
	for j, n := range m.GetSni() {
		nf := fmt.Sprintf("%s.sni[%d]", f, j)
		name, err := ServerName(n)
		if err != nil {
			v.add(at, nf, "%v", err)
			continue
		}
		if first, ok := seen[name]; ok {
			v.add(at, nf, "duplicate server name %q: same as sni[%d]", n, first)
			continue
		}
		seen[name] = j
		names = append(names, name)
	}
	var alpn []string
	for j, p := range m.GetAlpn() {
		pf := fmt.Sprintf("%s.alpn[%d]", f, j)
		switch {
		case p == "":
			v.add(at, pf, `required: an ALPN protocol such as "h2" or "http/1.1"`)
		case len(p) > MaxALPNLength:
			v.add(at, pf, "too long: at most %d bytes", MaxALPNLength)
		case slices.Contains(alpn, p):
			v.add(at, pf, "duplicate ALPN protocol %q", p)
		default:
			alpn = append(alpn, p)
		}
	}
	switch t := m.GetTransport(); t {
	case "", TransportTLS:
	case TransportRaw:
		if len(m.GetSni()) > 0 || len(m.GetAlpn()) > 0 {
			v.add(at, f+".transport", `"raw" cannot be combined with sni or alpn, which only TLS connections have`)
		}
	default:
		v.add(at, f+".transport", `%q is not a transport: use "tls" or "raw"`, t)
	}
	port := []string{""}
	switch p := m.GetServerPort(); {
	case p > 65535:
		v.add(at, f+".server_port", "%d is not a port: use 1 to 65535 (or leave it out for any port)", p)
	case p > 0:
		port = []string{strconv.FormatUint(uint64(p), 10)}
	}
	return chainMatch{
		port:      port,
		dst:       orAny(v.cidrs(at, f+".server_addresses", m.GetServerAddresses())),
		names:     orAny(names),
		transport: orAny(nonEmpty(RouteTransport(m))),
		alpn:      orAny(alpn),
		src:       orAny(v.cidrs(at, f+".source_cidrs", m.GetSourceCidrs())),
	}
}

// cidrs validates a list of CIDRs and returns the valid ones, normalized.
func (v *validator) cidrs(at site, f string, list []string) []string {
	var out []string
	seen := make(map[netip.Prefix]int)
	for i, s := range list {
		ef := fmt.Sprintf("%s[%d]", f, i)
		p, err := CIDR(s)
		if err != nil {
			v.add(at, ef, "%v", err)
			continue
		}
		if first, ok := seen[p]; ok {
			v.add(at, ef, "duplicate %q: same as [%d]", s, first)
			continue
		}
		seen[p] = i
		out = append(out, p.String())
	}
	return out
}

// clusterRef checks a required reference to a cluster.
func (v *validator) clusterRef(at site, f, name string) {
	if name == "" {
		v.add(at, f, "required: the name of a cluster to proxy to")
	} else if _, ok := v.clusters[name]; !ok {
		v.add(at, f, "unknown cluster %q", name)
	}
}

// overlaps reports filter chains that match the same connections: in every
// dimension of Envoy's filter_chain_match they share a value. Two sni entries
// overlap only by sharing a name, which is reported per name already.
func (v *validator) overlaps(at site, ms []chainMatch) {
	for j := range ms {
		for i := range j {
			a, b := ms[i], ms[j]
			if a.isSNIEntry && b.isSNIEntry {
				continue
			}
			shared := []struct {
				what string
				vals []string
			}{
				{"server port", common(a.port, b.port)},
				{"server address", common(a.dst, b.dst)},
				{"server name", common(a.names, b.names)},
				{"transport", common(a.transport, b.transport)},
				{"alpn", common(a.alpn, b.alpn)},
				{"source", common(a.src, b.src)},
			}
			var parts []string
			clash := true
			for _, s := range shared {
				if len(s.vals) == 0 {
					clash = false
					break
				}
				if s.vals[0] != "" {
					parts = append(parts, fmt.Sprintf("%s %q", s.what, s.vals[0]))
				}
			}
			if !clash {
				continue
			}
			both := "every connection"
			if len(parts) > 0 {
				both = strings.Join(parts, ", ")
			}
			v.add(at, b.field, "matches the same connections as %s (both match %s): Envoy refuses two filter chains with the same match", a.label, both)
		}
	}
}

// isEmptyMatch reports whether a route matches every connection.
func isEmptyMatch(m *configv1.StreamMatch) bool {
	return len(m.GetSni()) == 0 && len(m.GetAlpn()) == 0 && m.GetTransport() == "" &&
		len(m.GetSourceCidrs()) == 0 && len(m.GetServerAddresses()) == 0 && m.GetServerPort() == 0
}

// orAny is a match dimension: the values, or {""} when there are none.
func orAny(vals []string) []string {
	if len(vals) == 0 {
		return []string{""}
	}
	return vals
}

func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}

// common returns the values in both a and b, in a's order.
func common(a, b []string) []string {
	var out []string
	for _, x := range a {
		if slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}
