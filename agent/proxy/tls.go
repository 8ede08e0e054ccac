package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"

	"github.com/flotilla-proxy/flotilla/agent/runtime"
	"github.com/flotilla-proxy/flotilla/agent/tlsconf"
)

// TLS in the data plane. A filter chain with a tlsconf.Server terminates TLS: after the
// chain is chosen (on the peeked ClientHello's SNI when the listener inspects it), the proxy
// completes the handshake on the downstream socket, replaying the peeked bytes first, under
// the listener's handshake timeout. A cluster with a tlsconf.Client originates TLS: after
// the dial and the cluster's PROXY header (raw, before the handshake), a tls.Client
// handshake with the cluster's SNI, or the client's when the cluster has none (Flotilla's TCP
// auto_sni). Either side being TLS means the copy cannot splice: the bytes move through
// pooled buffers, and a direction's EOF half-closes its destination with close_notify and a
// TCP FIN. Handshake failures close the connection and are counted; their access log status
// is 400 downstream, 502 upstream.

// Errors of the TLS steps of a connection.
var (
	// errDownstreamTLS: the client's TLS handshake failed (status 400).
	errDownstreamTLS = errors.New("downstream TLS handshake failed")
	// errUpstreamTLS: the TLS handshake with the endpoint failed (status 502).
	errUpstreamTLS = errors.New("upstream TLS handshake failed")
)

// copyBufSize is the size of the pooled copy buffers: one TLS record of plaintext.
const copyBufSize = 16 << 10

// copyBufs pools the buffers of copies that cannot splice. A buffer is held only while a
// copy runs.
var copyBufs = sync.Pool{New: func() any {
	b := make([]byte, copyBufSize)
	return &b
}}

// replayConn reads the bytes the listener filters peeked before reading the socket again,
// so the TLS server sees the whole ClientHello. Writes and everything else go to the socket.
type replayConn struct {
	*net.TCPConn
	pre []byte
}

// Read returns the replayed bytes first.
func (c *replayConn) Read(b []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(b, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	return c.TCPConn.Read(b)
}

// terminate completes the TLS handshake of srv on the downstream connection, within the
// listener's handshake timeout (and until ctx is cancelled by an abort). The bytes p peeked
// are replayed first; terminate keeps what the handshake did not consume, so p's buffer can
// go back to the pool. It returns the TLS connection, also on failure (its ServerName is
// known once the ClientHello was read). A failure is counted on the listener and wraps
// errDownstreamTLS.
func (c *conn) terminate(ctx context.Context, srv *tlsconf.Server, l *runtime.Listener, p *preread) (*tls.Conn, error) {
	rc := &replayConn{TCPConn: c.down, pre: p.peeked()}
	tc := tls.Server(rc, srv.Config())
	hctx, cancel := context.WithTimeout(ctx, l.HandshakeTimeout())
	defer cancel()
	err := tc.HandshakeContext(hctx)
	// Whatever the handshake did not read stays readable after the pooled buffer is gone.
	rc.pre = append([]byte(nil), rc.pre...)
	if len(rc.pre) == 0 {
		rc.pre = nil
	}
	if err != nil {
		c.entry.stats.sslHandshakeError.Inc()
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
			err = fmt.Errorf("no handshake within %s", l.HandshakeTimeout())
		}
		return tc, fmt.Errorf("%w: %w", errDownstreamTLS, err)
	}
	c.entry.stats.sslHandshake.Inc()
	return tc, nil
}

// originate runs the TLS handshake of cluster cl's Client on up, sending serverName as SNI
// ("" when the cluster has a fixed sni or there is no client SNI to pass), within the
// cluster's connect timeout. A failure is counted as a connect failure and an upstream
// handshake error of the cluster, and wraps errUpstreamTLS.
func (c *conn) originate(ctx context.Context, cl *runtime.Cluster, cs *clusterState, up *net.TCPConn, clientSNI string) (*tls.Conn, error) {
	client := cl.TLS()
	sni := client.SNI()
	if sni == "" {
		sni = clientSNI
	}
	tc := tls.Client(up, client.Config(sni))
	hctx, cancel := context.WithTimeout(ctx, cl.ConnectTimeout())
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		cs.stats.connectFail.Inc()
		cs.stats.sslHandshakeError.Inc()
		return nil, fmt.Errorf("%w: cluster %q: %w", errUpstreamTLS, cl.Name(), err)
	}
	return tc, nil
}

// side is one end of a proxied connection: the socket, and the TLS connection over it when
// that end speaks TLS (nil for plain TCP).
type side struct {
	raw *net.TCPConn
	tls *tls.Conn
}

// rw returns what the copy reads and writes: the TLS connection, else the socket.
func (s side) rw() io.ReadWriter {
	if s.tls != nil {
		return s.tls
	}
	return s.raw
}

// closeWrite passes EOF on: close_notify on TLS, then the TCP FIN (tls.Conn.CloseWrite
// leaves the socket open).
func (s side) closeWrite() error {
	if s.tls != nil {
		if err := s.tls.CloseWrite(); err != nil {
			return err
		}
	}
	return s.raw.CloseWrite()
}

// pipeBuffered is pipe for connections with TLS on either side: the same half-close and
// error rules, with pooled buffers instead of splice. It returns the plaintext bytes sent to
// (tx) and received from (rx) the upstream, and the first error. A TLS-level failure after
// the downstream handshake (bad record, alert) is counted as ssl_connection_error.
func (c *conn) pipeBuffered(down, up side) (tx, rx int64, err error) {
	toUp := make(chan copyResult, 1)
	toDown := make(chan copyResult, 1)
	go proxyCopyBuffered(toUp, up, down)
	go proxyCopyBuffered(toDown, down, up)
	for range 2 {
		var r copyResult
		select {
		case r = <-toUp:
			tx = r.n
			if down.tls != nil && r.err != nil && r.srcErr && isTLSError(r.err) {
				c.entry.stats.sslConnectionError.Inc()
			}
		case r = <-toDown:
			rx = r.n
		}
		if r.err != nil && err == nil {
			err = r.err
			down.raw.Close()
			up.raw.Close()
		}
	}
	return tx, rx, err
}

// proxyCopyBuffered copies src to dst through a pooled buffer until src reaches EOF or
// fails, then half-closes dst and reports on done. It hides ReaderFrom and WriterTo so that
// io.CopyBuffer uses the pooled buffer rather than allocating its own.
func proxyCopyBuffered(done chan<- copyResult, dst, src side) {
	bp := copyBufs.Get().(*[]byte)
	n, err := copyBuffer(dst.rw(), src.rw(), *bp)
	copyBufs.Put(bp)
	srcErr := err != nil && !errors.Is(err, errWrite)
	if err == nil {
		err = dst.closeWrite()
	}
	done <- copyResult{n: n, err: err, srcErr: srcErr}
}

// errWrite is wrapped by copyBuffer's write errors, so that a read error (the source's
// fault) can be told from a write error.
var errWrite = errors.New("write")

// copyBuffer is io.CopyBuffer that tells read errors from write errors: a write error wraps
// errWrite.
func copyBuffer(dst io.Writer, src io.Reader, buf []byte) (int64, error) {
	var n int64
	for {
		nr, rerr := src.Read(buf)
		if nr > 0 {
			nw, werr := dst.Write(buf[:nr])
			n += int64(nw)
			if werr == nil && nw != nr {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				return n, fmt.Errorf("%w: %w", errWrite, werr)
			}
		}
		switch {
		case rerr == io.EOF:
			return n, nil
		case rerr != nil:
			return n, rerr
		}
	}
}

// isTLSError reports whether err is a failure of the TLS layer (a bad record, an alert)
// rather than of the socket (closed, reset, timed out).
func isTLSError(err error) bool {
	var re tls.RecordHeaderError
	var ae tls.AlertError
	if errors.As(err, &re) || errors.As(err, &ae) {
		return true
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return oe.Op == "local error" || oe.Op == "remote error"
	}
	return false
}
