//go:build !unix

package httpproxy

import "net"

// idleConnUnusable cannot peek at a socket on this platform: the connection counts as
// usable, and a response that was not asked for is still caught by the unread-bytes check
// when the previous response ended.
func idleConnUnusable(net.Conn) bool { return false }
