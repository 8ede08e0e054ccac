//go:build linux

package proxy

import (
	"errors"
	"io"
	"net"
	"sync"

	"golang.org/x/sys/unix"
)

// copyIdleFree copies src to dst with splice(2), like io.Copy between two *net.TCPConn, but
// holds no splice pipe while src has nothing to read. io.Copy keeps a pipe (two file
// descriptors and its kernel buffer) for as long as it waits for data, so an idle proxied
// connection would cost six descriptors instead of two. Here each round waits in the
// netpoller until src is readable, asks the kernel how many bytes are queued (SIOCINQ) and
// splices exactly those, which returns without waiting; the pipe goes back to Go's pool in
// between. Small amounts go through a pooled buffer instead (copySmall). It returns the
// bytes copied and nil at EOF.
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
		var n int64
		if avail <= smallCopy {
			// A few bytes (a request, a handshake message): one read and one
			// write through a pooled buffer cost fewer syscalls than splicing
			// into a pipe and out of it.
			n, err = copySmall(dst, src, avail)
		} else {
			lr.N = int64(avail)
			n, err = dst.ReadFrom(&lr)
		}
		total += n
		if err != nil {
			return total, err
		}
	}
}

// smallCopy is the most queued bytes copied through a buffer instead of splice.
const smallCopy = 16 << 10

var smallBufs = sync.Pool{New: func() any { b := make([]byte, smallCopy); return &b }}

// copySmall moves n queued bytes from src to dst through a pooled buffer.
func copySmall(dst, src *net.TCPConn, n int) (int64, error) {
	bp := smallBufs.Get().(*[]byte)
	defer smallBufs.Put(bp)
	buf := (*bp)[:n]
	r, err := io.ReadFull(src, buf)
	if r > 0 {
		w, werr := dst.Write(buf[:r])
		if werr != nil {
			return int64(w), werr
		}
	}
	return int64(r), err
}
