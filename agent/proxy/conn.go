package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/flotilla-proxy/flotilla/agent/runtime"
)

// errNoHealthyUpstream ends a connection whose cluster has no endpoint taking traffic.
var errNoHealthyUpstream = errors.New("no healthy upstream")

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
	sni     string
}

// serve runs the listener filters (when the listener has any) and chooses the filter chain,
// connects to an upstream endpoint of the chain's cluster, writes the PROXY header the
// cluster wants and the bytes the filters peeked, then copies bytes both ways until both
// directions are done, and closes both connections. ctx is cancelled when the proxy aborts
// the connection.
func (c *conn) serve(ctx context.Context) {
	var (
		ep     runtime.Endpoint
		tx, rx int64
		err    error
	)
	defer func() {
		c.cancel()
		c.down.Close()
		c.logEnd(ep, tx, rx, err)
		c.entry.done(c)
		c.entry.m.conns.Done()
	}()

	var p *preread
	p, err = c.preread(c.route.listener)
	if err != nil {
		return
	}
	defer p.release()
	tcp := p.chain.TCP
	cs := c.route.clusters[tcp.Cluster.Name()]
	c.setChain(p, cs)

	var up *net.TCPConn
	up, ep, err = c.connect(ctx, tcp, cs)
	if err != nil {
		return
	}
	defer up.Close()
	if !c.setUpstream(up) {
		err = errors.New("closed while connecting")
		return
	}
	cs.stats.active.Inc()
	defer cs.stats.active.Dec()
	if err = writePreamble(up, tcp.Cluster.ProxyProtocol(), p); err != nil {
		err = fmt.Errorf("write to upstream: %w", err)
		return
	}
	tx = int64(len(p.peeked()))
	p.release()
	stopIdle := c.watchIdle(tcp.IdleTimeout, up)
	var n int64
	n, rx, err = c.pipe(up)
	tx += n
	stopIdle()
	cs.stats.txBytes.Add(float64(tx))
	cs.stats.rxBytes.Add(float64(rx))
}

// setChain records the chosen chain for the connection's log line.
func (c *conn) setChain(p *preread, cs *clusterState) {
	c.mu.Lock()
	c.chain, c.cluster, c.client, c.sni = p.chain, cs, p.src, p.sni
	c.mu.Unlock()
}

// connect dials the endpoint the cluster's round robin picks and, when that fails, the
// next endpoints in order, up to MaxConnectAttempts attempts in all, each bounded by the
// cluster's connect timeout.
func (c *conn) connect(ctx context.Context, tcp runtime.TCPProxy, cs *clusterState) (*net.TCPConn, runtime.Endpoint, error) {
	cl := tcp.Cluster
	n := cl.NumEndpoints()
	if n == 0 {
		cs.stats.noHealthy.Inc()
		return nil, runtime.Endpoint{}, fmt.Errorf("cluster %q: %w", cl.Name(), errNoHealthyUpstream)
	}
	first := cl.Pick(cs.next.Add(1) - 1)
	d := net.Dialer{Timeout: cl.ConnectTimeout()}
	var (
		ep  runtime.Endpoint
		err error
	)
	for attempt := range tcp.MaxConnectAttempts {
		ep = cl.Endpoint((first + attempt) % n)
		cs.stats.total.Inc()
		var nc net.Conn
		nc, err = d.DialContext(ctx, "tcp", ep.Addr.String())
		if err == nil {
			return nc.(*net.TCPConn), ep, nil
		}
		cs.stats.connectFail.Inc()
		if ctx.Err() != nil {
			break
		}
	}
	return nil, ep, fmt.Errorf("cluster %q: %w", cl.Name(), err)
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
}

// pipe copies downstream → upstream and upstream → downstream until both directions are
// done. A direction that reaches EOF half-closes its destination and the other direction
// carries on; an error in either direction closes both connections. It returns the bytes
// sent to (tx) and received from (rx) the upstream, and the first error.
func (c *conn) pipe(up *net.TCPConn) (tx, rx int64, err error) {
	toUp := make(chan copyResult, 1)
	toDown := make(chan copyResult, 1)
	go proxyCopy(toUp, up, c.down)
	go proxyCopy(toDown, c.down, up)
	for range 2 {
		var r copyResult
		select {
		case r = <-toUp:
			tx = r.n
		case r = <-toDown:
			rx = r.n
		}
		if r.err != nil && err == nil {
			err = r.err
			c.down.Close()
			up.Close()
		}
	}
	return tx, rx, err
}

// proxyCopy copies src to dst until src reaches EOF or fails, then reports on done. On EOF
// it half-closes dst (passes the FIN on) so the other direction keeps flowing. dst and src
// are the raw *net.TCPConn values so io.Copy uses splice(2) on Linux; the byte count comes
// from io.Copy. It is a named function so that stack dumps show what each goroutine does.
func proxyCopy(done chan<- copyResult, dst, src *net.TCPConn) {
	n, err := io.Copy(dst, src)
	if err == nil {
		err = dst.CloseWrite()
	}
	done <- copyResult{n: n, err: err}
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

// logEnd writes the one Debug line a connection gets.
func (c *conn) logEnd(ep runtime.Endpoint, tx, rx int64, err error) {
	log := c.entry.m.log
	if !log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	c.mu.Lock()
	end, chain, cs, client, sni := c.aborted, c.chain, c.cluster, c.client, c.sni
	c.mu.Unlock()
	switch {
	case end != "":
	case err != nil:
		end = err.Error()
	default:
		end = "closed"
	}
	attrs := []slog.Attr{slog.String("listener", c.route.listener.Name())}
	if chain != nil {
		attrs = append(attrs, slog.String("cluster", cs.name), slog.String("filter_chain", chain.Name))
	}
	attrs = append(attrs,
		slog.String("client", c.down.RemoteAddr().String()),
		slog.Int64("tx_bytes", tx),
		slog.Int64("rx_bytes", rx),
		slog.Float64("duration_s", time.Since(c.start).Seconds()),
		slog.String("end", end),
	)
	if client.IsValid() && client.String() != c.down.RemoteAddr().String() {
		attrs = append(attrs, slog.String("source", client.String()))
	}
	if sni != "" {
		attrs = append(attrs, slog.String("sni", sni))
	}
	if ep.Addr.IsValid() {
		attrs = append(attrs, slog.String("upstream", ep.Addr.String()))
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
