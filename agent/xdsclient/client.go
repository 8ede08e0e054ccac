// Package xdsclient is the agent's side of the xDS conversation: a
// state-of-the-world ADS client that keeps one stream open to one of several
// control planes, subscribes to clusters and listeners (wildcard) and to the
// endpoints those clusters need, and turns what it receives into complete,
// consistent resource sets for an Applier.
//
// Endpoints (EDS), secrets (SDS) and route configurations (RDS) are
// subscribed to by name, like Envoy does over ADS: the names the candidate
// config refers to (EDS service names of its clusters; the SDS secrets of its
// TLS filter chains and clusters; the route_config_name of its listeners'
// http_connection_managers). The subscription follows every LDS and CDS
// change, so an RDS request goes out once the listener naming it arrived. A name a response leaves
// out keeps what runs for it; names no longer referred to are dropped.
// Secrets carry private keys: the client logs their names only, never their
// content.
//
// Every response is decoded and checked on its own first; a bad one is NACKed
// at once. Statically valid responses wait in a pending area until, overlaid
// on the running config, they form a consistent set (nothing referenced is
// missing). That set is applied as a whole; only then are the types it
// contains ACKed. A failed apply NACKs the type at fault and leaves the
// running config untouched. The running config survives reconnects: a new
// stream asks for a full push and the old config keeps serving meanwhile.
//
// Two guards keep a misbehaving exchange from wedging or spinning. A pending
// set that stays inconsistent for Options.HoldTimeout is given up type by type
// (listeners first, then route configurations) with a NACK, because a control plane sends nothing new for
// a type until its last response is answered. And a NACK that repeats the
// previous one word for word (a control plane resending a version it was told
// is bad) goes out after a delay growing from 0.5s to 10s.
//
// Metrics (when Options.Registerer is set):
//
//	flotilla_agent_xds_connected                     1 while a stream is open
//	flotilla_agent_xds_updates_total{type,result}    responses answered; type cds|eds|sds|lds|rds, result ack|nack
package xdsclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"

	"github.com/flotilla-proxy/flotilla/agent/backoff"
	"github.com/flotilla-proxy/flotilla/agent/runtime"
)

// Applier installs what the client hands it. The client calls it from one
// goroutine at a time, never concurrently.
type Applier interface {
	// Apply installs a complete, consistent set. versions maps type URL → version_info.
	Apply(ctx context.Context, set *runtime.Resources, versions map[string]string) error
}

// ApplierFunc adapts a function to the Applier interface.
type ApplierFunc func(ctx context.Context, set *runtime.Resources, versions map[string]string) error

// Apply calls f.
func (f ApplierFunc) Apply(ctx context.Context, set *runtime.Resources, versions map[string]string) error {
	return f(ctx, set, versions)
}

var _ Applier = ApplierFunc(nil)

// Options configure a Client. Servers, NodeID and Applier are required.
type Options struct {
	// Servers are the control-plane addresses (host:port). The client talks
	// to one at a time and moves on to the next after a failed stream.
	Servers []string
	// NodeID is the xDS node id.
	NodeID string
	// Labels go into the node metadata as {"labels": {...}}; the control
	// plane groups agents by them.
	Labels map[string]string
	// UserAgentVersion is sent as the node's user_agent_version.
	UserAgentVersion string
	// Applier installs consistent sets.
	Applier Applier
	// Credentials secure the gRPC connection; nil means plaintext.
	Credentials credentials.TransportCredentials
	// HoldTimeout bounds how long a statically valid but inconsistent update
	// (say, a listener naming a cluster that never arrives) is held before it
	// is NACKed. Holding the ACK also holds the control plane's next push of
	// that type, so holding forever could wedge the agent. Zero means 15s.
	HoldTimeout time.Duration
	// Registerer receives the client's metrics; nil means they are not
	// registered anywhere.
	Registerer prometheus.Registerer
	// Logger receives connect/disconnect and ACK/NACK lines; nil means slog.Default().
	Logger *slog.Logger
}

func (o *Options) holdTimeout() time.Duration {
	if o.HoldTimeout > 0 {
		return o.HoldTimeout
	}
	return 15 * time.Second
}

func (o *Options) logger() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.Default()
}

// Status is a copy of the client's state, for the admin page.
type Status struct {
	// Server is the control plane of the current stream, or of the last one
	// tried when not connected.
	Server string
	// Connected reports whether a stream is open.
	Connected bool
	// Types holds one entry per supported type URL.
	Types map[string]TypeStatus
}

// TypeStatus is what the client knows about one resource type.
type TypeStatus struct {
	// Version is the running (last accepted) version_info; empty if none.
	Version string
	// LastNACK is the most recent rejection of this type, or nil.
	LastNACK *NACK
}

// NACK records one rejected response.
type NACK struct {
	// Version is the version_info of the rejected response.
	Version string
	// Message is the error_detail message sent to the control plane.
	Message string
	// Time is when the NACK was sent.
	Time time.Time
}

// Client is an ADS client. Create it with New, optionally record an already
// running config with SetRunning, then call Run once. Status may be called
// from any goroutine at any time.
type Client struct {
	opts    Options
	log     *slog.Logger
	metrics *metrics

	// mu guards the fields below. They are written only by the goroutine
	// running Run (and by SetRunning before it), read by Status.
	mu        sync.Mutex
	running   map[string]*typeState // by type URL; present once the type was applied
	nacks     map[string]NACK
	server    string
	connected bool
}

// typeState is the running resources of one type and their version.
type typeState struct {
	version string
	items   map[string]proto.Message
}

// New checks opts and returns a client that is not yet connected.
func New(opts Options) (*Client, error) {
	switch {
	case len(opts.Servers) == 0:
		return nil, errors.New("xdsclient: no control-plane address")
	case opts.NodeID == "":
		return nil, errors.New("xdsclient: node id is empty")
	case opts.Applier == nil:
		return nil, errors.New("xdsclient: no applier")
	}
	for _, s := range opts.Servers {
		if s == "" {
			return nil, errors.New("xdsclient: empty control-plane address")
		}
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("xdsclient: %w", err)
	}
	opts.Servers = append([]string(nil), opts.Servers...)
	opts.Labels = maps.Clone(opts.Labels)
	return &Client{
		opts:    opts,
		log:     opts.logger(),
		metrics: m,
		running: make(map[string]*typeState),
		nacks:   make(map[string]NACK),
	}, nil
}

// SetRunning records a config that already runs, installed outside the client
// (the agent's last good snapshot from disk), so that updates are overlaid on
// it and its endpoints are subscribed to from the first request. Call it
// before Run. versions maps type URL → version_info; types without a version
// are left unknown.
func (c *Client) SetRunning(set *runtime.Resources, versions map[string]string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range Types {
		if v, ok := versions[t]; ok {
			c.running[t] = &typeState{version: v, items: Get(set, t)}
		}
	}
}

// Status returns a copy of the client's current state.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := Status{Server: c.server, Connected: c.connected, Types: make(map[string]TypeStatus, len(Types))}
	for _, t := range Types {
		var ts TypeStatus
		if r := c.running[t]; r != nil {
			ts.Version = r.version
		}
		if n, ok := c.nacks[t]; ok {
			ts.LastNACK = &n
		}
		st.Types[t] = ts
	}
	return st
}

// Run keeps a stream open to one of the servers until ctx is done, then
// returns nil. A failed stream is retried on the next server after an
// exponential backoff with full jitter (250ms doubling to 30s), which starts
// over after a stream that lived more than 30s or received a response.
func (c *Client) Run(ctx context.Context) error {
	b := backoff.Backoff{Min: 250 * time.Millisecond, Max: 30 * time.Second}
	for i := 0; ; i++ {
		addr := c.opts.Servers[i%len(c.opts.Servers)]
		c.setConnected(addr, false)
		start := time.Now()
		connected, progressed, err := c.runStream(ctx, addr)
		if ctx.Err() != nil {
			return nil
		}
		if progressed || time.Since(start) > 30*time.Second {
			b.Reset()
		}
		wait := b.Next()
		if connected {
			c.log.Warn("disconnected from control plane", "address", addr, "error", err, "retry_in_seconds", wait.Seconds())
		} else {
			c.log.Warn("cannot reach control plane", "address", addr, "error", err, "retry_in_seconds", wait.Seconds())
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

func (c *Client) setConnected(addr string, connected bool) {
	c.mu.Lock()
	c.server, c.connected = addr, connected
	c.mu.Unlock()
	if connected {
		c.metrics.connected.Set(1)
	} else {
		c.metrics.connected.Set(0)
	}
}

// runningState returns the running state of typeURL, or nil. Only the Run
// goroutine writes it, so it may read without copying.
func (c *Client) runningState(typeURL string) *typeState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.running[typeURL]
}

func (c *Client) commitRunning(states map[string]*typeState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	maps.Copy(c.running, states)
}

func (c *Client) lastNACK(typeURL string) (NACK, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.nacks[typeURL]
	return n, ok
}

func (c *Client) recordNACK(typeURL string, n NACK) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nacks[typeURL] = n
}

// metrics are the client's Prometheus series.
type metrics struct {
	connected prometheus.Gauge
	updates   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "flotilla", Subsystem: "agent_xds", Name: "connected",
			Help: "1 while an ADS stream to a control plane is open, else 0.",
		}),
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "flotilla", Subsystem: "agent_xds", Name: "updates_total",
			Help: "xDS responses answered, by type (cds, eds, sds, lds, rds) and result (ack, nack).",
		}, []string{"type", "result"}),
	}
	for _, t := range Types {
		for _, r := range []string{"ack", "nack"} {
			m.updates.WithLabelValues(ShortName(t), r)
		}
	}
	if reg == nil {
		return m, nil
	}
	for _, col := range []prometheus.Collector{m.connected, m.updates} {
		if err := reg.Register(col); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return m, nil
}
