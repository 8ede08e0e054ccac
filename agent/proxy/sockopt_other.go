//go:build !unix

package proxy

import (
	"errors"
	"syscall"
)

// v6onlyControl refuses dual-stack sockets where the agent cannot set IPV6_V6ONLY; Go's
// "tcp6" listeners are IPv6-only by default.
func v6onlyControl(v6only bool) func(network, address string, c syscall.RawConn) error {
	if v6only {
		return nil
	}
	return func(string, string, syscall.RawConn) error {
		return errors.New("dual-stack (ipv4_compat) listeners are only supported on Unix systems")
	}
}

// reusePortControl is a no-op where SO_REUSEPORT is not available.
func reusePortControl(syscall.RawConn) error { return nil }
