package proxy

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/flotilla-proxy/flotilla/agent/accesslog"
	"github.com/flotilla-proxy/flotilla/agent/runtime"
)

// socket is a bound listening socket and its accept loop. The loop hands each connection to
// the socket's current owner; Apply changes the owner when a listener is renamed without
// changing its address.
type socket struct {
	ln    *net.TCPListener
	owner atomic.Pointer[entry]
}

// entry is one named listener being served: its socket, what new connections get, and the
// connections it accepted. An entry is retired when its listener is removed or moves to
// another address: it takes no more connections and its connections drain.
type entry struct {
	m     *Manager
	name  string
	sock  *socket
	route atomic.Pointer[route] // swapped by Apply; read once per new connection
	stats listenerStats

	mu         sync.Mutex
	conns      map[*conn]struct{}
	retired    bool
	drained    bool        // retired and no connection left
	drainTimer *time.Timer // closes what is left at the drain deadline
}

// route is what a new connection gets: the listener's config, the state of the clusters of
// the graph it belongs to (by name) and the access loggers (by path). It is immutable; Apply
// replaces it whole.
type route struct {
	listener *runtime.Listener
	clusters map[string]*clusterState
	logs     map[string]*accesslog.Logger
}

func (m *Manager) newEntry(l *runtime.Listener, s *socket, rt *route) *entry {
	e := &entry{m: m, name: l.Name(), sock: s, stats: m.metrics.listener(l.Name()), conns: map[*conn]struct{}{}}
	e.route.Store(rt)
	return e
}

// listener returns the config new connections currently get.
func (e *entry) listener() *runtime.Listener { return e.route.Load().listener }

// acceptLoop accepts connections on s until s is closed, handing each to s's owner.
func (m *Manager) acceptLoop(s *socket) {
	defer m.sockets.Done()
	var delay time.Duration
	for {
		c, err := s.ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off (as net/http does) and retry.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			m.log.Warn("accept failed", "listener", s.owner.Load().name, "error", err, "retry_in_s", delay.Seconds())
			time.Sleep(delay)
			continue
		}
		delay = 0
		e := s.owner.Load()
		if !e.accept(c) {
			// e retired between Load and accept: the socket either has a new owner or is
			// closing, in which case the connection is refused like the rest of its backlog.
			if next := s.owner.Load(); next == e || !next.accept(c) {
				c.Close()
			}
		}
	}
}

// accept starts serving c with the entry's current config. It returns false, without
// touching c, if the entry is retired. A connection over the listener's connection_limit
// is closed at once and counted.
func (e *entry) accept(down *net.TCPConn) bool {
	rt := e.route.Load()
	ctx, cancel := context.WithCancel(context.Background())
	c := &conn{entry: e, route: rt, down: down, start: time.Now(), cancel: cancel}
	e.mu.Lock()
	if e.retired {
		e.mu.Unlock()
		cancel()
		return false
	}
	if limit := rt.listener.MaxConnections(); limit > 0 && uint64(len(e.conns)) >= limit {
		e.mu.Unlock()
		cancel()
		e.stats.total.Inc()
		e.stats.overflow.Inc()
		e.stats.limited.Inc()
		down.Close()
		c.rejected(errListenerLimit)
		return true
	}
	e.conns[c] = struct{}{}
	e.m.conns.Add(1)
	e.mu.Unlock()
	e.stats.total.Inc()
	e.stats.active.Inc()
	go c.serve(ctx)
	return true
}

// done forgets a finished connection.
func (e *entry) done(c *conn) {
	e.mu.Lock()
	delete(e.conns, c)
	last := e.retired && !e.drained && len(e.conns) == 0
	if last {
		e.drained = true
		if e.drainTimer != nil {
			e.drainTimer.Stop()
		}
	}
	e.mu.Unlock()
	e.stats.active.Dec()
	if last {
		e.m.drained(e)
	}
}

// retire stops the entry from taking connections and lets the open ones run on for at most
// timeout (0: no limit). It reports whether the entry is already drained.
func (e *entry) retire(timeout time.Duration) (drained bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.retired {
		return e.drained
	}
	e.retired = true
	if len(e.conns) == 0 {
		e.drained = true
		return true
	}
	if timeout > 0 {
		e.drainTimer = time.AfterFunc(timeout, func() {
			if n := e.closeAll("drain timeout"); n > 0 {
				e.stats.drainClosed.Add(float64(n))
				e.m.log.Info("drain timeout passed, closed connections", "listener", e.name, "connections", n)
			}
		})
	}
	return false
}

// closeAll closes every open connection of the entry, giving reason, and returns how many.
func (e *entry) closeAll(reason string) int {
	e.mu.Lock()
	open := make([]*conn, 0, len(e.conns))
	for c := range e.conns {
		open = append(open, c)
	}
	e.mu.Unlock()
	for _, c := range open {
		c.abort(reason)
	}
	return len(open)
}

// listenConfig is how l's socket is bound. IPv6 listeners get IPV6_V6ONLY set explicitly:
// on for a plain "::" (IPv6 only, as in Envoy), off with ipv4_compat (dual stack). TCP
// sockets get SO_REUSEPORT (see reusePortControl); UDP sockets do not, since the kernel
// would spread one client's datagrams over the sockets sharing the port. Accepted
// connections get no TCP keepalive probes (KeepAlive -1), as in Envoy, nginx (`so_keepalive`
// off) and HAProxy (no `option clitcpka`): Go's default would cost four setsockopt calls per
// connection; dead idle clients are found by the idle timeout instead.
func listenConfig(l *runtime.Listener, reusePort bool) *net.ListenConfig {
	var v6only func(network, address string, c syscall.RawConn) error
	if l.Addr().Addr().Is6() {
		v6only = v6onlyControl(l.V6Only())
	}
	return &net.ListenConfig{KeepAlive: -1, Control: func(network, address string, c syscall.RawConn) error {
		if v6only != nil {
			if err := v6only(network, address, c); err != nil {
				return err
			}
		}
		if reusePort {
			return reusePortControl(c)
		}
		return nil
	}}
}

// listen binds a TCP listener's socket.
func listen(l *runtime.Listener) (*net.TCPListener, error) {
	ln, err := listenConfig(l, true).Listen(context.Background(), l.Network(), l.Addr().String())
	if err != nil {
		return nil, err
	}
	return ln.(*net.TCPListener), nil
}
