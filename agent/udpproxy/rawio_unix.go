//go:build unix

package udpproxy

import "syscall"

// readNow reads one datagram from the non-blocking socket fd, or fails with EAGAIN when none is
// queued.
func readNow(fd uintptr, b []byte) (int, error) {
	return syscall.Read(int(fd), b)
}

// writeNow sends one datagram on the connected, non-blocking socket fd, or fails with EAGAIN
// when its send buffer is full: the caller drops the datagram rather than wait.
func writeNow(fd uintptr, b []byte) error {
	_, err := syscall.Write(int(fd), b)
	return err
}
