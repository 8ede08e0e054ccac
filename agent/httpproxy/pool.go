package httpproxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// The fast path for HTTP/1.1 upstreams. http.Transport hands every request between three
// goroutines (the caller's, a connection's writeLoop and readLoop); for the common request
// without a body, h1Pool writes the request and reads the response in the caller's
// goroutine on a pooled keep-alive connection, which costs about a fifth less CPU per
// request. It serves only requests that are safe to send again, so that a kept-alive
// connection the endpoint closed meanwhile is retried at once on a new one, as
// http.Transport does: GET, HEAD, OPTIONS and TRACE without a body, not upgrades.
// Everything else (bodies, upgrades, HTTP/2, TLS) goes through the cluster's
// http.Transport.
//
// Like http.Transport, the pool never lets bytes an endpoint sent beyond a response be read
// as the next request's response: a connection goes back to the pool only with nothing
// buffered and never after a HEAD or a bodiless status that declared a body, and an idle
// connection is peeked at (without blocking) before reuse and dropped if anything arrived.

// h1Pool keeps idle HTTP/1.1 connections per endpoint of one cluster.
type h1Pool struct {
	dial        func(ctx context.Context, network, addr string) (net.Conn, error)
	idleTimeout time.Duration // 0: no limit

	mu     sync.Mutex
	idle   map[netip.AddrPort][]*h1Conn // newest last
	closed bool
}

// h1Conn is one upstream HTTP/1.1 connection.
type h1Conn struct {
	nc       net.Conn
	lr       *limitReader // under br: bounds the response headers
	br       *bufio.Reader
	bw       *bufio.Writer
	peek     *peeker // checks the connection is quiet before reuse
	idleAt   time.Time
	reused   bool
	endpoint netip.AddrPort
	pool     *h1Pool
}

const (
	h1ReadBuffer  = 16 << 10
	h1WriteBuffer = 4 << 10
)

func newH1Pool(dial func(ctx context.Context, network, addr string) (net.Conn, error), idle time.Duration) *h1Pool {
	return &h1Pool{dial: dial, idleTimeout: idle, idle: map[netip.AddrPort][]*h1Conn{}}
}

// fastPathOK reports whether req may take the fast path.
func fastPathOK(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
	default:
		return false
	}
	return (req.Body == nil || req.Body == http.NoBody) && req.Header.Get("Upgrade") == "" &&
		len(req.TransferEncoding) == 0
}

// get returns an idle connection to ep, or dials one.
func (p *h1Pool) get(ctx context.Context, ep netip.AddrPort) (*h1Conn, error) {
	now := time.Now()
	p.mu.Lock()
	for conns := p.idle[ep]; len(conns) > 0; conns = p.idle[ep] {
		c := conns[len(conns)-1]
		conns[len(conns)-1] = nil
		p.idle[ep] = conns[:len(conns)-1]
		if p.idleTimeout > 0 && now.Sub(c.idleAt) > p.idleTimeout {
			p.mu.Unlock()
			c.nc.Close()
			p.mu.Lock()
			continue
		}
		p.mu.Unlock()
		if c.br.Buffered() > 0 || c.peek.unusable() {
			// The endpoint sent something nobody asked for (a 408 before closing, the
			// rest of a response that framed itself wrong) or closed the connection:
			// those bytes must never be read as the next request's response.
			c.nc.Close()
			p.mu.Lock()
			continue
		}
		c.reused = true
		return c, nil
	}
	p.mu.Unlock()
	nc, err := p.dial(ctx, "tcp", ep.String())
	if err != nil {
		return nil, err
	}
	lr := &limitReader{r: nc, n: -1}
	return &h1Conn{nc: nc, lr: lr, br: bufio.NewReaderSize(lr, h1ReadBuffer), bw: bufio.NewWriterSize(nc, h1WriteBuffer),
		peek: newPeeker(nc), endpoint: ep, pool: p}, nil
}

// put returns a connection whose response was read to the end.
func (p *h1Pool) put(c *h1Conn) {
	c.idleAt = time.Now()
	p.mu.Lock()
	if p.closed || len(p.idle[c.endpoint]) >= MaxIdleConnsPerEndpoint {
		p.mu.Unlock()
		c.nc.Close()
		return
	}
	p.idle[c.endpoint] = append(p.idle[c.endpoint], c)
	p.mu.Unlock()
}

// closeIdle closes every idle connection; with expiredOnly, only those idle for longer
// than the idle timeout, and those to endpoints not in current (when not nil).
func (p *h1Pool) closeIdle(expiredOnly bool, current map[netip.AddrPort]bool) {
	now := time.Now()
	var doomed []*h1Conn
	p.mu.Lock()
	for ep, conns := range p.idle {
		keep := conns[:0]
		for _, c := range conns {
			gone := current != nil && !current[ep]
			if expiredOnly && !gone && (p.idleTimeout <= 0 || now.Sub(c.idleAt) <= p.idleTimeout) {
				keep = append(keep, c)
				continue
			}
			doomed = append(doomed, c)
		}
		clear(conns[len(keep):])
		if len(keep) == 0 {
			delete(p.idle, ep)
		} else {
			p.idle[ep] = keep
		}
	}
	p.mu.Unlock()
	for _, c := range doomed {
		c.nc.Close()
	}
}

// close closes the idle connections and makes put close what comes back.
func (p *h1Pool) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.closeIdle(false, nil)
}

// roundTrip sends req (fastPathOK) to ep and reads the response headers, in the caller's
// goroutine. A kept-alive connection that fails before any byte of the response arrived
// is dropped and the request sent once more on a new connection (the endpoint closed it
// while it was idle). The response body returns the connection to the pool when it was
// read to the end and closed. Dial failures are *connectError.
func (p *h1Pool) roundTrip(req *http.Request, ep netip.AddrPort) (*http.Response, error) {
	ctx := req.Context()
	for {
		c, err := p.get(ctx, ep)
		if err != nil {
			return nil, err
		}
		resp, err := c.exchange(ctx, req)
		if err == nil {
			return resp, nil
		}
		c.nc.Close()
		if c.reused && ctx.Err() == nil && errors.Is(err, errStaleConn) {
			continue
		}
		return nil, err
	}
}

// maxResponseHeaderBytes bounds what the fast path reads from an endpoint before the end
// of the response headers (http.Transport's default MaxResponseHeaderBytes is 10 MiB).
const maxResponseHeaderBytes = 1 << 20

// errHeadersTooLarge: an endpoint sent more than maxResponseHeaderBytes of headers.
var errHeadersTooLarge = errors.New("upstream response headers too large")

// limitReader fails reads once n bytes were read; n < 0 means no limit.
type limitReader struct {
	r io.Reader
	n int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n < 0 {
		return l.r.Read(p)
	}
	if l.n == 0 {
		return 0, errHeadersTooLarge
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// errStaleConn: a kept-alive connection ended before the response started.
var errStaleConn = errors.New("upstream closed a kept-alive connection")

// exchange writes req and reads the response headers on c.
func (c *h1Conn) exchange(ctx context.Context, req *http.Request) (*http.Response, error) {
	stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(aLongTimeAgo) })
	if err := req.Write(c.bw); err != nil {
		stop()
		return nil, staleIf(c, err)
	}
	if err := c.bw.Flush(); err != nil {
		stop()
		return nil, staleIf(c, err)
	}
	var resp *http.Response
	c.lr.n = maxResponseHeaderBytes
	for {
		var err error
		resp, err = http.ReadResponse(c.br, req)
		if err != nil {
			stop()
			if ctx.Err() != nil {
				return nil, context.Cause(ctx)
			}
			return nil, staleIf(c, err)
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		// 1xx informational (103 Early Hints): not forwarded on this path.
		resp.Body.Close()
		if declaresBody(resp) {
			stop()
			return nil, errors.New("upstream sent a 1xx response with a body")
		}
	}
	c.lr.n = -1
	if resp.StatusCode == http.StatusSwitchingProtocols {
		stop()
		return nil, errors.New("upstream switched protocols without an upgrade request")
	}
	// After a HEAD, or a 204/304 that declared a body, the endpoint may send body bytes
	// that are not part of the response (and may not have arrived yet): the connection
	// cannot be trusted with another request.
	closeConn := resp.Close || req.Close || req.Method == http.MethodHead ||
		(resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusNotModified) && declaresBody(resp)
	if resp.Body == http.NoBody || resp.ContentLength == 0 {
		resp.Body = http.NoBody
		c.release(stop, closeConn)
		return resp, nil
	}
	resp.Body = &h1Body{rc: resp.Body, c: c, stop: stop, close: closeConn}
	return resp, nil
}

// declaresBody reports whether a response's headers announce a body (a non-zero
// Content-Length, or a Transfer-Encoding), whether or not its status allows one.
func declaresBody(resp *http.Response) bool {
	if len(resp.TransferEncoding) > 0 || len(resp.Header["Transfer-Encoding"]) > 0 {
		return true
	}
	for _, v := range resp.Header["Content-Length"] {
		if strings.TrimSpace(v) != "0" {
			return true
		}
	}
	return false
}

// staleIf wraps err as errStaleConn when c was kept alive and nothing of the response was
// read: the endpoint closed the idle connection.
func staleIf(c *h1Conn, err error) error {
	if c.reused && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isConnReset(err)) && c.br.Buffered() == 0 {
		return errors.Join(errStaleConn, err)
	}
	return err
}

func isConnReset(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe)
}

// aLongTimeAgo is a deadline in the past: it ends blocked reads and writes at once.
var aLongTimeAgo = time.Unix(1, 0)

// release gives the connection back to its pool, or closes it: when asked to, when the
// request's context ended while it was in use (its deadline is spoiled), or when the
// endpoint sent more than the response (unread bytes buffered), which would otherwise be
// taken as the next request's response.
func (c *h1Conn) release(stop func() bool, closeConn bool) {
	if !stop() || closeConn || c.br.Buffered() > 0 {
		c.nc.Close()
		return
	}
	c.pool.put(c)
}

// h1Body is a fast-path response body: read to its end and closed, its connection goes
// back to the pool; closed early, the connection is closed.
type h1Body struct {
	rc    io.ReadCloser
	c     *h1Conn
	stop  func() bool
	close bool
	eof   bool
	done  bool
}

func (b *h1Body) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

func (b *h1Body) Close() error {
	if b.done {
		return nil
	}
	b.done = true
	err := b.rc.Close()
	if b.eof {
		b.c.release(b.stop, b.close)
	} else {
		b.stop()
		b.c.nc.Close()
	}
	return err
}
