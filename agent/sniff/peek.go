package sniff

import (
	"errors"
	"fmt"
	"net"
	"time"
)

// ErrBufferFull says Peek filled its buffer before match had enough bytes.
var ErrBufferFull = errors.New("sniff: peek buffer full")

// Peek reads from conn into buf (appending, never beyond cap(buf)) until
// match says it has enough (returns nil or an error other than ErrNeedMore),
// the deadline passes, or buf is full. It returns the bytes read so far
// (buf extended) and match's verdict. A timeout returns an error wrapping
// os.ErrDeadlineExceeded, a full buffer one wrapping ErrBufferFull, and a
// read error (io.EOF included) is returned wrapped. The caller writes the
// returned bytes upstream before splicing the rest.
//
// match sees the whole of the bytes so far on each call and must not keep
// them; it reports "not yet" with this package's ErrNeedMore (a matcher
// built on another parser maps that parser's own need-more error to it).
// If buf already holds bytes, match sees them before anything is read.
//
// Peek sets conn's read deadline to deadline (the zero time means none) and
// clears it before returning. It allocates nothing beyond buf on success.
func Peek(conn net.Conn, buf []byte, deadline time.Time, match func(b []byte) error) ([]byte, error) {
	if len(buf) > 0 {
		if err := match(buf); !errors.Is(err, ErrNeedMore) {
			return buf, err
		}
	}
	if err := conn.SetReadDeadline(deadline); err != nil {
		return buf, fmt.Errorf("sniff: peek: set deadline: %w", err)
	}
	defer conn.SetReadDeadline(time.Time{})
	for {
		if len(buf) == cap(buf) {
			return buf, fmt.Errorf("sniff: peek: %w after %d bytes", ErrBufferFull, len(buf))
		}
		n, rerr := conn.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if n > 0 {
			if err := match(buf); !errors.Is(err, ErrNeedMore) {
				return buf, err
			}
		}
		if rerr != nil {
			return buf, fmt.Errorf("sniff: peek after %d bytes: %w", len(buf), rerr)
		}
	}
}
