package httpproxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flotilla-proxy/flotilla/agent/tlsconf"
	"github.com/flotilla-proxy/flotilla/agent/upstream"
)

// Cluster is what the HTTP engine needs of a cluster besides what package upstream keeps
// (endpoints, health, balancing): how to speak HTTP to its endpoints.
type Cluster struct {
	// Name is the cluster's name: its identity across updates, and its stats label.
	Name string
	// ConnectTimeout bounds one connection attempt; 0 means 5s.
	ConnectTimeout time.Duration
	// TLS, when not nil, originates TLS to the endpoints (https upstream).
	TLS *tlsconf.Client
	// HTTP2 speaks HTTP/2 to the endpoints: h2c with prior knowledge in the clear, h2 by
	// ALPN over TLS. Needed for gRPC.
	HTTP2 bool
	// IdleTimeout closes a pooled keep-alive connection unused for this long; 0 means no
	// limit. (Package runtime defaults it to Envoy's 1h.)
	IdleTimeout time.Duration
	// RetryBudgetPercent and RetryBudgetMinConcurrency are the circuit breaker's
	// retry_budget: the requests being retried may be at most max(min concurrency,
	// percent × active requests); 0 means Envoy's 20% and 3.
	RetryBudgetPercent        float64
	RetryBudgetMinConcurrency int
}

// Defaults of Cluster.
const (
	DefaultConnectTimeout     = 5 * time.Second
	DefaultRetryBudgetPercent = 20
	DefaultRetryMinConcurrent = 3
	// MaxIdleConnsPerEndpoint bounds the idle keep-alive connections kept per endpoint.
	MaxIdleConnsPerEndpoint = 1024
)

// retiredSweep is how often a replaced pool closes its idle connections while requests it
// carried are still going: connections in use (long HTTP/2 streams, server-sent events)
// come back to it when they end, and nothing else would close them before its idle
// timeout, if ever.
const retiredSweep = time.Second

// Upstreams holds the HTTP side of every cluster: one keep-alive pool (http.Transport) per
// cluster, with a connection pool per endpoint inside it, the retry budget's counters and
// the cluster's request stats. Pools and counters survive updates that do not change how
// the cluster speaks HTTP. Shared by the Servers of a Manager; safe for concurrent use.
type Upstreams struct {
	reg     *upstream.Registry
	metrics *Metrics
	stop    chan struct{} // ends the janitor
	once    sync.Once

	mu       sync.Mutex
	clusters atomic.Pointer[map[string]*clusterHTTP]
}

// clusterHTTP is one cluster's pool, budget counters and stats.
type clusterHTTP struct {
	given     Cluster // as Update got it, for comparison
	cfg       Cluster // with the defaults filled in
	scheme    string
	transport *http.Transport
	h1        *h1Pool                        // the fast path of plain HTTP/1.1 clusters; nil for TLS and HTTP/2
	tls       atomic.Pointer[tlsconf.Client] // the latest TLS client, for new connections
	stats     clusterStats

	activeRq      atomic.Int64 // requests being forwarded to the cluster
	activeRetries atomic.Int64 // retries in flight
	retired       atomic.Bool  // replaced by an update: keeps no connection
}

// NewUpstreams returns the pools of no cluster; reg picks the endpoints. m may be nil.
func NewUpstreams(reg *upstream.Registry, m *Metrics) *Upstreams {
	if m == nil {
		m = NewMetrics(nil, nil)
	}
	u := &Upstreams{reg: reg, metrics: m, stop: make(chan struct{})}
	u.clusters.Store(&map[string]*clusterHTTP{})
	go u.janitor()
	return u
}

// janitorInterval is how often idle fast-path connections past their idle timeout, or to
// endpoints no longer in their cluster, close.
const janitorInterval = 30 * time.Second

// janitor sweeps the fast path's idle connections until Close.
func (u *Upstreams) janitor() {
	t := time.NewTicker(janitorInterval)
	defer t.Stop()
	for {
		select {
		case <-u.stop:
			return
		case <-t.C:
			u.sweep()
		}
	}
}

// Update installs the whole set of clusters. A cluster whose HTTP settings did not change
// keeps its pool; the pools of changed and removed clusters close their idle connections
// (connections in use finish their request first).
func (u *Upstreams) Update(cs []Cluster) {
	u.mu.Lock()
	defer u.mu.Unlock()
	old := *u.clusters.Load()
	next := make(map[string]*clusterHTTP, len(cs))
	for _, c := range cs {
		if o := old[c.Name]; o != nil && sameSettings(o.given, c) {
			// Package runtime builds a new TLS client on every update: new connections
			// take it, pooled ones are kept.
			o.tls.Store(c.TLS)
			next[c.Name] = o
			continue
		}
		next[c.Name] = u.newCluster(c)
	}
	u.clusters.Store(&next)
	for name, o := range old {
		if next[name] != o {
			o.retire(u.stop)
		}
	}
}

// retire makes a replaced cluster's pools keep no connection: idle ones close now, and
// those still in use as they come back. The fast path's pool closes what comes back
// itself; for the http.Transport (whose HTTP/2 connections stay open once their last
// stream ends), the last request to end closes the idle connections, and so does a sweep
// every retiredSweep until the requests have ended and one sweep after (for a connection
// that goes idle just after its request returned). stop ends the sweeps early.
func (c *clusterHTTP) retire(stop <-chan struct{}) {
	c.retired.Store(true)
	c.transport.CloseIdleConnections()
	if c.h1 != nil {
		c.h1.close()
	}
	go c.drain(stop)
}

// drain is retire's sweep.
func (c *clusterHTTP) drain(stop <-chan struct{}) {
	t := time.NewTicker(retiredSweep)
	defer t.Stop()
	wasIdle := false
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		c.transport.CloseIdleConnections()
		idle := c.activeRq.Load() == 0
		if idle && wasIdle {
			return
		}
		wasIdle = idle
	}
}

// requestStarted and requestDone count a request forwarded to the cluster; when the last
// request of a retired cluster ends, its connections close.
func (c *clusterHTTP) requestStarted() { c.activeRq.Add(1) }

func (c *clusterHTTP) requestDone() {
	if c.activeRq.Add(-1) == 0 && c.retired.Load() {
		c.transport.CloseIdleConnections()
	}
}

// sweep closes the fast path's idle connections that are past their idle timeout or go
// to endpoints their cluster no longer has.
func (u *Upstreams) sweep() {
	for name, c := range *u.clusters.Load() {
		if c.h1 == nil {
			continue
		}
		var current map[netip.AddrPort]bool
		if ucl := u.reg.Cluster(name); ucl != nil {
			hosts := ucl.Hosts()
			current = make(map[netip.AddrPort]bool, len(hosts))
			for _, h := range hosts {
				current[h.Addr] = true
			}
		}
		c.h1.closeIdle(true, current)
	}
}

// sameSettings reports whether a and b speak HTTP the same way, TLS clients aside as long
// as both or neither have one.
func sameSettings(a, b Cluster) bool {
	if (a.TLS == nil) != (b.TLS == nil) {
		return false
	}
	a.TLS, b.TLS = nil, nil
	return a == b
}

// Close closes every idle pooled connection, and stops the pools' janitor.
func (u *Upstreams) Close() {
	u.once.Do(func() { close(u.stop) })
	for _, c := range *u.clusters.Load() {
		c.transport.CloseIdleConnections()
		if c.h1 != nil {
			c.h1.close()
		}
	}
}

func (u *Upstreams) cluster(name string) *clusterHTTP { return (*u.clusters.Load())[name] }

func (u *Upstreams) newCluster(c Cluster) *clusterHTTP {
	given := c
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.RetryBudgetPercent <= 0 {
		c.RetryBudgetPercent = DefaultRetryBudgetPercent
	}
	if c.RetryBudgetMinConcurrency <= 0 {
		c.RetryBudgetMinConcurrency = DefaultRetryMinConcurrent
	}
	ch := &clusterHTTP{given: given, cfg: c, stats: u.metrics.cluster(c.Name)}
	d := &net.Dialer{Timeout: c.ConnectTimeout, KeepAlive: 30 * time.Second}
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, &connectError{err: err}
		}
		return nc, nil
	}
	t := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			nc, err := dial(ctx, network, addr)
			if err != nil || c.HTTP2 {
				return nc, err
			}
			return &earlyConn{Conn: nc}, nil // under TLS too: see earlyConn
		},
		MaxIdleConnsPerHost:   MaxIdleConnsPerEndpoint,
		IdleConnTimeout:       c.IdleTimeout,
		DisableCompression:    true, // Accept-Encoding is the client's business
		ExpectContinueTimeout: time.Second,
		WriteBufferSize:       32 << 10,
		ReadBufferSize:        32 << 10,
	}
	var (
		p  http.Protocols
		h1 *h1Pool
	)
	scheme := "http"
	switch {
	case c.TLS != nil:
		scheme = "https"
		alpn := []string{"http/1.1"}
		if c.HTTP2 {
			p.SetHTTP2(true)
			alpn = []string{"h2"}
		} else {
			p.SetHTTP1(true)
		}
		t.TLSHandshakeTimeout = c.ConnectTimeout
		t.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			nc, err := t.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			client := ch.tls.Load()
			cfg := client.Config(client.SNI()).Clone() // shared with the L4 path: never modify it
			cfg.NextProtos = alpn
			tc := tls.Client(nc, cfg)
			hctx, cancel := context.WithTimeout(ctx, c.ConnectTimeout)
			defer cancel()
			if err := tc.HandshakeContext(hctx); err != nil {
				nc.Close()
				return nil, &connectError{err: fmt.Errorf("TLS handshake: %w", err)}
			}
			return tc, nil
		}
	case c.HTTP2:
		p.SetUnencryptedHTTP2(true)
	default:
		p.SetHTTP1(true)
		h1 = newH1Pool(dial, c.IdleTimeout)
	}
	t.Protocols = &p
	if c.HTTP2 {
		t.HTTP2 = &http.HTTP2Config{
			MaxConcurrentStreams: 1000,
			SendPingTimeout:      15 * time.Second,
			PingTimeout:          15 * time.Second,
		}
	}
	ch.scheme, ch.transport, ch.h1 = scheme, t, h1
	ch.tls.Store(c.TLS)
	return ch
}

// retryAllowed reports whether the retry budget lets one more retry start, and counts it.
// The caller calls retryDone when it ends.
func (c *clusterHTTP) retryAllowed() bool {
	limit := max(int64(c.cfg.RetryBudgetMinConcurrency), int64(c.cfg.RetryBudgetPercent*float64(c.activeRq.Load())/100))
	if c.activeRetries.Add(1) > limit {
		c.activeRetries.Add(-1)
		return false
	}
	return true
}

func (c *clusterHTTP) retryDone() { c.activeRetries.Add(-1) }

// connectError is a failure to connect to (or handshake with) an endpoint: the request
// never reached it, so a retry is always safe.
type connectError struct{ err error }

func (e *connectError) Error() string { return "upstream connect error: " + e.err.Error() }
func (e *connectError) Unwrap() error { return e.err }
