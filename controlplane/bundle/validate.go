package bundle

import (
	"cmp"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/types/known/durationpb"

	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
	configv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/config/v1"
)

// Limits and rules the schema's doc comments promise.
const (
	// MaxConnectAttempts is the most TcpProxy.connect_attempts may ask for.
	MaxConnectAttempts = 10
	// MaxWeight is the largest endpoint weight.
	MaxWeight = 128
	// ProxyProtocolV1 is Cluster.proxy_protocol for the text PROXY header.
	ProxyProtocolV1 = "v1"
	// ProxyProtocolV2 is Cluster.proxy_protocol for the binary PROXY header.
	ProxyProtocolV2 = "v2"
)

const (
	nameRule  = "use 1 to 63 characters: lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
	labelRule = "use 1 to 63 characters: letters, digits, '.', '_' or '-' (and '/' in keys), starting and ending with a letter or digit"
)

var (
	nameRe       = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]{0,62})$`)
	labelKeyRe   = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$`)
	labelValueRe = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$`)
)

// FieldError is one problem with one field of one file.
type FieldError struct {
	// File is the file's path as the user named it.
	File string
	// Field is the field's path, like listeners[2].address; empty when the
	// problem is with the file as a whole.
	Field string
	// Reason says what is wrong in plain words.
	Reason string
}

// Error formats the error as `file: field: reason`, leaving out empty parts.
func (e *FieldError) Error() string {
	parts := make([]string, 0, 3)
	for _, s := range []string{e.File, e.Field, e.Reason} {
		if s != "" {
			parts = append(parts, s)
		}
	}
	return strings.Join(parts, ": ")
}

// Errors is a list of field errors, sorted by file then field.
type Errors []*FieldError

// Error joins the errors' messages with newlines.
func (es Errors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// Validate checks everything that can be checked without agents: names,
// addresses, references between listeners (and grpc_services) and clusters,
// HTTP routes, limits, and port
// clashes between listeners that can land on the same agent. Names must be
// unique across all files. It returns nil or an Errors holding every problem
// found, sorted by file then field.
func Validate(files []*adminv1.ConfigFile) error {
	v := &validator{
		clusters:  make(map[string]site),
		defs:      make(map[string]*configv1.Cluster),
		listeners: make(map[string]site),
	}
	// Clusters first, so that references resolve whatever the file order.
	for _, f := range files {
		for i, c := range f.GetBundle().GetClusters() {
			v.cluster(site{f.GetPath(), fmt.Sprintf("clusters[%d]", i)}, c)
		}
	}
	for _, f := range files {
		for i, l := range f.GetBundle().GetListeners() {
			v.listener(site{f.GetPath(), fmt.Sprintf("listeners[%d]", i)}, l)
		}
	}
	grpcServices := make(map[string]site)
	for _, f := range files {
		for i, g := range f.GetBundle().GetGrpcServices() {
			v.grpcService(site{f.GetPath(), fmt.Sprintf("grpc_services[%d]", i)}, g, grpcServices)
		}
	}
	v.portClashes()
	v.logClashes()
	if len(v.errs) == 0 {
		return nil
	}
	slices.SortStableFunc(v.errs, func(a, b *FieldError) int {
		if c := naturalCompare(a.File, b.File); c != 0 {
			return c
		}
		return naturalCompare(a.Field, b.Field)
	})
	return v.errs
}

// site is where something is defined: a file and a field path in it.
type site struct{ file, field string }

func (s site) String() string { return s.file + " " + s.field }

// placed is a listener with a valid address, for the port clash check.
type placed struct {
	at     site
	name   string
	addr   string
	ip     netip.Addr // invalid for an empty host
	port   uint16
	agents map[string]string
	udp    bool // UDP and TCP listeners never clash with each other
}

type validator struct {
	errs      Errors
	clusters  map[string]site // name → first definition
	defs      map[string]*configv1.Cluster
	listeners map[string]site
	placed    []placed
	logs      []placedLog
}

func (v *validator) add(at site, field, format string, args ...any) {
	v.errs = append(v.errs, &FieldError{File: at.file, Field: join(at.field, field), Reason: fmt.Sprintf(format, args...)})
}

// name checks a listener or cluster name and records its first definition.
func (v *validator) name(at site, kind, name string, defined map[string]site) {
	switch {
	case name == "":
		v.add(at, "name", "required")
		return
	case !nameRe.MatchString(name):
		v.add(at, "name", "%q is not a valid name: %s", name, nameRule)
		return
	}
	if first, ok := defined[name]; ok {
		v.add(at, "name", "duplicate %s name %q: already defined in %s", kind, name, first)
		return
	}
	defined[name] = at
}

func (v *validator) listener(at site, l *configv1.Listener) {
	v.name(at, "listener", l.GetName(), v.listeners)

	if l.GetAddress() == "" {
		v.add(at, "address", `required: host:port, such as ":4242" (every address), "0.0.0.0:4242" or "127.0.0.1:4242"`)
	} else if ip, port, err := ListenAddress(l.GetAddress()); err != nil {
		v.add(at, "address", "%v", err)
	} else {
		v.placed = append(v.placed, placed{at: at, name: l.GetName(), addr: l.GetAddress(), ip: ip, port: port, agents: l.GetAgents(), udp: l.GetUdp() != nil})
	}

	v.selector(at, l.GetAgents())
	v.placeLog(at, l) // every kind of listener: one file, one format (logClashes)

	routed := len(l.GetSni()) > 0 || len(l.GetRoutes()) > 0
	if l.GetHttp() != nil {
		v.http(at, l)
		return
	}
	if l.GetUdp() != nil {
		v.udp(at, l)
		return
	}
	if tcp := l.GetTcp(); tcp == nil {
		if !routed {
			v.add(at, "tcp", "required: a listener needs tcp (a cluster to proxy to), udp, sni or routes")
		}
	} else {
		if tcp.GetCluster() != "" || !routed {
			v.clusterRef(at, "tcp.cluster", tcp.GetCluster())
		}
		v.duration(at, "tcp.idle_timeout", tcp.GetIdleTimeout(), true)
		if n := tcp.GetConnectAttempts(); n > MaxConnectAttempts {
			v.add(at, "tcp.connect_attempts", "%d is too many: at most %d (0 means the default, 3)", n, MaxConnectAttempts)
		}
	}
	v.routing(at, l)
	v.accessLog(at, l.GetAccessLog())
	v.tlsListener(at, l)
}

// selector checks an agents label selector.
func (v *validator) selector(at site, agents map[string]string) {
	for _, key := range slices.Sorted(maps.Keys(agents)) {
		val := agents[key]
		if !labelKeyRe.MatchString(key) {
			v.add(at, "agents", "%q is not a valid label key: %s", key, labelRule)
		}
		if !labelValueRe.MatchString(val) {
			v.add(at, "agents."+key, "%q is not a valid label value: %s", val, labelRule)
		}
	}
}

func (v *validator) cluster(at site, c *configv1.Cluster) {
	v.name(at, "cluster", c.GetName(), v.clusters)
	if _, ok := v.defs[c.GetName()]; !ok {
		v.defs[c.GetName()] = c
	}
	v.duration(at, "connect_timeout", c.GetConnectTimeout(), false)
	switch pp := c.GetProxyProtocol(); pp {
	case "", ProxyProtocolV1, ProxyProtocolV2:
	default:
		v.add(at, "proxy_protocol", "%q is not a PROXY protocol version: use %q or %q (or leave it out to send none)", pp, ProxyProtocolV1, ProxyProtocolV2)
	}
	v.clusterPolicies(at, c)
	v.tlsCluster(at, c)
	v.httpCluster(at, c)
	if len(c.GetEndpoints()) == 0 {
		v.add(at, "endpoints", "a cluster needs at least one endpoint")
		return
	}
	seen := make(map[netip.AddrPort]int)
	for i, e := range c.GetEndpoints() {
		f := fmt.Sprintf("endpoints[%d]", i)
		ap, err := EndpointAddress(e.GetAddress())
		if err != nil {
			v.add(at, f+".address", "%v", err)
		} else if first, ok := seen[ap]; ok {
			v.add(at, f+".address", "duplicate endpoint %q: same as endpoints[%d]", e.GetAddress(), first)
		} else {
			seen[ap] = i
		}
		if w := e.GetWeight(); w > MaxWeight {
			v.add(at, f+".weight", "%d is out of range: use 1 to %d (0 means 1)", w, MaxWeight)
		}
	}
}

// duration checks an optional duration: valid, not negative, and positive
// unless zero has a meaning.
func (v *validator) duration(at site, field string, d *durationpb.Duration, zeroOK bool) {
	switch {
	case d == nil:
	case d.CheckValid() != nil:
		v.add(at, field, "invalid duration: %v", d.CheckValid())
	case d.AsDuration() < 0:
		v.add(at, field, "must not be negative, got %v", d.AsDuration())
	case d.AsDuration() == 0 && !zeroOK:
		v.add(at, field, "must be more than 0s (leave it out for the default)")
	}
}

// portClashes reports two listeners of the same protocol (TCP or UDP) on the
// same port whose IPs overlap and whose selectors can both match one agent:
// that agent could not bind both.
func (v *validator) portClashes() {
	byPort := make(map[uint16][]placed)
	for _, p := range v.placed {
		byPort[p.port] = append(byPort[p.port], p)
	}
	for _, ps := range byPort {
		for j := range ps {
			for i := range j {
				a, b := ps[i], ps[j]
				if a.udp != b.udp || !ipsOverlap(a.ip, b.ip) || !selectorsOverlap(a.agents, b.agents) {
					continue
				}
				proto := ""
				if b.udp {
					proto = "UDP "
				}
				v.add(b.at, "address", "%sport %d of %q clashes with listener %q (%s, address %q): an agent matching both selectors cannot listen on both",
					proto, b.port, b.addr, a.name, a.at, a.addr)
			}
		}
	}
}

func ipsOverlap(a, b netip.Addr) bool {
	wildcard := func(ip netip.Addr) bool { return !ip.IsValid() || ip.IsUnspecified() }
	return wildcard(a) || wildcard(b) || a.Unmap() == b.Unmap()
}

// selectorsOverlap reports whether some agent can match both selectors: no
// key on which both set different values.
func selectorsOverlap(a, b map[string]string) bool {
	for k, av := range a {
		if bv, ok := b[k]; ok && bv != av {
			return false
		}
	}
	return true
}

// ListenAddress parses a listener address "host:port": the host is an IP
// literal or empty (every address), the port 1 to 65535. The returned IP is
// invalid (the zero netip.Addr) for an empty host.
func ListenAddress(s string) (netip.Addr, uint16, error) {
	host, port, err := splitHostPort(s)
	if err != nil {
		return netip.Addr{}, 0, err
	}
	if host == "" {
		return netip.Addr{}, port, nil
	}
	ip, err := parseIP(s, host)
	return ip, port, err
}

// EndpointAddress parses an endpoint address "ip:port" (IPv6 in brackets):
// a specific IP address and a port from 1 to 65535.
func EndpointAddress(s string) (netip.AddrPort, error) {
	if s == "" {
		return netip.AddrPort{}, fmt.Errorf(`required: ip:port, such as "192.0.2.10:4242" or "[2001:db8::10]:4242"`)
	}
	host, port, err := splitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if host == "" {
		return netip.AddrPort{}, fmt.Errorf("%q has no IP address: an endpoint is ip:port", s)
	}
	ip, err := parseIP(s, host)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if ip.IsUnspecified() {
		return netip.AddrPort{}, fmt.Errorf("%q is not a specific IP address", s)
	}
	return netip.AddrPortFrom(ip, port), nil
}

func splitHostPort(s string) (string, uint16, error) {
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("%q is not host:port (write IPv6 in brackets: \"[2001:db8::1]:4242\")", s)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return "", 0, fmt.Errorf("%q: port %q is not a number from 1 to 65535", s, portStr)
	}
	return host, uint16(port), nil
}

func parseIP(s, host string) (netip.Addr, error) {
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%q: host %q is not an IP address (names are not resolved)", s, host)
	}
	if ip.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%q: IPv6 zones are not supported", s)
	}
	return ip, nil
}

// naturalCompare orders strings with runs of digits compared as numbers, so
// that listeners[2] comes before listeners[10].
func naturalCompare(a, b string) int {
	for a != "" && b != "" {
		da, db := digitRun(a), digitRun(b)
		if da > 0 && db > 0 {
			na, nb := strings.TrimLeft(a[:da], "0"), strings.TrimLeft(b[:db], "0")
			if c := cmp.Compare(len(na), len(nb)); c != 0 {
				return c
			}
			if c := strings.Compare(na, nb); c != 0 {
				return c
			}
			a, b = a[da:], b[db:]
			continue
		}
		if a[0] != b[0] {
			return cmp.Compare(a[0], b[0])
		}
		a, b = a[1:], b[1:]
	}
	return cmp.Compare(len(a), len(b))
}

func digitRun(s string) int {
	n := 0
	for n < len(s) && s[n] >= '0' && s[n] <= '9' {
		n++
	}
	return n
}
