package upstream

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Cluster is the live state of one cluster: its hosts and the balancer over those taking
// traffic. It lives from the Update that first configures its name to the Update that
// removes it. Pick, Hosts and the Host methods are safe for concurrent use.
type Cluster struct {
	name  string
	reg   *Registry
	stats clusterStats

	lb     atomic.Pointer[balancer] // what Pick reads
	rr     atomic.Uint64            // round-robin position; survives updates
	active atomic.Int64             // picks not yet released, for the circuit breaker

	mu      sync.Mutex // guards the fields below and the guarded fields of every Host
	cfg     ClusterConfig
	hc      *healthCheck
	outlier *outlier
	hosts   []*Host // in config order
	byAddr  map[netip.AddrPort]*Host
	closed  bool
}

// Host is one endpoint of a cluster, with the state that survives configuration changes.
// Pick hands it out; the connection that got it reports how connecting went (Connected or
// ConnectFailed) and calls Release exactly once when its upstream connection ends or
// fails. Its methods are safe for concurrent use.
type Host struct {
	addr    netip.AddrPort
	addrStr string
	cluster *Cluster
	stats   hostStats

	active      atomic.Int64  // picks not yet released
	consecutive atomic.Uint32 // connect failures in a row, for outlier detection

	// Guarded by cluster.mu.
	weight      uint32
	hcFailed    bool // active health checking says it is unhealthy (or has not passed yet)
	hcPending   bool // no check result yet since the health check was configured
	hcOK, hcBad uint32
	checker     *checker
	ejected     bool
	ejections   uint32 // times ejected in a row, decayed lazily (see eject)
	unejectedAt time.Time
	ejectTimer  *time.Timer
	removed     bool
}

// Addr returns the endpoint's address.
func (h *Host) Addr() netip.AddrPort { return h.addr }

// Connected reports that a connection to the host was established; it resets the host's
// run of connect failures.
func (h *Host) Connected() {
	if h.consecutive.Load() != 0 {
		h.consecutive.Store(0)
	}
}

// ConnectFailed reports that connecting to the host failed or timed out. Enough of them in
// a row eject the host when outlier detection is configured.
func (h *Host) ConnectFailed() {
	o := h.cluster.lb.Load().outlier
	if o == nil {
		return
	}
	if h.consecutive.Add(1) >= o.consecutive {
		h.cluster.eject(h)
	}
}

// Release ends the pick: the host and its cluster count one active connection less. Call
// it exactly once per successful Pick, whether or not the connection succeeded.
func (h *Host) Release() {
	h.active.Add(-1)
	h.cluster.active.Add(-1)
}

// Health is what a host's health means for load balancing.
type Health int

const (
	// Healthy hosts take traffic.
	Healthy Health = iota
	// Unhealthy hosts failed active health checks, or have not passed one yet; they take
	// traffic only in panic mode.
	Unhealthy
	// Ejected hosts were ejected by outlier detection; they take traffic only in panic
	// mode.
	Ejected
)

// String returns "healthy", "unhealthy" or "ejected".
func (s Health) String() string {
	switch s {
	case Healthy:
		return "healthy"
	case Unhealthy:
		return "unhealthy"
	case Ejected:
		return "ejected"
	}
	return "unknown"
}

// HostStatus is a snapshot of one host, for config dumps and status reports.
type HostStatus struct {
	Addr   netip.AddrPort
	Weight uint32
	Health Health
	// ActiveConnections counts picks not yet released.
	ActiveConnections int64
	// TimesEjected counts the host's recent ejections (the ejection time multiplier).
	TimesEjected uint32
}

// Name returns the cluster's name.
func (c *Cluster) Name() string { return c.name }

// Panic reports whether the cluster is in panic mode: fewer than its PanicThreshold percent
// of its hosts take traffic, so it balances over all of them.
func (c *Cluster) Panic() bool { return c.lb.Load().panic }

// ActiveConnections returns the number of picks not yet released, the value the circuit
// breaker compares with MaxConnections.
func (c *Cluster) ActiveConnections() int64 { return c.active.Load() }

// Hosts returns the status of every host, in configuration order.
func (c *Cluster) Hosts() []HostStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]HostStatus, len(c.hosts))
	for i, h := range c.hosts {
		st := Healthy
		switch {
		case h.ejected:
			st = Ejected
		case h.hcFailed:
			st = Unhealthy
		}
		out[i] = HostStatus{Addr: h.addr, Weight: h.weight, Health: st, ActiveConnections: h.active.Load(), TimesEjected: h.ejections}
	}
	return out
}

// Pick chooses the host for a new upstream connection: a healthy, non-ejected host (any
// host in panic mode) by the cluster's policy. hash is the client's HashAddr for RingHash
// and Maglev and is ignored otherwise. exclude lists hosts a retry should avoid; they are
// picked only if nothing else is left. Pick returns ErrNoHealthyUpstream if the cluster has
// no hosts, or ErrOverflow if it has MaxConnections active connections. The caller must
// Release the host it gets.
func (c *Cluster) Pick(hash uint64, exclude []netip.AddrPort) (*Host, error) {
	b := c.lb.Load()
	if len(b.hosts) == 0 {
		return nil, ErrNoHealthyUpstream
	}
	if c.active.Add(1) > b.maxConns {
		c.active.Add(-1)
		c.stats.overflow.Inc()
		return nil, ErrOverflow
	}
	var n uint64
	if b.policy == RoundRobin {
		n = c.rr.Add(1) - 1
	}
	h := b.hosts[b.pick(n, hash, exclude)]
	h.active.Add(1)
	return h, nil
}

func newCluster(r *Registry, name string) *Cluster {
	c := &Cluster{
		name:   name,
		reg:    r,
		stats:  r.metrics.cluster(name),
		byAddr: map[netip.AddrPort]*Host{},
	}
	c.lb.Store(&balancer{})
	return c
}

// update reconfigures the cluster with cfg (validated), keeping the hosts whose address
// is still there with their state. New hosts start unhealthy if a health check is
// configured (until their first check, which runs at once), healthy otherwise. A changed
// health check restarts the checkers of kept hosts, which keep their health; a health
// check added to a cluster marks its hosts unhealthy until their first check, as Envoy
// does (panic mode keeps the traffic flowing meanwhile); a removed one marks them healthy.
// Removing outlier detection returns every ejected host.
func (c *Cluster) update(cfg *ClusterConfig) {
	c.mu.Lock()
	defer c.mu.Unlock()
	hc := newHealthCheck(cfg.HealthCheck)
	hcChanged := !hc.equal(c.hc)
	hadHC := c.hc != nil

	hosts := make([]*Host, 0, len(cfg.Endpoints))
	byAddr := make(map[netip.AddrPort]*Host, len(cfg.Endpoints))
	for _, e := range cfg.Endpoints {
		h := c.byAddr[e.Addr]
		if h == nil {
			h = &Host{addr: e.Addr, addrStr: e.Addr.String(), cluster: c}
			h.stats = c.reg.metrics.host(c.name, h.addrStr)
			if hc != nil {
				h.hcFailed, h.hcPending = true, true
			}
		} else if hcChanged {
			c.stopChecker(h)
			switch {
			case hc == nil:
				h.hcFailed, h.hcPending = false, false
			case !hadHC:
				h.hcFailed, h.hcPending = true, true
			}
			h.hcOK, h.hcBad = 0, 0
		}
		h.weight = max(e.Weight, 1)
		hosts = append(hosts, h)
		byAddr[e.Addr] = h
	}
	for addr, h := range c.byAddr {
		if byAddr[addr] == nil {
			c.removeHost(h)
		}
	}
	c.cfg = *cfg
	c.cfg.Endpoints = slices.Clone(cfg.Endpoints)
	c.hc = hc
	c.hosts, c.byAddr = hosts, byAddr
	c.outlier = newOutlier(cfg.Outlier)
	if c.outlier == nil {
		for _, h := range hosts {
			c.unejectLocked(h)
			h.ejections = 0
		}
	}
	if hc != nil {
		for _, h := range hosts {
			if h.checker == nil {
				// A host with no result yet is checked at once; the others (a changed
				// check) at a random point of the first interval, to spread the load.
				var delay time.Duration
				if !h.hcPending {
					delay = rand.N(hc.interval)
				}
				c.startChecker(h, hc, delay)
			}
		}
	}
	c.rebuildLocked()
}

// removeHost stops everything h runs; a connection still holding h may Release it.
func (c *Cluster) removeHost(h *Host) {
	h.removed = true
	c.stopChecker(h)
	if h.ejectTimer != nil {
		h.ejectTimer.Stop()
		h.ejectTimer = nil
	}
	c.reg.metrics.deleteHost(c.name, h.addrStr)
}

// close removes the cluster: its hosts stop their checkers and timers, Pick returns
// ErrNoHealthyUpstream, and its metrics go.
func (c *Cluster) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for _, h := range c.hosts {
		c.removeHost(h)
	}
	c.hosts, c.byAddr = nil, map[netip.AddrPort]*Host{}
	c.lb.Store(&balancer{})
	c.reg.metrics.deleteCluster(c.name)
}

// rebuildLocked publishes a new balancer over the hosts taking traffic (or all hosts in
// panic mode) and updates the membership metrics. c.mu is held.
func (c *Cluster) rebuildLocked() {
	if c.closed {
		return
	}
	up := make([]*Host, 0, len(c.hosts))
	ejected := 0
	for _, h := range c.hosts {
		if !h.hcFailed && !h.ejected {
			up = append(up, h)
		}
		if h.ejected {
			ejected++
		}
		h.stats.healthy.Set(boolFloat(!h.hcFailed && !h.ejected))
	}
	panicMode := len(c.hosts) > 0 && 100*float64(len(up)) < c.cfg.panicThreshold()*float64(len(c.hosts))
	candidates := up
	if panicMode {
		candidates = slices.Clone(c.hosts)
	}
	weights := make([]uint32, len(candidates))
	for i, h := range candidates {
		weights[i] = h.weight
	}
	b := newBalancer(&c.cfg, candidates, weights)
	b.panic = panicMode
	b.maxConns = int64(orDefault(c.cfg.MaxConnections, DefaultMaxConnections))
	b.outlier = c.outlier
	c.lb.Store(b)
	c.stats.healthy.Set(float64(len(up)))
	c.stats.total.Set(float64(len(c.hosts)))
	c.stats.ejectedActive.Set(float64(ejected))
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// eject takes h out of the balancer for n × BaseEjection (n: its ejections in a row),
// unless that would eject more than MaxEjectionPercent of the hosts (one host may always
// be ejected). The ejection count decays by one per outlier Interval spent not ejected,
// which is Envoy's behaviour computed lazily instead of on a timer.
func (c *Cluster) eject(h *Host) {
	c.mu.Lock()
	defer c.mu.Unlock()
	o := c.outlier
	if o == nil || h.removed || h.ejected || c.byAddr[h.addr] != h {
		return
	}
	if h.consecutive.Load() < o.consecutive {
		return // a success came in between
	}
	ejected := 0
	for _, x := range c.hosts {
		if x.ejected {
			ejected++
		}
	}
	if ejected > 0 && 100*uint64(ejected+1) > uint64(o.maxPercent)*uint64(len(c.hosts)) {
		return
	}
	if h.ejections > 0 && !h.unejectedAt.IsZero() {
		decay := uint64(time.Since(h.unejectedAt) / o.interval)
		h.ejections = uint32(uint64(h.ejections) - min(decay, uint64(h.ejections)))
	}
	h.ejections++
	d := min(o.base*time.Duration(h.ejections), o.max)
	h.ejected = true
	h.consecutive.Store(0)
	h.ejectTimer = time.AfterFunc(d, func() { c.uneject(h) })
	h.stats.ejections.Inc()
	c.reg.log.Warn("upstream host ejected", "cluster", c.name, "endpoint", h.addrStr,
		"consecutive_connect_failures", o.consecutive, "ejection_s", d.Seconds(), "times_ejected", h.ejections)
	c.rebuildLocked()
}

// uneject returns h to the balancer when its ejection time is over.
func (c *Cluster) uneject(h *Host) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if h.removed || !h.ejected {
		return
	}
	c.unejectLocked(h)
	c.reg.log.Info("upstream host returned from ejection", "cluster", c.name, "endpoint", h.addrStr)
	c.rebuildLocked()
}

func (c *Cluster) unejectLocked(h *Host) {
	if h.ejectTimer != nil {
		h.ejectTimer.Stop()
		h.ejectTimer = nil
	}
	if h.ejected {
		h.ejected = false
		h.unejectedAt = time.Now()
	}
}

// checker is one host's running health checker.
type checker struct {
	ctx    context.Context
	cancel context.CancelFunc
	c      *Cluster
	h      *Host
	hc     *healthCheck
}

// startChecker starts h's health checker; c.mu is held.
func (c *Cluster) startChecker(h *Host, hc *healthCheck, delay time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	h.checker = &checker{ctx: ctx, cancel: cancel, c: c, h: h, hc: hc}
	c.reg.startChecker(h.checker, delay)
}

// stopChecker stops h's health checker, if it has one; c.mu is held, so no result of the
// stopped checker is applied afterwards.
func (c *Cluster) stopChecker(h *Host) {
	if h.checker != nil {
		h.checker.cancel()
		h.checker = nil
	}
}

// report applies one health check result of chk. A host becomes unhealthy after
// UnhealthyThreshold failures in a row and healthy after HealthyThreshold passes in a row,
// or after its very first check if that passes (Envoy's rule for new hosts).
func (c *Cluster) report(chk *checker, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := chk.h
	if chk.ctx.Err() != nil || h.checker != chk {
		return
	}
	was := h.hcFailed
	if err == nil {
		h.stats.hcSuccess.Inc()
		h.hcBad = 0
		h.hcOK++
		if h.hcFailed && (h.hcPending || h.hcOK >= chk.hc.healthy) {
			h.hcFailed = false
		}
	} else {
		h.stats.hcFailure.Inc()
		h.hcOK = 0
		h.hcBad++
		if !h.hcFailed && h.hcBad >= chk.hc.unhealthy {
			h.hcFailed = true
		}
	}
	h.hcPending = false
	if was == h.hcFailed {
		return
	}
	if h.hcFailed {
		c.reg.log.Warn("upstream host unhealthy", "cluster", c.name, "endpoint", h.addrStr, "error", err)
	} else {
		c.reg.log.Info("upstream host healthy", "cluster", c.name, "endpoint", h.addrStr)
	}
	c.rebuildLocked()
}

// clusterStats are one cluster's metric children.
type clusterStats struct {
	healthy, total, ejectedActive prometheus.Gauge
	overflow                      prometheus.Counter
}

// hostStats are one host's metric children.
type hostStats struct {
	healthy              prometheus.Gauge
	hcSuccess, hcFailure prometheus.Counter
	ejections            prometheus.Counter
}
