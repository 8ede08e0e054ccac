//go:build linux

package proxy

import (
	"io"
	"net"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// copyIdleFree copies src to dst with splice(2), like io.Copy between two *net.TCPConn, but
// holds no splice pipe and no buffer while src has nothing to read. io.Copy keeps a pipe
// (two file descriptors and its kernel buffer) for as long as it waits for data, so an idle
// proxied connection would cost six descriptors instead of two.
//
// Each round waits in the netpoller until src is readable. While the peer sends little at a
// time (requests, replies, handshake messages) a round is one recv(2) into a pooled buffer
// and one write: the buffer is taken only once data is known to be there and goes back
// before the next wait. Once a recv fills the whole buffer the stream is bulk: the next
// rounds ask the kernel how many bytes are queued (SIOCINQ) and splice exactly those, which
// returns without waiting; the pipe goes back to Go's pool in between. A round that finds
// little queued goes back to recv. It returns the bytes copied and nil at EOF.
func copyIdleFree(dst, src *net.TCPConn) (int64, error) {
	rc, err := src.SyscallConn()
	if err != nil {
		return io.Copy(dst, src)
	}
	var (
		total int64
		lr    = io.LimitedReader{R: src}
		bulk  bool // the last round filled the buffer: splice the next one
	)
	for {
		var (
			avail int
			bp    *[]byte // holds got bytes read by recv when not bulk
			got   int
			eof   bool
			perr  error
		)
		err := rc.Read(func(fd uintptr) bool {
			if bulk {
				var one [1]byte
				n, e := recvRaw(fd, one[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
				switch {
				case e == unix.EAGAIN:
					return false // nothing yet: wait for readability
				case e != nil:
					perr = e
				case n == 0:
					eof = true
				default:
					avail, perr = unix.IoctlGetInt(int(fd), unix.SIOCINQ)
				}
				return true
			}
			b := smallBufs.Get().(*[]byte)
			n, e := recvRaw(fd, *b, unix.MSG_DONTWAIT)
			switch {
			case e == unix.EAGAIN:
				smallBufs.Put(b)
				return false // nothing yet: wait for readability, holding no buffer
			case e != nil:
				perr = e
			case n == 0:
				eof = true
			default:
				bp, got = b, n
				return true
			}
			smallBufs.Put(b)
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
		switch {
		case bp != nil:
			w, werr := dst.Write((*bp)[:got])
			smallBufs.Put(bp)
			n, err = int64(w), werr
			bulk = got == smallCopy
		case avail <= smallCopy:
			// A few bytes queued: one read and one write through a pooled buffer
			// cost fewer syscalls than splicing into a pipe and out of it.
			n, err = copySmall(dst, src, avail)
			bulk = false
		default:
			lr.N = int64(avail)
			n, err = dst.ReadFrom(&lr)
			if n == 0 && err == nil {
				// SIOCINQ counted an urgent byte (TCP MSG_OOB), where splice(2)
				// stops: recv rounds read past it, as read(2) does.
				bulk = false
			}
		}
		total += n
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// recvRaw is recv(2) on fd without the source address, which unix.Recvfrom allocates.
func recvRaw(fd uintptr, b []byte, flags int) (int, error) {
	n, _, e := unix.Syscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(flags), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// smallCopy is the buffer size of the recv rounds, and the most queued bytes a bulk round
// copies through a buffer instead of splice.
const smallCopy = 16 << 10

var smallBufs = sync.Pool{New: func() any { b := make([]byte, smallCopy); return &b }}

// copySmall moves up to n queued bytes from src to dst through a pooled buffer. It reads
// once: SIOCINQ is a hint (it counts an urgent byte that read(2) skips), and waiting for
// all n bytes could wait forever.
func copySmall(dst, src *net.TCPConn, n int) (int64, error) {
	bp := smallBufs.Get().(*[]byte)
	defer smallBufs.Put(bp)
	buf := (*bp)[:n]
	r, err := src.Read(buf)
	if r > 0 {
		w, werr := dst.Write(buf[:r])
		if werr != nil {
			return int64(w), werr
		}
	}
	return int64(r), err
}
