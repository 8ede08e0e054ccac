package proxy

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"

	"github.com/flotilla-proxy/flotilla/agent/accesslog"
	"github.com/flotilla-proxy/flotilla/agent/httpproxy"
	"github.com/flotilla-proxy/flotilla/agent/runtime"
)

// HTTP listeners. A filter chain with an http_connection_manager (FilterChain.HTTP) is
// served by package httpproxy: conn.serve chooses the chain and terminates TLS as for L4,
// then serveHTTP hands the connection to the httpproxy.Server of the listener's chain, and
// waits until that Server is done with it, so connection limits, counters and draining
// work as for TCP. Apply gives every HTTP chain of every listener its Server (one per
// chain name, kept across Applies: an RDS or settings change applies to the next request,
// even on kept-alive connections), publishes the chain's route table, and shuts down the
// Servers of chains that are gone. A retired listener's Servers close their idle
// connections at once and finish the requests in flight; what is still open (WebSockets)
// is closed by the entry's drain deadline like any connection.

// errNoHTTPServer: an HTTP chain without its Server (a race with Apply removing it).
var errNoHTTPServer = errors.New("no HTTP server for the filter chain")

// httpServers are the Servers of one entry's HTTP chains, by chain name.
type httpServers struct {
	byChain atomic.Pointer[map[string]*httpproxy.Server]
}

// httpState is the Manager's HTTP side: the clusters' pools and retry budgets, the
// metrics, and the Servers of each entry.
type httpState struct {
	ups     *httpproxy.Upstreams
	metrics *httpproxy.Metrics
	entries sync.Map // *entry → *httpServers
}

// httpServer returns the Server of chain fc of entry e, or nil.
func (m *Manager) httpServer(e *entry, fc *runtime.FilterChain) *httpproxy.Server {
	v, ok := m.http.entries.Load(e)
	if !ok {
		return nil
	}
	return (*v.(*httpServers).byChain.Load())[fc.Name]
}

// applyHTTP installs g's HTTP clusters, then creates or updates the Servers of every HTTP
// chain of the entries, and retires the Servers of chains that are gone. Called by Apply
// with m.mu held, after the upstream registry knows g's clusters.
func (m *Manager) applyHTTP(g *runtime.Graph, entries map[string]*entry, logs map[string]*accesslog.Logger) {
	clusters := make([]httpproxy.Cluster, 0, len(g.Clusters()))
	for _, c := range g.Clusters() {
		percent, minConc := c.RetryBudget()
		clusters = append(clusters, httpproxy.Cluster{
			Name:                      c.Name(),
			ConnectTimeout:            c.ConnectTimeout(),
			TLS:                       c.TLS(),
			HTTP2:                     c.HTTP2(),
			IdleTimeout:               c.HTTPIdleTimeout(),
			RetryBudgetPercent:        percent,
			RetryBudgetMinConcurrency: int(minConc),
		})
	}
	m.http.ups.Update(clusters)
	for name, e := range entries {
		l := g.Listener(name)
		if !hasHTTP(l) {
			if _, ok := m.http.entries.Load(e); !ok {
				continue // an L4 listener, and it was one before
			}
		}
		var old map[string]*httpproxy.Server
		v, _ := m.http.entries.LoadOrStore(e, &httpServers{})
		hs := v.(*httpServers)
		if p := hs.byChain.Load(); p != nil {
			old = *p
		}
		next := map[string]*httpproxy.Server{}
		for _, fc := range append(l.Chains(), l.DefaultChain()) {
			if fc == nil || fc.HTTP == nil {
				continue
			}
			cfg := &httpproxy.Config{Listener: name, Manager: fc.HTTP, Table: g.RouteTable(fc.HTTP.RouteConfigName)}
			if al := fc.HTTP.AccessLog; al != nil {
				cfg.AccessLog = logs[al.Path]
			}
			if s := old[fc.Name]; s != nil {
				s.Update(cfg)
				next[fc.Name] = s
				continue
			}
			next[fc.Name] = httpproxy.New(cfg, httpproxy.Options{Upstreams: m.http.ups, Metrics: m.http.metrics, Logger: m.log})
		}
		hs.byChain.Store(&next)
		for chain, s := range old {
			if next[chain] != s {
				go m.drainHTTP(s, context.Background())
			}
		}
	}
}

// hasHTTP reports whether a listener has an HTTP chain.
func hasHTTP(l *runtime.Listener) bool {
	for _, fc := range append(l.Chains(), l.DefaultChain()) {
		if fc != nil && fc.HTTP != nil {
			return true
		}
	}
	return false
}

// retireHTTP shuts down the Servers of a retired entry: idle connections close now,
// requests in flight finish within the drain timeout (then the entry closes what is left).
func (m *Manager) retireHTTP(e *entry, ctx context.Context) {
	v, ok := m.http.entries.LoadAndDelete(e)
	if !ok {
		return
	}
	for _, s := range *v.(*httpServers).byChain.Load() {
		go m.drainHTTP(s, ctx)
	}
}

// drainHTTP shuts s down within the drain timeout (or until ctx is done), then closes it.
func (m *Manager) drainHTTP(s *httpproxy.Server, ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, m.drain)
	defer cancel()
	s.Shutdown(ctx)
	s.Close()
}

// serveHTTP is the end of serve for a connection whose chain speaks HTTP: TLS termination
// when the chain has it, then the listener's httpproxy.Server, until it is done with the
// connection.
func (c *conn) serveHTTP(ctx context.Context, o *outcome, p *preread) {
	srv := c.entry.m.httpServer(c.entry, p.chain)
	if srv == nil {
		o.err = errNoHTTPServer
		return
	}
	info := httpproxy.ConnInfo{Client: p.src, Server: p.dst, FilterChain: p.chain.Name}
	var nc net.Conn = c.down
	if tlsSrv := p.chain.TLS; tlsSrv != nil {
		tc, err := c.terminate(ctx, tlsSrv, c.route.listener, p)
		p.release()
		if err != nil {
			o.err = err
			return
		}
		nc, info.TLS = tc, true
	} else if pre := p.peeked(); len(pre) > 0 {
		// Bytes the listener filters peeked (after a PROXY header) start the first request.
		nc = &replayConn{TCPConn: c.down, pre: bytes.Clone(pre)}
	}
	p.release()
	c.mu.Lock()
	c.httpServed = true
	c.mu.Unlock()
	srv.ServeConn(nc, info)
}
