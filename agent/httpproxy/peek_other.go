//go:build !unix

package httpproxy

import "net"

// peeker cannot inspect a socket on this platform: a connection counts as usable, and a
// response that was not asked for is still caught by the unread-bytes check when the
// previous response ended.
type peeker struct{}

func newPeeker(net.Conn) *peeker { return nil }

func (p *peeker) unusable() bool { return false }
