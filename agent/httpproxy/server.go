// Package httpproxy is the agent's HTTP engine: it serves the connections of HTTP listeners
// (Envoy's http_connection_manager) with net/http, routes each request by the listener's
// current route table (package httproute) and proxies it to an endpoint of a cluster picked
// through package upstream, with Envoy's semantics for errors, timeouts and retries.
//
// A request's life reads top to bottom: package proxy accepts the TCP connection, reads the
// PROXY header, terminates TLS and hands the connection to Server.ServeConn, which feeds it
// to a net/http Server through a channel-backed net.Listener (HTTP/1.1, HTTP/2 over TLS by
// ALPN, h2c with prior knowledge). Server.ServeHTTP loads the route table once (an RDS
// update applies to the next request, even on a kept-alive connection, and never touches
// requests in flight or upgraded WebSockets), normalises the path when the manager says so
// (normalize.go: the normalised path is routed on and forwarded), selects the virtual host
// and route, and then
// redirects, answers directly, or forwards: Forward picks a weighted cluster, and an
// httputil.ReverseProxy whose Transport is roundTripper picks an endpoint (package upstream:
// policy, health, ejections, circuit breaker), sends over the cluster's keep-alive pool
// (Upstreams: an http.Transport per cluster, and for bodiless requests to plain HTTP/1.1
// clusters a fast path that writes and reads in the handler's goroutine, pool.go), and
// retries on another endpoint as the route's policy and the cluster's retry budget allow. The response goes back through responseWriter (gzip, byte counts,
// stream idle tracking), and the request ends with one access log line and its stats.
//
// Local replies follow Envoy, except that a failure to connect is nginx's 502: no route
// 404; cluster unknown, without endpoints or at its circuit breaker 503 "no healthy
// upstream"; connect failure or reset before the response 502; route or per-try timeout
// 504 (the route timeout also ends a request whose upstream takes none of its body for that
// long before answering); body over the limit 413; path with an escaped slash under
// path_with_escaped_slashes_action REJECT_REQUEST 400 (UNESCAPE_AND_REDIRECT: 307); headers over the limit 431 (net/http); upgrade not enabled
// for the route 403; HTTP over a require_tls virtual host 301 to https; a request body
// not complete within request_timeout 408. The access log's status for a client that went
// away before the response is nginx's 499.
//
// An upstream may answer before it has read the request body (a 413 or 401 for an upload,
// an early 200), and may then reset its connection: the client gets the whole response
// (HTTP/1.1 requests with a body are read in full duplex mode, and earlyConn keeps the
// upstream's reset from cutting it), the upstream request is then cancelled, and net/http
// deals with the rest of the body: for HTTP/1.1 it discards up to 256 KiB of it or closes
// the connection, so that no byte of it is read as a request; for HTTP/2 it resets the
// stream.
//
// Not supported: WebSockets over HTTP/2 (extended CONNECT), the PROXY protocol towards HTTP
// upstreams (keep-alive connections are shared by clients), 1xx responses other than 101 on
// the fast path (they are dropped).
//
// Metrics are listed on Metrics.
package httpproxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flotilla-proxy/flotilla/agent/accesslog"
	"github.com/flotilla-proxy/flotilla/agent/httproute"
)

// Config is what one HTTP listener serves. It is immutable once given to a Server;
// Server.Update replaces it whole.
type Config struct {
	// Listener names the listener, for logs, stats and access log lines.
	Listener string
	// Manager is the listener's http_connection_manager; never nil.
	Manager *httproute.Manager
	// Table is the route table (RDS) the manager serves; nil answers every request 404.
	Table *httproute.Table
	// AccessLog, when not nil, gets one line per request.
	AccessLog *accesslog.Logger
}

// ConnInfo is what package proxy knows of a connection it hands over.
type ConnInfo struct {
	// Client and Server are the addresses of the client and of the address it connected
	// to: the PROXY header's when the listener reads one, else the socket's.
	Client, Server netip.AddrPort
	// TLS reports that TLS was terminated (the request scheme is https).
	TLS bool
	// FilterChain names the filter chain, for the access log.
	FilterChain string
}

// Options configure a Server.
type Options struct {
	// Upstreams are the clusters' HTTP pools, shared by the Servers of a Manager; required.
	Upstreams *Upstreams
	// Metrics receive the request statistics; nil keeps unregistered ones.
	Metrics *Metrics
	// Logger receives errors; nil means slog.Default().
	Logger *slog.Logger
}

// Server serves the HTTP connections of one listener. Its methods are safe for concurrent
// use.
type Server struct {
	log     *slog.Logger
	ups     *Upstreams
	metrics *Metrics
	stats   atomic.Pointer[listenerStats]
	cfg     atomic.Pointer[Config]
	proxy   *reverseProxy

	mu     sync.Mutex
	gen    *generation              // serves new connections; nil once shut down
	gens   map[*generation]struct{} // every generation not yet shut down, gen included
	closed bool

	live sync.Map // net.Conn → *connState, from ServeConn until the conn is done
}

// generation is one net/http Server with its connection-level settings. A change of those
// settings (timeouts, header limit, codec) starts a new generation for new connections;
// the old one finishes the requests of its connections and closes them.
type generation struct {
	key connSettings
	srv *http.Server
	ln  *chanListener
}

// connSettings are the settings net/http applies per connection.
type connSettings struct {
	codec             httproute.Codec
	readHeaderTimeout time.Duration
	idleTimeout       time.Duration
	maxHeaderBytes    int
}

func settingsOf(m *httproute.Manager) connSettings {
	return connSettings{
		codec:             m.Codec,
		readHeaderTimeout: m.RequestHeadersTimeout,
		idleTimeout:       m.IdleTimeout,
		maxHeaderBytes:    m.MaxRequestHeadersBytes,
	}
}

// connState is one connection's life as ServeConn waits for it.
type connState struct {
	ConnInfo
	hijacked atomic.Bool
	once     sync.Once
	done     chan struct{}
}

func (c *connState) finish() { c.once.Do(func() { close(c.done) }) }

type ctxKey int

const (
	connKey ctxKey = iota
	exchangeKey
)

// New returns a Server for cfg.
func New(cfg *Config, opts Options) *Server {
	s := &Server{
		log:     opts.Logger,
		ups:     opts.Upstreams,
		metrics: opts.Metrics,
		gens:    map[*generation]struct{}{},
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.metrics == nil {
		s.metrics = NewMetrics(nil, s.log)
	}
	s.proxy = newReverseProxy(s)
	s.Update(cfg)
	return s
}

// Update makes cfg what the next request gets. Requests in flight and upgraded connections
// keep what they started with. When the connection-level settings change, new connections
// go to a new net/http Server and the old one drains: it finishes the requests it has and
// closes its connections as they go idle.
func (s *Server) Update(cfg *Config) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.cfg.Load(); old == nil || old.Listener != cfg.Listener {
		st := s.metrics.listener(cfg.Listener)
		s.stats.Store(&st)
	}
	s.cfg.Store(cfg)
	if s.closed {
		return
	}
	key := settingsOf(cfg.Manager)
	if s.gen != nil && s.gen.key == key {
		return
	}
	old := s.gen
	s.gen = s.newGeneration(key)
	s.gens[s.gen] = struct{}{}
	if old != nil {
		go s.retire(old, context.Background())
	}
}

// retire shuts a generation down: it stops taking connections, closes idle ones, and lets
// the others finish their request. It returns when all are closed or ctx is done.
func (s *Server) retire(g *generation, ctx context.Context) error {
	err := g.srv.Shutdown(ctx)
	if err == nil {
		// Else Close still has to close what is left.
		s.mu.Lock()
		delete(s.gens, g)
		s.mu.Unlock()
	}
	return err
}

func (s *Server) newGeneration(key connSettings) *generation {
	g := &generation{key: key, ln: newChanListener()}
	var p http.Protocols
	switch key.codec {
	case httproute.CodecHTTP1:
		p.SetHTTP1(true)
	case httproute.CodecHTTP2:
		p.SetHTTP2(true)
		p.SetUnencryptedHTTP2(true)
	default:
		p.SetHTTP1(true)
		p.SetHTTP2(true)
		p.SetUnencryptedHTTP2(true)
	}
	maxHeader := key.maxHeaderBytes
	if maxHeader <= 0 {
		maxHeader = 60 << 10
	}
	g.srv = &http.Server{
		Handler:           s,
		Protocols:         &p,
		ReadHeaderTimeout: key.readHeaderTimeout,
		IdleTimeout:       key.idleTimeout,
		MaxHeaderBytes:    maxHeader,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if cs, ok := s.live.Load(c); ok {
				return context.WithValue(ctx, connKey, cs)
			}
			return ctx
		},
		ConnState: func(c net.Conn, st http.ConnState) {
			switch st {
			case http.StateClosed:
				if cs, ok := s.live.LoadAndDelete(c); ok {
					cs.(*connState).finish()
				}
			case http.StateHijacked:
				// The handler that hijacked it (an upgrade) finishes it when it returns.
				if cs, ok := s.live.LoadAndDelete(c); ok {
					cs.(*connState).hijacked.Store(true)
				}
			}
		},
	}
	go func() {
		if err := g.srv.Serve(g.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http server stopped", "listener", s.cfg.Load().Listener, "error", err)
		}
	}()
	return g
}

// ServeConn serves HTTP on c, which the caller accepted (after the PROXY protocol and TLS
// termination, when the listener has them; a *tls.Conn gets HTTP/2 when ALPN chose h2),
// and returns when the Server is done with it: closed, or, for an upgraded connection,
// when the upgraded stream ends. ServeConn owns c: it closes it, also when the Server is
// shut down. Closing c from another goroutine ends ServeConn.
func (s *Server) ServeConn(c net.Conn, info ConnInfo) {
	cs := &connState{ConnInfo: info, done: make(chan struct{})}
	s.mu.Lock()
	g := s.gen
	s.mu.Unlock()
	if g == nil {
		c.Close()
		return
	}
	s.live.Store(c, cs)
	if !g.ln.push(c) {
		s.live.Delete(c)
		c.Close()
		return
	}
	<-cs.done
}

// Shutdown stops taking connections, closes idle ones and waits, until ctx is done, for
// the others to finish their request. Upgraded connections (WebSockets) are not waited
// for; their owner closes them (package proxy does at the drain deadline).
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	s.gen = nil
	gens := make([]*generation, 0, len(s.gens))
	for g := range s.gens {
		gens = append(gens, g)
	}
	s.mu.Unlock()
	var first error
	for _, g := range gens {
		if err := s.retire(g, ctx); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Close closes every connection at once, except upgraded ones.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	s.gen = nil
	gens := make([]*generation, 0, len(s.gens))
	for g := range s.gens {
		gens = append(gens, g)
	}
	clear(s.gens)
	s.mu.Unlock()
	for _, g := range gens {
		g.srv.Close()
	}
	return nil
}

// chanListener is the net.Listener a net/http Server accepts from: connections pushed by
// ServeConn.
type chanListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newChanListener() *chanListener {
	return &chanListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

// push hands c to Accept; false if the listener is closed.
func (l *chanListener) push(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.closed:
		return false
	}
}

// Accept returns the next pushed connection.
func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// Close makes Accept and push fail.
func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

// Addr is a placeholder: connections come from package proxy's sockets.
func (l *chanListener) Addr() net.Addr { return chanAddr{} }

type chanAddr struct{}

func (chanAddr) Network() string { return "flotilla" }
func (chanAddr) String() string  { return "flotilla-http" }
