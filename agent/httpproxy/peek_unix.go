//go:build unix

package httpproxy

import (
	"errors"
	"net"
	"syscall"
)

// peeker tells whether an idle keep-alive connection has something to read (bytes the
// endpoint sent unasked, such as a 408 before it closes) or has ended (EOF, an error):
// either way it must not carry another request. It peeks without blocking and without
// consuming (MSG_PEEK|MSG_DONTWAIT). Built once per connection, so that the check does not
// allocate.
type peeker struct {
	rc   syscall.RawConn
	buf  [1]byte
	err  error
	peek func(fd uintptr) bool
}

// newPeeker returns a peeker for nc, or nil when nc is not a socket it can inspect.
func newPeeker(nc net.Conn) *peeker {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	p := &peeker{rc: rc}
	p.peek = func(fd uintptr) bool {
		_, _, p.err = syscall.Recvfrom(int(fd), p.buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true // never wait for readability
	}
	return p
}

// unusable reports whether the connection has data or EOF to read, or is broken. A nil
// peeker (a connection it cannot inspect) says usable. Not safe for concurrent use.
func (p *peeker) unusable() bool {
	if p == nil {
		return false
	}
	if err := p.rc.Read(p.peek); err != nil {
		return true
	}
	// No error: unsolicited bytes, or 0 bytes at EOF. EAGAIN: nothing to read, the one
	// usable case. Anything else: a broken connection.
	return !errors.Is(p.err, syscall.EAGAIN) && !errors.Is(p.err, syscall.EWOULDBLOCK)
}
