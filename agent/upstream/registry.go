package upstream

import (
	"log/slog"
	"maps"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Registry holds the live state of every cluster: health, ejections, active connection
// counts, round-robin positions. It survives configuration updates: the state of an
// endpoint whose cluster and address did not change is kept; the health checkers of
// removed endpoints stop. All methods are safe for concurrent use.
type Registry struct {
	log     *slog.Logger
	metrics *metrics
	http    *http.Client // health checks; no keep-alive, so no idle goroutines

	clusters atomic.Pointer[map[string]*Cluster]

	mu     sync.Mutex // serialises Update and Close
	closed bool

	checkers    sync.WaitGroup // running health-check goroutines
	numCheckers atomic.Int64   // the same, readable: tests wait for it
}

// NewRegistry returns an empty Registry. log receives health transitions and ejections
// (nil means slog.Default()); reg receives the metrics (nil: kept but not registered).
func NewRegistry(log *slog.Logger, reg prometheus.Registerer) *Registry {
	if log == nil {
		log = slog.Default()
	}
	r := &Registry{
		log:     log,
		metrics: newMetrics(reg, log),
		http: &http.Client{
			Transport: &http.Transport{
				Proxy:             nil, // health checks go to the endpoint, never through a proxy
				DialContext:       (&net.Dialer{}).DialContext,
				DisableKeepAlives: true,
			},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	r.clusters.Store(&map[string]*Cluster{})
	return r
}

// Update installs cfgs, the whole set of clusters, at once: new clusters are created,
// existing ones (by name) are reconfigured keeping the state of their unchanged
// endpoints, clusters not in cfgs are removed and their health checkers stopped. A config
// that fails Validate is logged and skipped: the cluster of that name keeps its previous
// configuration, if it had one. Update after Close does nothing.
func (r *Registry) Update(cfgs []ClusterConfig) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	old := *r.clusters.Load()
	next := make(map[string]*Cluster, len(cfgs))
	for i := range cfgs {
		cfg := &cfgs[i]
		if err := cfg.Validate(); err != nil {
			r.log.Error("invalid cluster config ignored", "error", err)
			if c := old[cfg.Name]; c != nil {
				next[cfg.Name] = c
			}
			continue
		}
		c := next[cfg.Name]
		if c == nil {
			c = old[cfg.Name]
		}
		if c == nil {
			c = newCluster(r, cfg.Name)
		}
		c.update(cfg)
		next[cfg.Name] = c
	}
	for name, c := range old {
		if next[name] != c {
			c.close()
		}
	}
	r.clusters.Store(&next)
}

// Cluster returns the cluster of that name, or nil if it is not configured. The pointer
// stays valid, and keeps its state, for as long as the cluster stays in the configured
// set; once removed, its Pick returns ErrNoHealthyUpstream.
func (r *Registry) Cluster(name string) *Cluster {
	return (*r.clusters.Load())[name]
}

// Clusters returns the configured clusters' names and clusters, as a fresh map.
func (r *Registry) Clusters() map[string]*Cluster {
	return maps.Clone(*r.clusters.Load())
}

// Close stops every health checker and ejection timer and waits for the checkers to
// return. Hosts already picked may still be released. Update after Close does nothing.
func (r *Registry) Close() {
	r.mu.Lock()
	if !r.closed {
		r.closed = true
		for _, c := range *r.clusters.Load() {
			c.close()
		}
		r.clusters.Store(&map[string]*Cluster{})
	}
	r.mu.Unlock()
	r.checkers.Wait()
}

// startChecker runs a health checker for h until ctx is cancelled.
func (r *Registry) startChecker(chk *checker, delay time.Duration) {
	r.checkers.Add(1)
	r.numCheckers.Add(1)
	go runHealthCheck(chk, delay)
}

// checkerDone is called by every checker goroutine as it returns.
func (r *Registry) checkerDone() {
	r.numCheckers.Add(-1)
	r.checkers.Done()
}
