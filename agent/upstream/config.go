// Package upstream keeps the live state of the agent's upstream clusters and picks the
// endpoint each new upstream connection goes to.
//
// A Registry holds one Cluster per cluster name and one Host per endpoint address of a
// cluster. Both outlive configuration changes: Registry.Update installs a new set of
// ClusterConfigs and keeps the health, outlier ejections, active connection counts and
// round-robin position of every endpoint whose cluster and address did not change, so a
// host that was unhealthy before an unrelated change is still unhealthy after it. This is
// the registry-keyed-by-identity half of the agent's immutable runtime graph: the graph
// says which clusters exist, the Registry remembers what happened to them.
//
// A connection's use of the package reads top to bottom:
//
//	h, err := cluster.Pick(upstream.HashAddr(client), tried) // ErrNoHealthyUpstream, ErrOverflow
//	defer h.Release()                                          // exactly once per successful Pick
//	up, err := dial(h.Addr())
//	if err != nil { h.ConnectFailed(); tried = append(tried, h.Addr()); retry }
//	h.Connected()
//
// Pick never blocks and, for every policy but LeastRequest's rare fallback, never
// allocates: it reads one immutable balancer through an atomic pointer. The balancer is
// rebuilt, under the cluster's lock, whenever the configuration changes or a host starts or
// stops taking traffic (health check transition, ejection, return from ejection).
//
// Defaults follow Envoy where Envoy has an opinion:
//   - Load balancing: weighted round robin (earliest deadline first, smooth), least request
//     with power of two choices, ring hash (xxhash, ring of at least 1024 entries), Maglev
//     (table of 65537 entries), random.
//   - Panic mode: when fewer than 50% of a cluster's hosts are healthy and not ejected
//     (Envoy's healthy_panic_threshold default), the cluster balances over all its hosts,
//     whatever their health, rather than overload the few healthy ones or refuse traffic.
//     In particular, a cluster whose hosts are all unhealthy still sends to all of them.
//   - Active health checks: one goroutine per host; a host added with a health check
//     configured is unhealthy until its first check, which runs at once, passes.
//   - Outlier detection: 5 consecutive connect failures eject a host for 30s times the
//     number of times it was ejected, at most 300s, with at most 10% of the hosts (but
//     always at least one) ejected at a time.
//   - Circuit breaker: at most 1024 active upstream connections per cluster.
//
// # Metrics
//
// Namespace flotilla_agent, named after Envoy's cluster statistics:
//   - membership_healthy{cluster}, membership_total{cluster}: hosts taking traffic
//     (healthy and not ejected) and all hosts.
//   - endpoint_healthy{cluster,endpoint}: 1 if the host takes traffic, else 0.
//   - health_check_success{cluster,endpoint}, health_check_failure{cluster,endpoint}.
//   - outlier_detection_ejections_enforced_total{cluster,endpoint},
//     outlier_detection_ejections_active{cluster}.
//   - upstream_cx_overflow{cluster}: picks refused by the circuit breaker.
package upstream

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// ErrNoHealthyUpstream is returned by Cluster.Pick when the cluster has no host (or is no
// longer configured).
var ErrNoHealthyUpstream = errors.New("no healthy upstream")

// ErrOverflow is returned by Cluster.Pick when the cluster already has MaxConnections
// active upstream connections (Envoy's max_connections circuit breaker).
var ErrOverflow = errors.New("upstream connection limit reached")

// Policy is a cluster's load-balancing policy. The zero value is RoundRobin.
type Policy int

const (
	// RoundRobin sends to every host in turn, in proportion to its weight, interleaved
	// smoothly (weights 1 and 3 give b,b,a,b,...), with Envoy's earliest deadline first
	// rule. The position in the sequence survives configuration changes.
	RoundRobin Policy = iota
	// LeastRequest picks two hosts at random (in proportion to their weights) and sends
	// to the one with fewer active connections relative to its weight (power of two
	// choices, Envoy's choice_count 2).
	LeastRequest
	// RingHash places every host on a hash ring (xxhash of "address_i", a ketama ring like
	// Envoy's, entries in proportion to weight, at least MinRingSize in all) and sends a
	// client hash to the first host at or after it on the ring: the same client goes to
	// the same host, and removing one of N hosts moves about 1/N of the clients.
	RingHash
	// Maglev sends a client hash to the host in a lookup table filled with the
	// population algorithm of Google's Maglev paper (Envoy's maglev policy), in proportion
	// to weight: even spread, and minimal disruption when hosts change.
	Maglev
	// Random sends to a random host, in proportion to its weight. (Envoy's RANDOM ignores
	// weights; with equal weights the two agree.)
	Random
)

// String returns the policy's name as in Envoy's lb_policy, in lower case.
func (p Policy) String() string {
	switch p {
	case RoundRobin:
		return "round_robin"
	case LeastRequest:
		return "least_request"
	case RingHash:
		return "ring_hash"
	case Maglev:
		return "maglev"
	case Random:
		return "random"
	}
	return fmt.Sprintf("Policy(%d)", int(p))
}

// Endpoint is one upstream address of a cluster. Its address is its identity: the state of
// an endpoint survives a configuration change as long as its cluster has an endpoint with
// the same address.
type Endpoint struct {
	Addr netip.AddrPort
	// Weight is the endpoint's share of the traffic relative to the others; 0 means 1
	// (Envoy's load_balancing_weight default).
	Weight uint32
}

// HealthCheck configures active health checks of every endpoint of a cluster. The zero
// values of the durations and thresholds select the defaults noted; exactly one of TCP and
// HTTP must be set.
type HealthCheck struct {
	// Interval is the time between two checks of an endpoint, plus a random jitter of up
	// to 10%; 0 means 5s.
	Interval time.Duration
	// Timeout bounds one check (connect, send, receive); 0 means 1s.
	Timeout time.Duration
	// HealthyThreshold is the number of consecutive passing checks that mark an unhealthy
	// endpoint healthy; 0 means 2. A new endpoint needs only its first check to pass,
	// like Envoy.
	HealthyThreshold uint32
	// UnhealthyThreshold is the number of consecutive failing checks that mark a healthy
	// endpoint unhealthy; 0 means 3.
	UnhealthyThreshold uint32

	// TCP checks with a connection, and optionally a payload and its expected answer.
	TCP *TCPCheck
	// HTTP checks with an HTTP/1.1 GET request.
	HTTP *HTTPCheck
}

// TCPCheck is Envoy's tcp_health_check: a check passes when the connection succeeds and,
// if Send is set, Send is written and the first bytes received equal Expect.
type TCPCheck struct {
	// Send is written once connected; empty means the check only connects.
	Send []byte
	// Expect is compared with the first len(Expect) bytes received (a prefix match);
	// empty means nothing is read. It needs Send.
	Expect []byte
}

// HTTPCheck is an HTTP/1.1 health check: GET Path with the Host header Host (default: the
// endpoint's address) passes when the response status is one of ExpectedStatuses, or, if
// that is empty, in [200, 400).
type HTTPCheck struct {
	// Path is the request path; "" means "/".
	Path string
	// Host is the Host header; "" means the endpoint's address.
	Host string
	// ExpectedStatuses lists the status codes that pass; empty means 200 to 399.
	ExpectedStatuses []int
}

// Outlier configures passive outlier detection: hosts that keep failing to connect are
// ejected for a while. The zero value is Envoy's defaults.
type Outlier struct {
	// Consecutive5xxOrConnectFailures is the number of consecutive connect failures that
	// eject a host (Envoy's consecutive_5xx / consecutive_gateway_failure, which count
	// connect failures); 0 means 5.
	Consecutive5xxOrConnectFailures uint32
	// BaseEjection is the ejection time; a host ejected n times in a row stays out for
	// n × BaseEjection, at most MaxEjection. 0 means 30s.
	BaseEjection time.Duration
	// MaxEjection caps the ejection time; 0 means 300s (Envoy's max_ejection_time).
	MaxEjection time.Duration
	// MaxEjectionPercent caps the share of a cluster's hosts ejected at a time, in
	// percent, 1 to 100; 0 means 10. One host may always be ejected, whatever the share.
	MaxEjectionPercent uint32
	// Interval is how often, while a host is not ejected, its ejection count decays by
	// one, so a host that behaves again is ejected for BaseEjection next time; 0 means
	// 10s.
	Interval time.Duration
}

// ClusterConfig is the configuration of one cluster, as the agent's runtime graph knows
// it. Its Name is its identity across updates.
type ClusterConfig struct {
	Name      string
	Policy    Policy
	Endpoints []Endpoint
	// HealthCheck enables active health checks; nil means every endpoint is healthy
	// unless outlier detection ejects it.
	HealthCheck *HealthCheck
	// Outlier enables passive outlier detection; nil disables it.
	Outlier *Outlier
	// MaxConnections is the circuit breaker: the most active upstream connections (picks
	// not yet released) of the cluster; 0 means 1024, Envoy's default.
	MaxConnections uint32
	// MinRingSize and MaxRingSize bound the RingHash ring; 0 means 1024 and 8M (Envoy's
	// defaults).
	MinRingSize, MaxRingSize uint64
	// TableSize is the Maglev table size, a prime; 0 means 65537 (Envoy's default).
	TableSize uint64
	// PanicThreshold is healthy_panic_threshold, a percentage: when fewer than this share
	// of the hosts take traffic, the cluster balances over all of them. nil means
	// PanicThreshold (50, Envoy's default); 0 turns panic mode off, so a cluster with no
	// healthy host picks none (ErrNoHealthyUpstream).
	PanicThreshold *float64
}

// panicThreshold returns c's panic threshold in percent.
func (c *ClusterConfig) panicThreshold() float64 {
	if c.PanicThreshold == nil {
		return PanicThreshold
	}
	return *c.PanicThreshold
}

// Defaults, as Envoy has them (or, for health-check thresholds Envoy requires, as HAProxy
// does: rise 2, fall 3).
const (
	DefaultMaxConnections     = 1024
	DefaultMinRingSize        = 1024
	DefaultMaxRingSize        = 8 << 20
	DefaultTableSize          = 65537
	DefaultHCInterval         = 5 * time.Second
	DefaultHCTimeout          = time.Second
	DefaultHealthyThreshold   = 2
	DefaultUnhealthyThreshold = 3
	DefaultConsecutiveFailure = 5
	DefaultBaseEjection       = 30 * time.Second
	DefaultMaxEjection        = 300 * time.Second
	DefaultMaxEjectionPercent = 10
	DefaultOutlierInterval    = 10 * time.Second
	// PanicThreshold is Envoy's default healthy_panic_threshold: when fewer than this
	// percentage of a cluster's hosts take traffic, the cluster balances over all hosts.
	PanicThreshold = 50
)

// Validate reports the first problem of c that Update could not honour, naming the field.
// Update skips (and logs) configs that fail it; call it while building the runtime graph
// so a bad resource is NACKed instead.
func (c *ClusterConfig) Validate() error {
	if c.Name == "" {
		return errors.New("cluster name is empty")
	}
	if c.Policy < RoundRobin || c.Policy > Random {
		return fmt.Errorf("cluster %q: unknown load-balancing policy %d", c.Name, int(c.Policy))
	}
	if p := c.PanicThreshold; p != nil && !(*p >= 0 && *p <= 100) {
		return fmt.Errorf("cluster %q: panic threshold %g is not a percentage (0 to 100)", c.Name, *p)
	}
	seen := make(map[netip.AddrPort]bool, len(c.Endpoints))
	for i, e := range c.Endpoints {
		if !e.Addr.IsValid() {
			return fmt.Errorf("cluster %q: endpoints[%d]: invalid address", c.Name, i)
		}
		if seen[e.Addr] {
			return fmt.Errorf("cluster %q: endpoints[%d]: duplicate address %s", c.Name, i, e.Addr)
		}
		seen[e.Addr] = true
	}
	if c.MinRingSize != 0 && c.MaxRingSize != 0 && c.MinRingSize > c.MaxRingSize {
		return fmt.Errorf("cluster %q: min ring size %d exceeds max ring size %d", c.Name, c.MinRingSize, c.MaxRingSize)
	}
	if c.TableSize != 0 && !isPrime(c.TableSize) {
		return fmt.Errorf("cluster %q: maglev table size %d is not a prime", c.Name, c.TableSize)
	}
	if hc := c.HealthCheck; hc != nil {
		if (hc.TCP == nil) == (hc.HTTP == nil) {
			return fmt.Errorf("cluster %q: health check: exactly one of tcp and http must be set", c.Name)
		}
		if hc.Interval < 0 || hc.Timeout < 0 {
			return fmt.Errorf("cluster %q: health check: negative interval or timeout", c.Name)
		}
		if hc.TCP != nil && len(hc.TCP.Expect) > 0 && len(hc.TCP.Send) == 0 {
			return fmt.Errorf("cluster %q: health check: tcp expect needs send", c.Name)
		}
		if h := hc.HTTP; h != nil {
			if h.Path != "" && h.Path[0] != '/' {
				return fmt.Errorf("cluster %q: health check: http path %q does not start with /", c.Name, h.Path)
			}
			for _, s := range h.ExpectedStatuses {
				if s < 100 || s > 599 {
					return fmt.Errorf("cluster %q: health check: expected status %d out of range", c.Name, s)
				}
			}
		}
	}
	if o := c.Outlier; o != nil {
		if o.MaxEjectionPercent > 100 {
			return fmt.Errorf("cluster %q: outlier detection: max ejection percent %d exceeds 100", c.Name, o.MaxEjectionPercent)
		}
		if o.BaseEjection < 0 || o.MaxEjection < 0 || o.Interval < 0 {
			return fmt.Errorf("cluster %q: outlier detection: negative duration", c.Name)
		}
	}
	return nil
}

func isPrime(n uint64) bool {
	if n < 2 {
		return false
	}
	for d := uint64(2); d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}

// healthCheck is a HealthCheck with its defaults applied.
type healthCheck struct {
	interval, timeout  time.Duration
	healthy, unhealthy uint32
	tcp                *TCPCheck
	http               *HTTPCheck
}

func newHealthCheck(hc *HealthCheck) *healthCheck {
	if hc == nil {
		return nil
	}
	n := &healthCheck{
		interval:  orDefault(hc.Interval, DefaultHCInterval),
		timeout:   orDefault(hc.Timeout, DefaultHCTimeout),
		healthy:   orDefault(hc.HealthyThreshold, DefaultHealthyThreshold),
		unhealthy: orDefault(hc.UnhealthyThreshold, DefaultUnhealthyThreshold),
	}
	if t := hc.TCP; t != nil {
		n.tcp = &TCPCheck{Send: slices.Clone(t.Send), Expect: slices.Clone(t.Expect)}
	}
	if h := hc.HTTP; h != nil {
		n.http = &HTTPCheck{Path: orDefault(h.Path, "/"), Host: h.Host, ExpectedStatuses: slices.Clone(h.ExpectedStatuses)}
	}
	return n
}

// equal reports whether a and b check the same way; checkers restart when they do not.
func (a *healthCheck) equal(b *healthCheck) bool {
	if a == nil || b == nil {
		return a == b
	}
	if a.interval != b.interval || a.timeout != b.timeout || a.healthy != b.healthy || a.unhealthy != b.unhealthy {
		return false
	}
	if (a.tcp == nil) != (b.tcp == nil) || (a.http == nil) != (b.http == nil) {
		return false
	}
	if a.tcp != nil && (string(a.tcp.Send) != string(b.tcp.Send) || string(a.tcp.Expect) != string(b.tcp.Expect)) {
		return false
	}
	if a.http != nil && (a.http.Path != b.http.Path || a.http.Host != b.http.Host || !slices.Equal(a.http.ExpectedStatuses, b.http.ExpectedStatuses)) {
		return false
	}
	return true
}

// outlier is an Outlier with its defaults applied.
type outlier struct {
	consecutive         uint32
	base, max, interval time.Duration
	maxPercent          uint32
}

func newOutlier(o *Outlier) *outlier {
	if o == nil {
		return nil
	}
	return &outlier{
		consecutive: orDefault(o.Consecutive5xxOrConnectFailures, DefaultConsecutiveFailure),
		base:        orDefault(o.BaseEjection, DefaultBaseEjection),
		max:         orDefault(o.MaxEjection, DefaultMaxEjection),
		interval:    orDefault(o.Interval, DefaultOutlierInterval),
		maxPercent:  orDefault(o.MaxEjectionPercent, DefaultMaxEjectionPercent),
	}
}

// orDefault returns v, or def if v is the zero value.
func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}
