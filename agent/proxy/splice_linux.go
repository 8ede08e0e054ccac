//go:build linux

package proxy

import (
	"errors"
	"io"
	"net"

	"golang.org/x/sys/unix"
)

// copyIdleFree copies src to dst with splice(2), like io.Copy between two *net.TCPConn, but
// holds no splice pipe while src has nothing to read. io.Copy keeps a pipe (two file
// descriptors and its kernel buffer) for as long as it waits for data, so an idle proxied
// connection would cost six descriptors instead of two. Here each round waits in the
// netpoller until src is readable, asks the kernel how many bytes are queued (SIOCINQ) and
// splices exactly those, which returns without waiting; the pipe goes back to Go's pool in
// between. It returns the bytes copied and nil at EOF.
func copyIdleFree(dst, src *net.TCPConn) (int64, error) {
	rc, err := src.SyscallConn()
	if err != nil {
		return io.Copy(dst, src)
	}
	var (
		total int64
		lr    = io.LimitedReader{R: src}
	)
	for {
		var avail int
		var eof bool
		var perr error
		err := rc.Read(func(fd uintptr) bool {
			var one [1]byte
			n, _, e := unix.Recvfrom(int(fd), one[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
			switch {
			case errors.Is(e, unix.EAGAIN):
				return false // nothing yet: wait for readability
			case e != nil:
				perr = e
			case n == 0:
				eof = true
			default:
				avail, perr = unix.IoctlGetInt(int(fd), unix.SIOCINQ)
			}
			return true
		})
		if err == nil {
			err = perr
		}
		if err != nil {
			return total, err
		}
		if eof {
			return total, nil
		}
		lr.N = int64(avail)
		n, err := dst.ReadFrom(&lr)
		total += n
		if err != nil {
			return total, err
		}
	}
}
