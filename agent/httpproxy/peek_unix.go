//go:build unix

package httpproxy

import (
	"errors"
	"net"
	"syscall"
)

// idleConnUnusable reports whether an idle keep-alive connection has something to read
// (bytes the endpoint sent unasked, such as a 408 before it closes) or has ended (EOF, an
// error): either way it must not carry another request. It peeks without blocking and
// without consuming (MSG_PEEK|MSG_DONTWAIT), as http.Transport's readLoop would notice.
// A connection it cannot inspect counts as usable.
func idleConnUnusable(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	var (
		buf  [1]byte
		rerr error
	)
	if err := rc.Read(func(fd uintptr) bool {
		_, _, rerr = syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true // never wait for readability
	}); err != nil {
		return true
	}
	// No error: unsolicited bytes, or 0 bytes at EOF. EAGAIN: nothing to read, the one
	// usable case. Anything else: a broken connection.
	return !errors.Is(rerr, syscall.EAGAIN) && !errors.Is(rerr, syscall.EWOULDBLOCK)
}
