//go:build !unix

package udpproxy

import "errors"

// errUnsupported is returned where non-blocking datagram I/O on a raw socket is not
// implemented: the UDP proxy runs on unix systems only.
var errUnsupported = errors.New("udpproxy: not supported on this platform")

func readNow(fd uintptr, b []byte) (int, error) { return 0, errUnsupported }

func writeNow(fd uintptr, b []byte) error { return errUnsupported }
