//go:build !linux

package proxy

import (
	"errors"
	"net"
	"time"
)

// idleTimeoutSupported reports whether idleFor works on this platform. Elsewhere than on
// Linux the agent does not know, without wrapping connections on the copy path, when bytes
// last moved, so tcp_proxy idle_timeout is not enforced (Apply logs a warning).
const idleTimeoutSupported = false

func idleFor(...*net.TCPConn) (time.Duration, error) {
	return 0, errors.New("idle timeout is only supported on Linux")
}
