package proxy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/flotilla-proxy/flotilla/agent/match"
	"github.com/flotilla-proxy/flotilla/agent/proxyproto"
	"github.com/flotilla-proxy/flotilla/agent/runtime"
	"github.com/flotilla-proxy/flotilla/agent/sniff"
)

// peekBufSize bounds what a peeking listener reads before it chooses a filter chain: the
// largest ClientHello the inspector accepts plus room for a PROXY header with some TLVs. A
// connection that needs more is closed and counted.
const peekBufSize = sniff.MaxClientHello + 4096

// peekBufs pools the peek buffers: a buffer is held only from accept until the peeked bytes
// are written upstream, so idle connections hold none.
var peekBufs = sync.Pool{New: func() any {
	b := make([]byte, 0, peekBufSize)
	return &b
}}

// Errors that end a connection before a chain is chosen. Each is counted once.
var (
	errNoChain      = errors.New("no filter chain matches")
	errProxyProto   = errors.New("bad PROXY protocol header")
	errClientHello  = errors.New("bad TLS ClientHello")
	errPrereadTimed = errors.New("listener filters timed out")
)

// preread is what the listener filters learned about a connection, and the chain it gets.
type preread struct {
	chain *runtime.FilterChain
	// src is the client and dst the address it connected to: the PROXY header's when the
	// listener reads one (and it is not LOCAL), else the TCP peer's and the local socket's.
	src, dst netip.AddrPort
	sni      string
	// buf holds the peeked bytes to send upstream (PROXY header dropped), data[off:]; nil
	// when the listener does not peek. It goes back to peekBufs after it is written.
	buf *[]byte
	off int
}

// peeked returns the bytes still to be written upstream.
func (p *preread) peeked() []byte {
	if p.buf == nil {
		return nil
	}
	return (*p.buf)[p.off:]
}

// release returns the peek buffer to the pool.
func (p *preread) release() {
	if p.buf != nil {
		*p.buf = (*p.buf)[:0]
		peekBufs.Put(p.buf)
		p.buf = nil
	}
}

// inspector is the state of one connection's listener filters while Peek feeds them bytes.
type inspector struct {
	proxyProto, tls bool

	pp      *proxyproto.Header
	ppLen   int
	hello   *sniff.ClientHello
	ppErr   error
	helloEr error
}

// match is the Peek callback: the PROXY header first (when enabled), then the ClientHello
// (when the inspector is on). It returns sniff.ErrNeedMore until both are done.
func (in *inspector) match(b []byte) error {
	if in.proxyProto && in.pp == nil {
		h, n, err := proxyproto.Parse(b)
		switch {
		case errors.Is(err, proxyproto.ErrNeedMore):
			return sniff.ErrNeedMore
		case err != nil:
			in.ppErr = err
			return err
		}
		in.pp, in.ppLen = h, n
	}
	if !in.tls {
		return nil
	}
	rest := b[in.ppLen:]
	if len(rest) == 0 {
		return sniff.ErrNeedMore
	}
	h, err := sniff.ParseClientHello(rest)
	switch {
	case errors.Is(err, sniff.ErrNeedMore):
		return err
	case errors.Is(err, sniff.ErrNotTLS):
		return nil // raw_buffer
	case err != nil:
		in.helloEr = err
		return err
	}
	in.hello = h
	return nil
}

// preread runs the listener's filters on the connection and chooses its chain. A listener
// without listener filters reads nothing: the chain is chosen from the addresses alone, so
// protocols in which the server speaks first work. It returns an error, already counted,
// when the connection must be closed.
func (c *conn) preread(l *runtime.Listener) (*preread, error) {
	p := &preread{
		src: addrPort(c.down.RemoteAddr()),
		dst: addrPort(c.down.LocalAddr()),
	}
	direct := p.src
	transport := runtime.TransportRaw
	var alpn []string
	if l.Peeks() {
		in := inspector{proxyProto: l.ProxyProtocol(), tls: l.TLSInspector()}
		p.buf = peekBufs.Get().(*[]byte)
		var deadline time.Time
		if t := l.FiltersTimeout(); t > 0 {
			deadline = c.start.Add(t)
		}
		b, err := sniff.Peek(c.down, (*p.buf)[:0], deadline, in.match)
		*p.buf = b
		if err := c.filterError(l, &in, err); err != nil {
			p.release()
			return nil, err
		}
		if in.pp != nil {
			p.off = in.ppLen
			if !in.pp.Local {
				p.src, p.dst = in.pp.Src, in.pp.Dst
			}
		}
		if in.hello != nil {
			transport = runtime.TransportTLS
			p.sni = in.hello.ServerName
			alpn = in.hello.ALPN
		}
	}
	p.chain = l.Match(&match.Input{
		DestinationIP:        p.dst.Addr().Unmap(),
		DestinationPort:      p.dst.Port(),
		ServerName:           p.sni,
		TransportProtocol:    transport,
		ApplicationProtocols: alpn,
		DirectSourceIP:       direct.Addr().Unmap(),
		SourceIP:             p.src.Addr().Unmap(),
	})
	if p.chain == nil {
		c.entry.stats.noChain.Inc()
		p.release()
		return nil, errNoChain
	}
	return p, nil
}

// filterError turns Peek's verdict into nil (go on) or the counted error that closes the
// connection.
func (c *conn) filterError(l *runtime.Listener, in *inspector, err error) error {
	st := &c.entry.stats
	switch {
	case err == nil:
		return nil
	case in.ppErr != nil:
		st.proxyProtoError.Inc()
		return fmt.Errorf("%w: %w", errProxyProto, in.ppErr)
	case in.helloEr != nil:
		st.clientHelloError.Inc()
		return fmt.Errorf("%w: %w", errClientHello, in.helloEr)
	case errors.Is(err, os.ErrDeadlineExceeded):
		st.preTimeout.Inc()
		if l.ContinueOnFiltersTimeout() {
			// Envoy: go on with what the filters found so far (no PROXY header: the peer's
			// addresses; no ClientHello: raw_buffer).
			in.hello = nil
			if in.pp == nil {
				in.ppLen = 0
			}
			return nil
		}
		return errPrereadTimed
	case errors.Is(err, sniff.ErrBufferFull):
		// The header or the hello does not fit in the buffer.
		if in.proxyProto && in.pp == nil {
			st.proxyProtoError.Inc()
			return fmt.Errorf("%w: %w", errProxyProto, err)
		}
		st.clientHelloError.Inc()
		return fmt.Errorf("%w: %w", errClientHello, err)
	}
	// The client closed or the connection failed before the filters were done.
	return err
}

// addrPort converts a TCP address, unmapping IPv4-mapped IPv6.
func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// writePreamble writes what goes upstream before the copy starts, in one write: the PROXY
// header the cluster wants (src = the client, dst = the address it connected to), then the
// peeked bytes. It returns the length of the header.
func writePreamble(up *net.TCPConn, version int, p *preread) (int, error) {
	var hdr []byte
	switch version {
	case 1:
		hdr = proxyproto.AppendV1(make([]byte, 0, proxyproto.MaxV1Len), p.src, p.dst)
	case 2:
		hdr = proxyproto.AppendV2(make([]byte, 0, 16+36), p.src, p.dst)
	}
	data := p.peeked()
	if len(hdr) == 0 && len(data) == 0 {
		return 0, nil
	}
	bufs := net.Buffers{hdr, data}
	_, err := bufs.WriteTo(up)
	return len(hdr), err
}
