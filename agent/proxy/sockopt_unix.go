//go:build unix

package proxy

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// v6onlyControl returns a net.ListenConfig.Control function that sets IPV6_V6ONLY before
// bind: on, the socket refuses IPv4 clients; off, it serves IPv4 too (as ::ffff:a.b.c.d).
func v6onlyControl(v6only bool) func(network, address string, c syscall.RawConn) error {
	v := 0
	if v6only {
		v = 1
	}
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, v)
		}); err != nil {
			return err
		}
		return serr
	}
}

// reusePortControl sets SO_REUSEPORT before bind. It lets a listener move to an
// overlapping address (127.0.0.1:443 → [::]:443) while its old socket still
// drains, and a new agent process bind beside one that is draining. A socket
// of another program without SO_REUSEPORT on the port still makes bind fail.
func reusePortControl(c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return err
	}
	return serr
}
