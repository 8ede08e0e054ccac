// Package proxy is the agent's data plane: it serves the listeners of a runtime.Graph and
// proxies every accepted TCP connection (and, on UDP listeners, every client's datagrams,
// through package udpproxy) to an endpoint of the listener's cluster, writing one access log
// line per connection or session when the listener has an access log.
//
// A connection's life reads top to bottom in this package: acceptLoop → entry.accept (the
// listener's connection_limit) → conn.serve → conn.preread, which runs the listener filters
// and chooses the filter chain (package match). A listener with listener filters peeks, into a pooled buffer and under
// listener_filters_timeout, the PROXY protocol header (dropped) and the TLS ClientHello
// (kept); a listener without them reads nothing, so protocols in which the server speaks
// first work. Then conn.connect picks an endpoint of the chain's cluster through package
// upstream (load-balancing policy, health checks, outlier ejection, circuit breaker) and
// dials it (retrying on endpoints not tried yet); writePreamble sends the PROXY header
// the cluster wants and the peeked bytes; and two proxyCopy goroutines io.Copy between the
// raw *net.TCPConn values, so splice(2) moves the bytes, with proper half-close. After
// conn.serve returns, nothing touches either connection again; logEnd writes its access log
// line.
//
// HTTP (http.go) branches off after the chain is chosen: a chain with an
// http_connection_manager hands the connection (after TLS termination) to package
// httpproxy, which routes and proxies each request.
//
// TLS (tls.go) branches off that path: a chain with a TLS server config terminates TLS after
// the chain is chosen (conn.terminate, replaying the peeked ClientHello), a cluster with a
// TLS client config originates it after the dial and its PROXY header (conn.originate), and
// such connections are copied by proxyCopyBuffered through pooled buffers, since splice
// cannot see through TLS.
//
// A configuration change is Manager.Apply: it binds the sockets of new listeners and opens
// new access log files first and changes nothing if one fails; then it publishes the new config for each listener with one
// atomic store. A connection keeps the config it was accepted with; listeners whose address
// did not change keep their socket; removed ones stop accepting and drain. State that must
// outlive a change (health, ejections, balancer positions, counters) lives in registries
// keyed by cluster name (package upstream for endpoints), not in the graph.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flotilla-proxy/flotilla/agent/httpproxy"
	"github.com/flotilla-proxy/flotilla/agent/runtime"
	"github.com/flotilla-proxy/flotilla/agent/udpproxy"
	"github.com/flotilla-proxy/flotilla/agent/upstream"
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
	up      *upstream.Registry // endpoint state, outlives graphs; closed by Shutdown
	http    httpState          // HTTP listeners' servers and the clusters' HTTP pools (http.go)

	mu       sync.Mutex               // serialises Apply and Shutdown; guards the fields below
	entries  map[string]*entry        // TCP listeners
	udp      map[string]*udpEntry     // UDP listeners
	clusters map[string]*clusterState // by cluster name; survives graph changes
	closed   bool

	logs       *logSet       // access log files by path
	udpMetrics *udpCollector // counters of the UDP listeners
	udpDrains  sync.WaitGroup
	stopCtx    context.Context // cancelled by Shutdown: cuts the drains of retired UDP listeners
	stop       context.CancelFunc

	drainMu  sync.Mutex
	draining map[*entry]struct{} // retired entries whose connections are still open

	sockets sync.WaitGroup // accept loops
	conns   sync.WaitGroup // connections being served
}

// NewManager returns a Manager serving no listeners; call Apply to start some.
func NewManager(opts Options) *Manager {
	log := opts.logger()
	m := &Manager{
		log:        log,
		drain:      opts.drainTimeout(),
		metrics:    newMetrics(opts.Registerer, log),
		up:         upstream.NewRegistry(log, opts.Registerer),
		entries:    map[string]*entry{},
		udp:        map[string]*udpEntry{},
		clusters:   map[string]*clusterState{},
		draining:   map[*entry]struct{}{},
		logs:       newLogSet(log, opts.drainTimeout()),
		udpMetrics: &udpCollector{},
	}
	m.http.metrics = httpproxy.NewMetrics(opts.Registerer, log)
	m.http.ups = httpproxy.NewUpstreams(m.up, m.http.metrics)
	m.stopCtx, m.stop = context.WithCancel(context.Background())
	registerCollector(opts.Registerer, log, m.udpMetrics)
	return m
}

// errClosed is returned by Apply after Shutdown.
var errClosed = errors.New("proxy: manager is shut down")

// Apply reconciles the running listeners with g, by listener name:
//   - a listener whose address is unchanged keeps its socket; new connections (UDP: new
//     sessions) get the new config, established ones keep theirs;
//   - a new listener, or one whose address changed, gets a new socket (or takes over the
//     socket of a listener being removed at exactly that address); the old socket stops
//     accepting and its connections drain;
//   - a removed listener stops accepting; its connections may run on for the drain timeout,
//     then they are closed.
//
// Apply binds every new socket and opens every new access log file before it changes
// anything. If one fails it closes what it just opened and returns a *runtime.ResourceError
// naming the listener (type URL resourcev3.ListenerType); the running listeners and the
// upstream registry are untouched. Then it installs g's clusters in the upstream registry
// (health and ejections of unchanged endpoints carry over) and publishes the listeners.
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
	keepUDP := map[string]*udpEntry{}
	var retireUDP []*udpEntry
	for name, e := range m.udp {
		if l := g.Listener(name); l != nil && sameSocket(e.listener, l) {
			keepUDP[name] = e
		} else {
			retireUDP = append(retireUDP, e)
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
	spareUDP := map[string]*udpEntry{}
	for _, e := range retireUDP {
		if e.listener.Addr().Port() != 0 {
			spareUDP[socketKey(e.listener)] = e
		}
	}

	// Bind and open: the only steps that can fail.
	type pending struct {
		l     *runtime.Listener
		sock  *socket
		fresh bool // bound by this Apply (else taken over from a retiring entry)
	}
	type pendingUDP struct {
		l    *runtime.Listener
		conn *net.UDPConn
		from *udpEntry // the retiring entry whose socket this takes over, or nil
	}
	var (
		add    []pending
		addUDP []pendingUDP
	)
	undo := func() {
		for _, p := range add {
			if p.fresh {
				p.sock.ln.Close()
			}
		}
		for _, p := range addUDP {
			if p.from == nil {
				p.conn.Close()
			}
		}
	}
	for _, l := range g.Listeners() {
		if l.UDP() != nil {
			if keepUDP[l.Name()] != nil {
				continue
			}
			if e := spareUDP[socketKey(l)]; e != nil {
				delete(spareUDP, socketKey(l))
				addUDP = append(addUDP, pendingUDP{l: l, conn: e.conn, from: e})
				continue
			}
			conn, err := listenUDP(l)
			if err != nil {
				undo()
				return &runtime.ResourceError{TypeURL: resourcev3.ListenerType, Name: l.Name(), Err: err}
			}
			addUDP = append(addUDP, pendingUDP{l: l, conn: conn})
			continue
		}
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
			undo()
			return &runtime.ResourceError{TypeURL: resourcev3.ListenerType, Name: l.Name(), Err: err}
		}
		add = append(add, pending{l: l, sock: &socket{ln: ln}, fresh: true})
	}
	logs, err := m.logs.prepare(g)
	if err != nil {
		undo()
		return err
	}

	// Commit: nothing below can fail. The upstream registry learns the new clusters before
	// any connection can be routed to them.
	cfgs := make([]upstream.ClusterConfig, 0, len(g.Clusters()))
	for _, c := range g.Clusters() {
		cfgs = append(cfgs, c.Upstream())
	}
	m.up.Update(cfgs)
	m.logs.commit(logs)
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
		e.route.Store(&route{listener: l, clusters: clusters, logs: logs.loggers})
		entries[name] = e
	}
	handedOver := map[*socket]bool{}
	for _, p := range add {
		e := m.newEntry(p.l, p.sock, &route{listener: p.l, clusters: clusters, logs: logs.loggers})
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
		m.retireHTTP(e, context.Background())
		m.retire(e, m.drain)
		m.log.Info("listener stopped, draining", "listener", e.name, "address", e.sock.ln.Addr().String(),
			"drain_timeout_s", m.drain.Seconds())
	}
	m.entries = entries
	m.applyHTTP(g, entries, logs.loggers)

	udp := make(map[string]*udpEntry, len(keepUDP)+len(addUDP))
	for name, e := range keepUDP {
		e.listener = g.Listener(name)
		e.proxy.Update(m.udpConfig(e.listener, logs.loggers, e.conn))
		udp[name] = e
	}
	takenOver := map[*udpEntry]bool{}
	for _, p := range addUDP {
		if p.from != nil {
			// The socket moves to the new listener; the old one's sessions end now.
			takenOver[p.from] = true
			p.from.proxy.Close()
		}
		e := &udpEntry{name: p.l.Name(), listener: p.l, conn: p.conn}
		e.proxy = udpproxy.New(p.conn, m.udpConfig(p.l, logs.loggers, p.conn), m.log)
		udp[e.name] = e
		m.log.Info("listener started", "listener", e.name, "address", p.conn.LocalAddr().String(),
			"protocol", "udp", "clusters", clusterNames(p.l))
	}
	for _, e := range retireUDP {
		if !takenOver[e] {
			m.retireUDP(e)
		}
	}
	m.udp = udp
	m.udpMetrics.set(udp)
	warnIdleUnsupported(m.log, g)
	return nil
}

// Upstreams returns the registry of upstream clusters the Manager balances over: the live
// health, ejection and connection state of every endpoint, for status pages. It is closed
// by Shutdown.
func (m *Manager) Upstreams() *upstream.Registry { return m.up }

// Addr returns the bound address of a listener by name (tests bind port 0): a *net.TCPAddr,
// or a *net.UDPAddr for a UDP listener; nil if none.
func (m *Manager) Addr(listener string) net.Addr {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.entries[listener]; e != nil {
		return e.sock.ln.Addr()
	}
	if e := m.udp[listener]; e != nil {
		return e.conn.LocalAddr()
	}
	return nil
}

// Shutdown stops accepting on every listener, waits for connections and UDP sessions to
// finish until ctx is done, then closes those still open and waits for them to wind down.
// It returns nil when every connection finished on its own, else ctx's error. Apply fails
// after Shutdown. It closes the upstream registry and the access logs last.
func (m *Manager) Shutdown(ctx context.Context) error {
	m.mu.Lock()
	m.closed = true
	for _, e := range m.entries {
		e.sock.ln.Close()
		m.retireHTTP(e, ctx)
		m.retire(e, 0) // no deadline of its own: ctx is the deadline
	}
	m.entries = map[string]*entry{}
	var udpDone sync.WaitGroup
	for _, e := range m.udp {
		udpDone.Add(1)
		go func() {
			defer udpDone.Done()
			e.proxy.Drain(ctx)
			e.proxy.Close()
			e.conn.Close()
		}()
	}
	m.udp = map[string]*udpEntry{}
	m.udpMetrics.set(nil)
	m.mu.Unlock()

	m.sockets.Wait() // no new connections from here on
	done := make(chan struct{})
	go func() {
		m.conns.Wait()
		udpDone.Wait()
		m.udpDrains.Wait()
		close(done)
	}()
	defer m.logs.closeAll()
	defer m.up.Close()
	defer m.http.ups.Close()
	select {
	case <-done:
		m.stop()
		return nil
	case <-ctx.Done():
	}
	m.stop() // cut the drains of retired UDP listeners
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
	return a.Network() == b.Network() && a.Addr() == b.Addr() && a.V6Only() == b.V6Only()
}

// socketKey identifies a socket by what it was bound to.
func socketKey(l *runtime.Listener) string {
	return fmt.Sprintf("%s %s v6only=%t", l.Network(), l.Addr(), l.V6Only())
}

// clusterState is what the data plane keeps about a cluster across graph changes besides
// what package upstream keeps (health, ejections, balancer positions): its metrics.
type clusterState struct {
	name  string
	stats clusterStats
}
