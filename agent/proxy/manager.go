// Package proxy is the agent's data plane: it serves the listeners of a runtime.Graph and
// proxies every accepted TCP connection to an endpoint of the listener's cluster.
//
// A connection's life reads top to bottom in this package: acceptLoop → entry.accept →
// conn.serve → conn.preread, which runs the listener filters and chooses the filter chain
// (package match). A listener with listener filters peeks, into a pooled buffer and under
// listener_filters_timeout, the PROXY protocol header (dropped) and the TLS ClientHello
// (kept); a listener without them reads nothing, so protocols in which the server speaks
// first work. Then conn.connect picks an endpoint of the chain's cluster by weighted round
// robin and dials it (retrying on the next endpoints); writePreamble sends the PROXY header
// the cluster wants and the peeked bytes; and two proxyCopy goroutines io.Copy between the
// raw *net.TCPConn values, so splice(2) moves the bytes, with proper half-close. After
// conn.serve returns, nothing touches either connection again.
//
// A configuration change is Manager.Apply: it binds the sockets of new listeners first and
// changes nothing if one fails; then it publishes the new config for each listener with one
// atomic store. A connection keeps the config it was accepted with; listeners whose address
// did not change keep their socket; removed ones stop accepting and drain. State that must
// outlive a change (round-robin positions, counters) lives in a registry keyed by cluster
// name, not in the graph.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flotilla-proxy/flotilla/agent/runtime"
)

// DefaultDrainTimeout is how long connections of a removed listener may run on when
// Options.DrainTimeout is 0.
const DefaultDrainTimeout = 30 * time.Second

// Options configure a Manager. The zero value is ready to use.
type Options struct {
	// DrainTimeout bounds how long the connections of a removed (or re-addressed) listener
	// may run on after it stops accepting; then they are closed. 0 means 30s.
	DrainTimeout time.Duration
	// Logger receives listener changes at Info and one line per connection at Debug.
	// nil means slog.Default().
	Logger *slog.Logger
	// Registerer receives the data plane's metrics (namespace flotilla_agent). nil means
	// the metrics are kept but not registered anywhere.
	Registerer prometheus.Registerer
}

func (o Options) drainTimeout() time.Duration {
	if o.DrainTimeout <= 0 {
		return DefaultDrainTimeout
	}
	return o.DrainTimeout
}

func (o Options) logger() *slog.Logger {
	if o.Logger == nil {
		return slog.Default()
	}
	return o.Logger
}

// Manager runs the listeners of the current graph. Its methods are safe for concurrent
// use; Apply and Shutdown are serialised internally.
type Manager struct {
	log     *slog.Logger
	drain   time.Duration
	metrics *metrics

	mu       sync.Mutex // serialises Apply and Shutdown; guards the fields below
	entries  map[string]*entry
	clusters map[string]*clusterState // by cluster name; survives graph changes
	closed   bool

	drainMu  sync.Mutex
	draining map[*entry]struct{} // retired entries whose connections are still open

	sockets sync.WaitGroup // accept loops
	conns   sync.WaitGroup // connections being served
}

// NewManager returns a Manager serving no listeners; call Apply to start some.
func NewManager(opts Options) *Manager {
	log := opts.logger()
	return &Manager{
		log:      log,
		drain:    opts.drainTimeout(),
		metrics:  newMetrics(opts.Registerer, log),
		entries:  map[string]*entry{},
		clusters: map[string]*clusterState{},
		draining: map[*entry]struct{}{},
	}
}

// errClosed is returned by Apply after Shutdown.
var errClosed = errors.New("proxy: manager is shut down")

// Apply reconciles the running listeners with g, by listener name:
//   - a listener whose address is unchanged keeps its socket; new connections get the new
//     config, established ones keep theirs;
//   - a new listener, or one whose address changed, gets a new socket (or takes over the
//     socket of a listener being removed at exactly that address); the old socket stops
//     accepting and its connections drain;
//   - a removed listener stops accepting; its connections may run on for the drain timeout,
//     then they are closed.
//
// Apply binds every new socket before it changes anything. If a bind fails it closes the
// sockets it just bound and returns a *runtime.ResourceError naming the listener (type URL
// resourcev3.ListenerType); the running listeners are untouched.
func (m *Manager) Apply(g *runtime.Graph) error {
	if g == nil {
		return errors.New("proxy: nil graph")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errClosed
	}

	// Plan: which entries keep their socket, which retire.
	keep := map[string]*entry{}
	var retire []*entry
	for name, e := range m.entries {
		if l := g.Listener(name); l != nil && sameSocket(e.listener(), l) {
			keep[name] = e
		} else {
			retire = append(retire, e)
		}
	}
	// A retiring socket may serve a new listener at the very same address (a listener
	// renamed, or two listeners swapping addresses); binding again would fail.
	spare := map[string]*entry{}
	for _, e := range retire {
		if l := e.listener(); l.Addr().Port() != 0 {
			spare[socketKey(l)] = e
		}
	}

	// Bind: the only step that can fail.
	type pending struct {
		l     *runtime.Listener
		sock  *socket
		fresh bool // bound by this Apply (else taken over from a retiring entry)
	}
	var add []pending
	for _, l := range g.Listeners() {
		if keep[l.Name()] != nil {
			continue
		}
		if e := spare[socketKey(l)]; e != nil {
			delete(spare, socketKey(l))
			add = append(add, pending{l: l, sock: e.sock})
			continue
		}
		ln, err := listen(l)
		if err != nil {
			for _, p := range add {
				if p.fresh {
					p.sock.ln.Close()
				}
			}
			return &runtime.ResourceError{TypeURL: resourcev3.ListenerType, Name: l.Name(), Err: err}
		}
		add = append(add, pending{l: l, sock: &socket{ln: ln}, fresh: true})
	}

	// Commit: nothing below can fail.
	clusters := make(map[string]*clusterState, len(g.Clusters()))
	for _, c := range g.Clusters() {
		cs := m.clusters[c.Name()]
		if cs == nil {
			cs = &clusterState{name: c.Name(), stats: m.metrics.cluster(c.Name())}
		}
		clusters[c.Name()] = cs
	}
	m.clusters = clusters
	entries := make(map[string]*entry, len(keep)+len(add))
	for name, e := range keep {
		l := g.Listener(name)
		e.route.Store(&route{listener: l, clusters: clusters})
		entries[name] = e
	}
	handedOver := map[*socket]bool{}
	for _, p := range add {
		e := m.newEntry(p.l, p.sock, clusters)
		entries[p.l.Name()] = e
		p.sock.owner.Store(e)
		if p.fresh {
			m.sockets.Add(1)
			go m.acceptLoop(p.sock)
		} else {
			handedOver[p.sock] = true
		}
		m.log.Info("listener started", "listener", p.l.Name(), "address", p.sock.ln.Addr().String(),
			"clusters", clusterNames(p.l), "filter_chains", len(p.l.Chains()))
	}
	for _, e := range retire {
		if !handedOver[e.sock] {
			e.sock.ln.Close()
		}
		m.retire(e, m.drain)
		m.log.Info("listener stopped, draining", "listener", e.name, "address", e.sock.ln.Addr().String(),
			"drain_timeout_s", m.drain.Seconds())
	}
	m.entries = entries
	warnIdleUnsupported(m.log, g)
	return nil
}

// Addr returns the bound address of a listener by name (tests bind port 0), nil if none.
func (m *Manager) Addr(listener string) net.Addr {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.entries[listener]; e != nil {
		return e.sock.ln.Addr()
	}
	return nil
}

// Shutdown stops accepting on every listener, waits for connections to finish until ctx is
// done, then closes those still open and waits for them to wind down. It returns nil when
// every connection finished on its own, else ctx's error. Apply fails after Shutdown.
func (m *Manager) Shutdown(ctx context.Context) error {
	m.mu.Lock()
	m.closed = true
	for _, e := range m.entries {
		e.sock.ln.Close()
		m.retire(e, 0) // no deadline of its own: ctx is the deadline
	}
	m.entries = map[string]*entry{}
	m.mu.Unlock()

	m.sockets.Wait() // no new connections from here on
	done := make(chan struct{})
	go func() {
		m.conns.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	m.drainMu.Lock()
	left := make([]*entry, 0, len(m.draining))
	for e := range m.draining {
		left = append(left, e)
	}
	m.drainMu.Unlock()
	n := 0
	for _, e := range left {
		n += e.closeAll("shutdown")
	}
	m.log.Info("shutdown deadline passed, closed open connections", "connections", n)
	<-done // closed sockets end every copy and cancel every dial at once
	return fmt.Errorf("proxy: shutdown: %w", ctx.Err())
}

// retire stops e from taking connections (its socket is closed or handed over) and lets its
// connections run on for at most timeout (0: until Shutdown's deadline).
func (m *Manager) retire(e *entry, timeout time.Duration) {
	m.drainMu.Lock()
	m.draining[e] = struct{}{}
	m.drainMu.Unlock()
	if e.retire(timeout) {
		m.drained(e)
	}
}

// drained forgets a retired entry whose last connection has ended.
func (m *Manager) drained(e *entry) {
	m.drainMu.Lock()
	delete(m.draining, e)
	m.drainMu.Unlock()
}

// clusterNames lists the clusters a listener sends to, for logs.
func clusterNames(l *runtime.Listener) []string {
	var names []string
	for _, c := range l.Clusters() {
		names = append(names, c.Name())
	}
	return names
}

// sameSocket reports whether listener b can be served by the socket bound for a.
func sameSocket(a, b *runtime.Listener) bool {
	return a.Addr() == b.Addr() && a.V6Only() == b.V6Only()
}

// socketKey identifies a socket by what it was bound to.
func socketKey(l *runtime.Listener) string {
	return fmt.Sprintf("%s v6only=%t", l.Addr(), l.V6Only())
}

// clusterState is what the data plane keeps about a cluster across graph changes.
type clusterState struct {
	name  string
	next  atomic.Uint64 // position in the cluster's weighted round-robin sequence
	stats clusterStats
}
