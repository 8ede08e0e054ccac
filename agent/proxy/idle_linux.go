package proxy

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// idleTimeoutSupported reports whether idleFor works on this platform.
const idleTimeoutSupported = true

// idleFor returns how long ago any of the sockets last sent or received data, from the
// kernel's TCP_INFO (tcpi_last_data_sent, tcpi_last_data_recv; millisecond resolution). The
// copy path is never involved, so splice(2) keeps working and no byte is counted twice.
func idleFor(conns ...*net.TCPConn) (time.Duration, error) {
	idle := time.Duration(1<<63 - 1)
	for _, c := range conns {
		rc, err := c.SyscallConn()
		if err != nil {
			return 0, err
		}
		var (
			info *unix.TCPInfo
			ierr error
		)
		if err := rc.Control(func(fd uintptr) {
			info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		}); err != nil {
			return 0, err
		}
		if ierr != nil {
			return 0, ierr
		}
		idle = min(idle,
			time.Duration(info.Last_data_recv)*time.Millisecond,
			time.Duration(info.Last_data_sent)*time.Millisecond)
	}
	return idle, nil
}
