package bundle

import (
	"fmt"
	"slices"
	"strings"

	configv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/config/v1"
)

// This file validates what issue 3's second phase added to the schema: a
// cluster's load-balancing policy, active health check, outlier detection and
// connection limit, and a listener's udp block, connection limit and access
// log. Zero numbers mean the default throughout, so "at least 1" rules hold
// by construction; what is checked here is what the defaults cannot fix.

// Cluster.lb values: the load-balancing policies.
const (
	// LBRoundRobin is weighted round robin, the default.
	LBRoundRobin = "round_robin"
	// LBLeastRequest picks the endpoint with fewer active connections of two
	// chosen at random.
	LBLeastRequest = "least_request"
	// LBRingHash hashes the client's address onto a consistent-hash ring.
	LBRingHash = "ring_hash"
	// LBMaglev hashes the client's address onto a Maglev table.
	LBMaglev = "maglev"
	// LBRandom picks an endpoint at random.
	LBRandom = "random"
)

// LBPolicies lists the values of Cluster.lb, the default first.
var LBPolicies = []string{LBRoundRobin, LBLeastRequest, LBRingHash, LBMaglev, LBRandom}

// HashesSource reports whether a cluster's lb policy hashes the client's
// source address (ring_hash and maglev): listeners proxying to it must say
// so with a source_ip hash policy.
func HashesSource(c *configv1.Cluster) bool {
	return c.GetLb() == LBRingHash || c.GetLb() == LBMaglev
}

// MaxEjectionPercent is the largest OutlierDetection.max_ejection_percent.
const MaxEjectionPercent = 100

// clusterPolicies validates a cluster's lb, health_check and
// outlier_detection.
func (v *validator) clusterPolicies(at site, c *configv1.Cluster) {
	if c.PanicThreshold != nil && c.GetPanicThreshold() > 100 {
		v.add(at, "panic_threshold", "%d is more than 100 (a percentage of healthy endpoints; 0 turns panic mode off)", c.GetPanicThreshold())
	}
	if lb := c.GetLb(); lb != "" && !slices.Contains(LBPolicies, lb) {
		v.add(at, "lb", "%q is not a load-balancing policy: use %s (or leave it out for %s)", lb, orList(LBPolicies), LBRoundRobin)
	}
	if hc := c.GetHealthCheck(); hc != nil {
		v.healthCheck(at, hc)
	}
	if od := c.GetOutlierDetection(); od != nil {
		v.duration(at, "outlier_detection.base_ejection_time", od.GetBaseEjectionTime(), false)
		v.duration(at, "outlier_detection.interval", od.GetInterval(), false)
		if p := od.GetMaxEjectionPercent(); p > MaxEjectionPercent {
			v.add(at, "outlier_detection.max_ejection_percent", "%d is more than %d (0 means the default, 10)", p, MaxEjectionPercent)
		}
	}
}

func (v *validator) healthCheck(at site, hc *configv1.HealthCheck) {
	const f = "health_check"
	v.duration(at, f+".interval", hc.GetInterval(), false)
	v.duration(at, f+".timeout", hc.GetTimeout(), false)
	if (hc.GetTcp() == nil) == (hc.GetHttp() == nil) {
		v.add(at, f, "needs exactly one of tcp (connect, or send bytes and expect a reply) and http (a GET whose status is checked)")
	}
	if tcp := hc.GetTcp(); tcp != nil && tcp.GetExpect() != "" && tcp.GetSend() == "" {
		v.add(at, f+".tcp.expect", "needs send: the check reads a reply only after sending something")
	}
	if h := hc.GetHttp(); h != nil {
		switch p := h.GetPath(); {
		case p == "":
			v.add(at, f+".http.path", `required: the path to GET, such as "/healthz"`)
		case !strings.HasPrefix(p, "/"):
			v.add(at, f+".http.path", `%q must start with "/"`, p)
		case !printable(p):
			v.add(at, f+".http.path", "%q must not contain spaces or control characters", p)
		}
		if host := h.GetHost(); !printable(host) {
			v.add(at, f+".http.host", "%q must not contain spaces or control characters", host)
		}
		seen := make(map[uint32]int)
		for i, s := range h.GetExpectedStatuses() {
			sf := fmt.Sprintf("%s.http.expected_statuses[%d]", f, i)
			if s < 100 || s > 599 {
				v.add(at, sf, "%d is not an HTTP status: use 100 to 599", s)
			} else if first, ok := seen[s]; ok {
				v.add(at, sf, "duplicate status %d: same as expected_statuses[%d]", s, first)
			} else {
				seen[s] = i
			}
		}
	}
}

// printable reports whether s has only printable ASCII other than space.
func printable(s string) bool {
	for _, c := range []byte(s) {
		if c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

// udp validates a UDP listener: its udp block, and that nothing only TCP
// listeners have is set.
func (v *validator) udp(at site, l *configv1.Listener) {
	const tcpOnly = "only with tcp: a UDP listener sends every datagram to udp.cluster"
	if l.GetTcp() != nil {
		v.add(at, "udp", "cannot be combined with tcp: a listener is either TCP or UDP")
	}
	if len(l.GetSni()) > 0 {
		v.add(at, "sni", tcpOnly)
	}
	if len(l.GetRoutes()) > 0 {
		v.add(at, "routes", tcpOnly)
	}
	if l.GetProxyProtocol() != nil {
		v.add(at, "proxy_protocol", "only with tcp: the PROXY protocol is not read from UDP datagrams")
	}
	if l.GetPrereadTimeout() != nil {
		v.add(at, "preread_timeout", "has no effect: only listeners with sni, routes or proxy_protocol use it")
	}
	if l.GetTls() != nil {
		v.add(at, "tls", "only with tcp: TLS is not terminated on UDP")
	}
	if l.GetMaxConnections() != 0 {
		v.add(at, "max_connections", "only with tcp: a UDP listener's sessions are limited by its cluster's max_connections")
	}
	udp := l.GetUdp()
	v.clusterRef(at, "udp.cluster", udp.GetCluster())
	if c := v.defs[udp.GetCluster()]; c != nil && c.GetProxyProtocol() != "" {
		v.add(at, "udp.cluster", "cluster %q sends the PROXY protocol (proxy_protocol: %s), which a UDP listener cannot: use a cluster without it", c.GetName(), c.GetProxyProtocol())
	}
	if c := v.defs[udp.GetCluster()]; c != nil && c.GetTls() != nil {
		v.add(at, "udp.cluster", "cluster %q originates TLS (tls), which a UDP listener cannot: use a cluster without it", c.GetName())
	}
	v.duration(at, "udp.idle_timeout", udp.GetIdleTimeout(), false)
	v.accessLog(at, l.GetAccessLog())
}

// orList joins values as `"a", "b" or "c"`.
func orList(vals []string) string {
	q := make([]string, len(vals))
	for i, s := range vals {
		q[i] = fmt.Sprintf("%q", s)
	}
	if len(q) < 2 {
		return strings.Join(q, "")
	}
	return strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
}
