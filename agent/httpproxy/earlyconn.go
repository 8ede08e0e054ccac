package httpproxy

import (
	"errors"
	"net"
	"sync/atomic"
	"syscall"
)

// earlyConn is an upstream HTTP/1.1 connection as http.Transport sees it (plain, or under
// TLS): once a write fails because the upstream reset the connection, later writes report
// success and send nothing.
//
// An upstream that answers before it has read the whole request body (a 413 for an
// upload, a 401, an early 200) and then closes its connection resets it, the body's bytes
// being unread. The transport, still sending the body, would get the write error and close
// the connection at once: the request failed with a 502 when the response had not been
// parsed yet, or the response was cut in the middle when it was streaming. The response
// the upstream sent before its reset is still in the socket's receive buffer, and the
// transport now reads it whole, as Envoy hands on such a response (nginx 1.22 with
// proxy_request_buffering off answers 502 when its write fails first). The transport reads
// the rest of the request body into the void until the response has been copied to the
// client (upstreamBody.Close then cancels the upstream request, which ends the write).
//
// The read side ends the connection: after the response, the next read gets the reset,
// so the transport drops the connection (at once, when it was put back in the pool; a
// request that takes it in that moment fails as on any keep-alive connection the upstream
// closes).
//
// Writes are dropped only while the read side has not ended: once a read returned an
// error or EOF (the response was read, or there is none), writes fail with the write's
// error again. An upgraded connection (a WebSocket) whose upstream went away thus fails
// the client's writes and closes, and a reused connection the upstream had reset fails
// the request's write as the transport expects (it retries what it may).
type earlyConn struct {
	net.Conn
	reset    atomic.Pointer[error] // a write failed with a reset: writes are dropped
	readDone atomic.Bool           // a read returned an error: writes fail
	closed   atomic.Bool           // Close was called: writes fail, as on any closed conn
}

func (c *earlyConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.readDone.Store(true)
	}
	return n, err
}

func (c *earlyConn) Write(p []byte) (int, error) {
	if reset := c.reset.Load(); reset != nil {
		switch {
		case c.closed.Load():
			return 0, net.ErrClosed
		case c.readDone.Load():
			return 0, *reset
		}
		return len(p), nil
	}
	n, err := c.Conn.Write(p)
	if err != nil && !c.readDone.Load() && (errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)) {
		c.reset.Store(&err)
		return len(p), nil
	}
	return n, err
}

// Close closes the connection; the transport's write of a request body, dropped since the
// reset, fails at its next write.
func (c *earlyConn) Close() error {
	c.closed.Store(true)
	return c.Conn.Close()
}
