package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flotilla-proxy/flotilla/agent/runtime"
	"github.com/flotilla-proxy/flotilla/agent/upstream"
)

// Errors that end a connection before it reaches an upstream.
var (
	// errNoHealthyUpstream: the cluster has no endpoint (package upstream).
	errNoHealthyUpstream = upstream.ErrNoHealthyUpstream
	// errOverflow: the cluster's max_connections circuit breaker is open.
	errOverflow = upstream.ErrOverflow
	// errListenerLimit: the listener's connection_limit is reached.
	errListenerLimit = errors.New("listener connection limit reached")
)

// conn is one downstream connection being proxied. It keeps the route it was accepted with
// for its whole life, whatever Apply does meanwhile. conn.serve owns both sockets; other
// goroutines only ever close them, through abort.
type conn struct {
	entry *entry
	route *route
	down  *net.TCPConn
	start time.Time
	// cancel cancels the context of serve, which stops a dial in progress.
	cancel context.CancelFunc

	mu      sync.Mutex
	up      *net.TCPConn
	aborted string // why the proxy closed the connection itself; "" if it did not
	// Known once the chain is chosen (zero before): for the log line.
	chain   *runtime.FilterChain
	cluster *clusterState
	client  netip.AddrPort
	server  netip.AddrPort
	sni     string
	// httpServed: the connection went to an HTTP server, which logs each request.
	httpServed bool
}

// serve runs the listener filters (when the listener has any) and chooses the filter chain,
// connects to an upstream endpoint of the chain's cluster, writes the PROXY header the
// cluster wants and the bytes the filters peeked, then copies bytes both ways until both
// directions are done, and closes both connections. ctx is cancelled when the proxy aborts
// the connection.
func (c *conn) serve(ctx context.Context) {
	var o outcome
	defer func() {
		c.cancel()
		c.down.Close()
		c.logEnd(&o)
		c.entry.done(c)
		c.entry.m.conns.Done()
	}()

	var p *preread
	p, o.err = c.preread(c.route.listener)
	if o.err != nil {
		return
	}
	defer p.release()
	o.fromClient = int64(p.off) // the PROXY header, read and dropped
	if p.chain.HTTP != nil {
		c.serveHTTP(ctx, &o, p)
		return
	}
	tcp := p.chain.TCP
	cs := c.route.clusters[tcp.Cluster.Name()]
	c.setChain(p, cs)

	down := side{raw: c.down}
	if srv := p.chain.TLS; srv != nil {
		// The ClientHello the filters peeked goes to the handshake, not upstream.
		o.fromClient += int64(len(p.peeked()))
		down.tls, o.err = c.terminate(ctx, srv, c.route.listener, p)
		p.release()
		if sni := down.tls.ConnectionState().ServerName; p.sni == "" && sni != "" {
			p.sni = sni
			c.setSNI(sni)
		}
		if o.err != nil {
			return
		}
	}

	var (
		up   *net.TCPConn
		host *upstream.Host
	)
	start := time.Now()
	up, host, o.err = c.connect(ctx, tcp, cs, p.src.Addr())
	o.connectTime = time.Since(start)
	if host != nil {
		o.upstream = host.Addr()
	}
	if o.err != nil {
		return
	}
	defer host.Release()
	defer up.Close()
	if !c.setUpstream(up) {
		o.err = errors.New("closed while connecting")
		return
	}
	if tcp.Cluster.TLS() != nil || down.tls != nil {
		c.serveBuffered(ctx, &o, tcp, cs, p, down, up)
		return
	}
	o.connected = true
	cs.stats.active.Inc()
	defer cs.stats.active.Dec()
	hdr, err := writePreamble(up, tcp.Cluster.ProxyProtocol(), p)
	if err != nil {
		o.err = fmt.Errorf("write to upstream: %w", err)
		return
	}
	peeked := int64(len(p.peeked()))
	o.fromClient += peeked
	o.toUpstream = int64(hdr) + peeked
	p.release()
	stopIdle := c.watchIdle(tcp.IdleTimeout, up)
	n, rx, err := c.pipe(up)
	stopIdle()
	o.err = err
	o.fromClient += n
	o.toUpstream += n
	o.fromUpstream, o.toClient = rx, rx
	cs.stats.txBytes.Add(float64(peeked + n))
	cs.stats.rxBytes.Add(float64(rx))
}

// serveBuffered is the end of serve for a connection with TLS on either side: the cluster's
// PROXY header in the clear, the upstream handshake when the cluster originates TLS, the
// peeked bytes (when TLS was not terminated here), then the buffered copy.
func (c *conn) serveBuffered(ctx context.Context, o *outcome, tcp runtime.TCPProxy, cs *clusterState, p *preread, down side, up *net.TCPConn) {
	upSide := side{raw: up}
	var peeked int64
	if tcp.Cluster.TLS() != nil {
		hdr, err := writePreamble(up, tcp.Cluster.ProxyProtocol(), &preread{src: p.src, dst: p.dst})
		if err != nil {
			o.err = fmt.Errorf("write to upstream: %w", err)
			return
		}
		o.toUpstream = int64(hdr)
		if upSide.tls, o.err = c.originate(ctx, tcp.Cluster, cs, up, p.sni); o.err != nil {
			return
		}
		if data := p.peeked(); len(data) > 0 {
			if _, err := upSide.tls.Write(data); err != nil {
				o.err = fmt.Errorf("write to upstream: %w", err)
				return
			}
			peeked = int64(len(data))
		}
	} else {
		hdr, err := writePreamble(up, tcp.Cluster.ProxyProtocol(), p)
		if err != nil {
			o.err = fmt.Errorf("write to upstream: %w", err)
			return
		}
		peeked = int64(len(p.peeked()))
		o.toUpstream = int64(hdr)
	}
	o.fromClient += peeked
	o.toUpstream += peeked
	p.release()
	o.connected = true
	cs.stats.active.Inc()
	defer cs.stats.active.Dec()
	stopIdle := c.watchIdle(tcp.IdleTimeout, up)
	n, rx, err := c.pipeBuffered(down, upSide)
	stopIdle()
	o.err = err
	o.fromClient += n
	o.toUpstream += n
	o.fromUpstream, o.toClient = rx, rx
	cs.stats.txBytes.Add(float64(peeked + n))
	cs.stats.rxBytes.Add(float64(rx))
}

// outcome is what happened to a connection, for its log lines. Byte counts are payload
// bytes as io.Copy counted them; the PROXY headers count as bytes from the client (one it
// sent) and to the upstream (one the cluster wants).
type outcome struct {
	upstream                 netip.AddrPort // the endpoint used, or the last one tried; invalid if none
	connected                bool
	connectTime              time.Duration // from the first pick to the connection (or giving up)
	fromClient, toClient     int64
	toUpstream, fromUpstream int64
	err                      error
}

// rejected finishes a connection closed before it was served (listener connection
// limit): it gets its log lines.
func (c *conn) rejected(err error) {
	c.logEnd(&outcome{err: err})
}

// setChain records the chosen chain for the connection's log line.
func (c *conn) setChain(p *preread, cs *clusterState) {
	c.mu.Lock()
	c.chain, c.cluster, c.client, c.server, c.sni = p.chain, cs, p.src, p.dst, p.sni
	c.mu.Unlock()
}

// setSNI records the SNI of a terminated handshake for the connection's log line.
func (c *conn) setSNI(sni string) {
	c.mu.Lock()
	c.sni = sni
	c.mu.Unlock()
}

// connect picks an endpoint of the chain's cluster (package upstream: its policy, health,
// ejections and circuit breaker) and dials it; when that fails it picks again, avoiding the
// endpoints already tried, up to MaxConnectAttempts attempts in all, each bounded by the
// cluster's connect timeout. client feeds a ring hash or Maglev cluster when the tcp_proxy
// hashes the source IP. On success the caller owns the host and must Release it. On
// failure host is the last endpoint tried (already released), or nil.
func (c *conn) connect(ctx context.Context, tcp runtime.TCPProxy, cs *clusterState, client netip.Addr) (*net.TCPConn, *upstream.Host, error) {
	cl := tcp.Cluster
	ucl := c.entry.m.up.Cluster(cl.Name())
	if ucl == nil {
		cs.stats.noHealthy.Inc()
		return nil, nil, fmt.Errorf("cluster %q: %w", cl.Name(), errNoHealthyUpstream)
	}
	var hash uint64
	if cl.HashesSource() {
		if tcp.HashSourceIP {
			hash = upstream.HashAddr(client)
		} else {
			hash = rand.Uint64() // no hash policy: Envoy picks a random host
		}
	}
	// No TCP keepalive probes on upstream connections, as in Envoy (without
	// upstream_connection_options), nginx and HAProxy: Go's default (15s probes) costs four
	// setsockopt calls per connection and wakes idle connections for nothing.
	d := net.Dialer{Timeout: cl.ConnectTimeout(), KeepAlive: -1}
	var (
		tried [4]netip.AddrPort
		excl  = tried[:0]
		last  *upstream.Host
		err   error
	)
	for range tcp.MaxConnectAttempts {
		h, perr := ucl.Pick(hash, excl)
		switch {
		case errors.Is(perr, upstream.ErrOverflow):
			return nil, last, fmt.Errorf("cluster %q: %w", cl.Name(), errOverflow)
		case perr != nil:
			cs.stats.noHealthy.Inc()
			return nil, last, fmt.Errorf("cluster %q: %w", cl.Name(), errNoHealthyUpstream)
		}
		cs.stats.total.Inc()
		var nc net.Conn
		nc, err = d.DialContext(ctx, "tcp", h.Addr().String())
		if err == nil {
			h.Connected()
			return nc.(*net.TCPConn), h, nil
		}
		cs.stats.connectFail.Inc()
		if ctx.Err() != nil {
			// Aborted (drain deadline, shutdown): not the host's fault.
			h.Release()
			return nil, h, fmt.Errorf("cluster %q: %w", cl.Name(), err)
		}
		h.ConnectFailed()
		h.Release()
		last = h
		excl = append(excl, h.Addr())
	}
	return nil, last, fmt.Errorf("cluster %q: %w", cl.Name(), err)
}

// setUpstream records the upstream connection so that abort can close it. It returns false
// if the connection was aborted while dialing.
func (c *conn) setUpstream(up *net.TCPConn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.aborted != "" {
		return false
	}
	c.up = up
	return true
}

// abort closes the connection from the proxy's side (drain deadline, idle timeout,
// shutdown): it cancels a dial in progress and closes both sockets, which ends both copies.
func (c *conn) abort(reason string) {
	c.mu.Lock()
	if c.aborted == "" {
		c.aborted = reason
	}
	up := c.up
	c.mu.Unlock()
	c.cancel()
	c.down.Close()
	if up != nil {
		up.Close()
	}
}

// copyResult is what one direction of a connection did.
type copyResult struct {
	n   int64
	err error
	// srcErr reports that err came from reading the source (pipeBuffered only).
	srcErr bool
}

// pipe copies downstream → upstream and upstream → downstream until both directions are
// done. A direction that reaches EOF half-closes its destination and the other direction
// carries on; an error in either direction closes both connections. It returns the bytes
// sent to (tx) and received from (rx) the upstream, and the first error.
func (c *conn) pipe(up *net.TCPConn) (tx, rx int64, err error) {
	// Upstream → client runs in its own goroutine, client → upstream in this
	// one: two goroutines per connection (with serve's), not three, which is
	// most of what an idle proxied connection costs.
	toDown := make(chan copyResult, 1)
	var eofs atomic.Int32
	go proxyCopy(toDown, c.down, up, &eofs)
	tx, err = copyHalf(up, c.down, &eofs)
	r := <-toDown
	rx = r.n
	if err == nil {
		err = r.err
	}
	return tx, rx, err
}

// proxyCopy runs copyHalf for one direction and reports on done. It is a named function so
// that stack dumps show what each goroutine does.
func proxyCopy(done chan<- copyResult, dst, src *net.TCPConn, eofs *atomic.Int32) {
	n, err := copyHalf(dst, src, eofs)
	done <- copyResult{n: n, err: err}
}

// copyHalf copies src to dst until src reaches EOF or fails. On EOF it half-closes dst
// (passes the FIN on) so the other direction keeps flowing; on an error it closes both
// connections, which ends the other direction too. dst and src are the raw *net.TCPConn
// values so the copy uses splice(2) on Linux (copyIdleFree); the byte count comes from it.
//
// eofs counts the directions of the connection that reached EOF. The second one skips the
// half-close: both peers have sent their FIN and serve closes both sockets at once, and
// that close sends dst's FIN (nginx, which does not half-close by default, spends no call
// there either). A short connection saves one shutdown(2).
func copyHalf(dst, src *net.TCPConn, eofs *atomic.Int32) (int64, error) {
	n, err := copyIdleFree(dst, src)
	if err == nil && eofs.Add(1) == 1 {
		err = dst.CloseWrite()
	}
	if err != nil {
		dst.Close()
		src.Close()
	}
	return n, err
}

// watchIdle closes the connection once no byte has moved in either direction for timeout
// (0 disables it). It costs nothing on the copy path: a timer per connection asks the
// kernel, when it fires, how long ago each socket last sent or received data, and fires
// again when the connection could first have been idle for timeout. It returns a function
// that stops the watch.
func (c *conn) watchIdle(timeout time.Duration, up *net.TCPConn) (stop func()) {
	if timeout <= 0 || !idleTimeoutSupported {
		return func() {}
	}
	var (
		mu      sync.Mutex
		t       *time.Timer
		stopped bool
	)
	check := func() {
		idle, err := idleFor(c.down, up)
		mu.Lock()
		defer mu.Unlock()
		switch {
		case stopped || err != nil: // the connection is ending
		case idle < timeout:
			t.Reset(timeout - idle)
		default:
			stopped = true
			c.abort("idle timeout")
		}
	}
	mu.Lock()
	t = time.AfterFunc(timeout, check)
	mu.Unlock()
	return func() {
		mu.Lock()
		stopped = true
		t.Stop()
		mu.Unlock()
	}
}

// logEnd writes the connection's access log line, if its listener has an access log, and
// its Debug line.
func (c *conn) logEnd(o *outcome) {
	c.mu.Lock()
	served := c.httpServed
	c.mu.Unlock()
	if !served {
		c.accessLog(o)
	}
	log := c.entry.m.log
	if !log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	c.mu.Lock()
	end, chain, cs, client, sni := c.aborted, c.chain, c.cluster, c.client, c.sni
	c.mu.Unlock()
	switch {
	case end != "":
	case o.err != nil:
		end = o.err.Error()
	default:
		end = "closed"
	}
	attrs := []slog.Attr{slog.String("listener", c.route.listener.Name())}
	if chain != nil {
		attrs = append(attrs, slog.String("cluster", cs.name), slog.String("filter_chain", chain.Name))
	}
	attrs = append(attrs,
		slog.String("client", c.down.RemoteAddr().String()),
		slog.Int64("tx_bytes", o.toUpstream),
		slog.Int64("rx_bytes", o.fromUpstream),
		slog.Float64("duration_s", time.Since(c.start).Seconds()),
		slog.String("end", end),
	)
	if client.IsValid() && client.String() != c.down.RemoteAddr().String() {
		attrs = append(attrs, slog.String("source", client.String()))
	}
	if sni != "" {
		attrs = append(attrs, slog.String("sni", sni))
	}
	if o.upstream.IsValid() {
		attrs = append(attrs, slog.String("upstream", o.upstream.String()))
	}
	log.LogAttrs(context.Background(), slog.LevelDebug, "connection", attrs...)
}

// idleWarning makes the idle-timeout warning appear once per process.
var idleWarning sync.Once

// warnIdleUnsupported logs, once, that idle timeouts in g are not enforced on this platform.
func warnIdleUnsupported(log *slog.Logger, g *runtime.Graph) {
	if idleTimeoutSupported {
		return
	}
	for _, l := range g.Listeners() {
		for _, fc := range append(l.Chains(), l.DefaultChain()) {
			if fc != nil && fc.TCP.IdleTimeout > 0 {
				idleWarning.Do(func() {
					log.Warn("tcp_proxy idle_timeout is only enforced on Linux; idle connections stay open", "listener", l.Name())
				})
				return
			}
		}
	}
}
