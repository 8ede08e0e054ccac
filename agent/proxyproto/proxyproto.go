// Package proxyproto reads and writes the PROXY protocol header (versions 1
// and 2, haproxy's proxy-protocol.txt) that carries a proxied connection's
// original client address from one proxy to the next.
//
// Parse is a pure parser over a caller-owned buffer: it never reads from a
// connection and never blocks, and given an incomplete prefix of a header
// it returns ErrNeedMore so the caller reads more and tries again.
// AppendV1 and AppendV2 encode the header an agent sends to an upstream
// before the client's bytes.
package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
)

// ErrNeedMore says b is a valid prefix of a PROXY header that ends too soon:
// read more bytes and call again.
var ErrNeedMore = errors.New("proxyproto: need more bytes")

// ErrNoHeader says b cannot start a v1 or v2 header.
var ErrNoHeader = errors.New("proxyproto: no PROXY protocol header")

// Header is a parsed PROXY protocol header.
type Header struct {
	Version  int            // 1 or 2
	Local    bool           // v2 LOCAL command (health checks): no addresses; v1 "UNKNOWN" also sets it
	Src, Dst netip.AddrPort // the original client and the address it connected to
	// TLVs are kept raw for v2 (type, value) so nothing is lost; none are
	// interpreted. They do not alias the parsed buffer.
	TLVs []TLV
}

// TLV is one v2 type-length-value record, kept raw.
type TLV struct {
	Type  byte
	Value []byte
}

const (
	// MaxV1Len is the longest v1 header, CRLF included.
	MaxV1Len = 107
	// MaxV2Len is the longest v2 header: 16 fixed bytes and a 16-bit length.
	MaxV2Len = 16 + 0xffff
)

// v2Sig starts every v2 header.
var v2Sig = [12]byte{'\r', '\n', '\r', '\n', 0, '\r', '\n', 'Q', 'U', 'I', 'T', '\n'}

// v1Sig starts every v1 header.
const v1Sig = "PROXY "

const (
	v2HeaderLen = 16

	cmdLocal = 0x0
	cmdProxy = 0x1

	famUnspec = 0x0
	famInet   = 0x1
	famInet6  = 0x2
	famUnix   = 0x3

	protoStream = 0x1

	lenInet  = 12
	lenInet6 = 36
	lenUnix  = 216
)

// Parse parses a v1 or v2 header at the start of b. It returns the header
// and its length in bytes (the caller drops them before proxying),
// ErrNeedMore on an incomplete prefix, ErrNoHeader when b is not a PROXY
// header, or a descriptive error when it is a malformed one. v1 lines are at
// most MaxV1Len bytes; v2 headers at most MaxV2Len. It never panics.
//
// A v2 PROXY command for AF_UNSPEC or AF_UNIX addresses, which have no
// netip form, yields a Local header (use the connection's own addresses),
// as the spec allows.
func Parse(b []byte) (h *Header, n int, err error) {
	if len(b) == 0 {
		return nil, 0, ErrNeedMore
	}
	switch b[0] {
	case v2Sig[0]:
		if !bytes.HasPrefix(v2Sig[:], b[:min(len(b), len(v2Sig))]) {
			return nil, 0, ErrNoHeader
		}
		if len(b) < len(v2Sig) {
			return nil, 0, ErrNeedMore
		}
		return parseV2(b)
	case v1Sig[0]:
		if !bytes.HasPrefix([]byte(v1Sig), b[:min(len(b), len(v1Sig))]) {
			return nil, 0, ErrNoHeader
		}
		if len(b) < len(v1Sig) {
			return nil, 0, ErrNeedMore
		}
		return parseV1(b)
	}
	return nil, 0, ErrNoHeader
}

// parseV1 parses a v1 line; b starts with "PROXY ".
func parseV1(b []byte) (*Header, int, error) {
	end := -1
	for i, c := range b[:min(len(b), MaxV1Len)] {
		if c == '\n' {
			if i == 0 || b[i-1] != '\r' {
				return nil, 0, errors.New("proxyproto: v1 line ends without CR")
			}
			end = i + 1
			break
		}
		if i > 0 && b[i-1] == '\r' {
			return nil, 0, errors.New("proxyproto: v1 line has a CR not followed by LF")
		}
		if c != '\r' && (c < 0x20 || c > 0x7e) {
			return nil, 0, fmt.Errorf("proxyproto: v1 line has byte %#02x", c)
		}
	}
	if end < 0 {
		if len(b) >= MaxV1Len {
			return nil, 0, fmt.Errorf("proxyproto: v1 line longer than %d bytes", MaxV1Len)
		}
		return nil, 0, ErrNeedMore
	}
	line := b[len(v1Sig) : end-2]
	h := &Header{Version: 1}

	proto, rest, _ := bytes.Cut(line, []byte(" "))
	switch string(proto) {
	case "UNKNOWN":
		// The rest of the line, if any, is to be ignored.
		h.Local = true
		return h, end, nil
	case "TCP4", "TCP6":
	default:
		return nil, 0, fmt.Errorf("proxyproto: v1 protocol %q, want TCP4, TCP6 or UNKNOWN", proto)
	}
	var f [4][]byte
	for i := range f {
		var ok bool
		f[i], rest, ok = bytes.Cut(rest, []byte(" "))
		if ok != (i < len(f)-1) {
			return nil, 0, fmt.Errorf("proxyproto: v1 %s line wants 4 fields separated by single spaces", proto)
		}
	}
	v4 := string(proto) == "TCP4"
	src, err := v1Addr(f[0], v4)
	if err != nil {
		return nil, 0, fmt.Errorf("proxyproto: v1 source address: %w", err)
	}
	dst, err := v1Addr(f[1], v4)
	if err != nil {
		return nil, 0, fmt.Errorf("proxyproto: v1 destination address: %w", err)
	}
	sport, err := v1Port(f[2])
	if err != nil {
		return nil, 0, fmt.Errorf("proxyproto: v1 source port: %w", err)
	}
	dport, err := v1Port(f[3])
	if err != nil {
		return nil, 0, fmt.Errorf("proxyproto: v1 destination port: %w", err)
	}
	h.Src = netip.AddrPortFrom(src, sport)
	h.Dst = netip.AddrPortFrom(dst, dport)
	return h, end, nil
}

func v1Addr(b []byte, v4 bool) (netip.Addr, error) {
	a, err := netip.ParseAddr(string(b))
	switch {
	case err != nil:
		return netip.Addr{}, err
	case a.Zone() != "":
		return netip.Addr{}, fmt.Errorf("%q has a zone", b)
	case v4 && !a.Is4():
		return netip.Addr{}, fmt.Errorf("%q is not an IPv4 address", b)
	case !v4 && !a.Is6():
		return netip.Addr{}, fmt.Errorf("%q is not an IPv6 address", b)
	}
	return a, nil
}

// v1Port parses a decimal port in [0, 65535] without leading zeros.
func v1Port(b []byte) (uint16, error) {
	if len(b) == 0 || len(b) > 5 || (len(b) > 1 && b[0] == '0') {
		return 0, fmt.Errorf("bad port %q", b)
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("bad port %q", b)
		}
		n = n*10 + int(c-'0')
	}
	if n > 0xffff {
		return 0, fmt.Errorf("port %d out of range", n)
	}
	return uint16(n), nil
}

// headerAlloc holds a Header and room for a few TLVs, so a v2 header with
// TLVs costs one allocation for these and one for the TLV bytes.
type headerAlloc struct {
	Header
	tlvs [4]TLV
}

// parseV2 parses a v2 header; b starts with the 12-byte signature.
func parseV2(b []byte) (*Header, int, error) {
	if len(b) < v2HeaderLen {
		// Check what we have of the version/command and family bytes so
		// garbage fails early.
		if len(b) > 12 {
			if err := checkVerCmd(b[12]); err != nil {
				return nil, 0, err
			}
		}
		return nil, 0, ErrNeedMore
	}
	if err := checkVerCmd(b[12]); err != nil {
		return nil, 0, err
	}
	cmd := b[12] & 0x0f
	fam, proto := b[13]>>4, b[13]&0x0f
	length := int(binary.BigEndian.Uint16(b[14:16]))
	if fam > famUnix {
		return nil, 0, fmt.Errorf("proxyproto: v2 address family %#x", fam)
	}
	if proto > 0x2 {
		return nil, 0, fmt.Errorf("proxyproto: v2 transport protocol %#x", proto)
	}
	n := v2HeaderLen + length
	if len(b) < n {
		return nil, 0, ErrNeedMore
	}
	body := b[v2HeaderLen:n]

	a := &headerAlloc{}
	h := &a.Header
	h.Version = 2

	var addrLen int
	switch fam {
	case famInet:
		addrLen = lenInet
	case famInet6:
		addrLen = lenInet6
	case famUnix:
		addrLen = lenUnix
	}
	if len(body) < addrLen {
		if cmd == cmdLocal {
			// The receiver must discard a LOCAL header's address block.
			h.Local = true
			return h, n, nil
		}
		return nil, 0, fmt.Errorf("proxyproto: v2 length %d is too short for address family %#x", length, fam)
	}
	addrs, tlvs := body[:addrLen], body[addrLen:]

	switch {
	case cmd == cmdLocal:
		h.Local = true
	case fam == famUnspec || fam == famUnix:
		h.Local = true
	case proto != protoStream:
		return nil, 0, fmt.Errorf("proxyproto: v2 transport protocol %#x, want STREAM", proto)
	case fam == famInet:
		h.Src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(addrs[0:4])), binary.BigEndian.Uint16(addrs[8:10]))
		h.Dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(addrs[4:8])), binary.BigEndian.Uint16(addrs[10:12]))
	case fam == famInet6:
		h.Src = netip.AddrPortFrom(netip.AddrFrom16([16]byte(addrs[0:16])), binary.BigEndian.Uint16(addrs[32:34]))
		h.Dst = netip.AddrPortFrom(netip.AddrFrom16([16]byte(addrs[16:32])), binary.BigEndian.Uint16(addrs[34:36]))
	}

	if err := parseTLVs(a, tlvs); err != nil {
		if cmd == cmdLocal {
			// A LOCAL header's contents are to be discarded; keep the
			// connection and drop what cannot be read.
			h.TLVs = nil
			return h, n, nil
		}
		return nil, 0, err
	}
	return h, n, nil
}

func checkVerCmd(c byte) error {
	if c>>4 != 2 {
		return fmt.Errorf("proxyproto: v2 version %d, want 2", c>>4)
	}
	if cmd := c & 0x0f; cmd != cmdLocal && cmd != cmdProxy {
		return fmt.Errorf("proxyproto: v2 command %#x, want LOCAL or PROXY", cmd)
	}
	return nil
}

// parseTLVs fills a.TLVs from b, copying the values out of b once.
func parseTLVs(a *headerAlloc, b []byte) error {
	for rest := b; len(rest) > 0; {
		if len(rest) < 3 {
			return fmt.Errorf("proxyproto: v2 TLV truncated: %d trailing bytes", len(rest))
		}
		l := int(binary.BigEndian.Uint16(rest[1:3]))
		if len(rest) < 3+l {
			return fmt.Errorf("proxyproto: v2 TLV type %#02x: length %d exceeds the %d bytes left", rest[0], l, len(rest)-3)
		}
		rest = rest[3+l:]
	}
	if len(b) == 0 {
		return nil
	}
	own := bytes.Clone(b)
	a.TLVs = a.tlvs[:0]
	for rest := own; len(rest) > 0; {
		l := int(binary.BigEndian.Uint16(rest[1:3]))
		a.TLVs = append(a.TLVs, TLV{Type: rest[0], Value: rest[3 : 3+l : 3+l]})
		rest = rest[3+l:]
	}
	return nil
}

// AppendV1 appends the v1 header for a proxied TCP connection from src to
// dst2: TCP4 when both are IPv4 (or IPv4-mapped IPv6), TCP6 otherwise, and
// "PROXY UNKNOWN" when either is not valid. Zones are dropped.
func AppendV1(dst []byte, src, dst2 netip.AddrPort) []byte {
	if !src.IsValid() || !dst2.IsValid() {
		return append(dst, "PROXY UNKNOWN\r\n"...)
	}
	sa, da, v4 := pair(src.Addr(), dst2.Addr())
	if v4 {
		dst = append(dst, "PROXY TCP4 "...)
	} else {
		dst = append(dst, "PROXY TCP6 "...)
	}
	dst = sa.AppendTo(dst)
	dst = append(dst, ' ')
	dst = da.AppendTo(dst)
	dst = append(dst, ' ')
	dst = strconv.AppendUint(dst, uint64(src.Port()), 10)
	dst = append(dst, ' ')
	dst = strconv.AppendUint(dst, uint64(dst2.Port()), 10)
	return append(dst, '\r', '\n')
}

// AppendV2 appends the v2 header for a proxied TCP connection from src to
// dst2: the PROXY command with STREAM over AF_INET when both addresses are
// IPv4 (or IPv4-mapped IPv6), AF_INET6 otherwise. When either is not valid
// it appends a LOCAL header with no addresses. It adds no TLVs.
func AppendV2(dst []byte, src, dst2 netip.AddrPort) []byte {
	dst = append(dst, v2Sig[:]...)
	if !src.IsValid() || !dst2.IsValid() {
		return append(dst, 0x20|cmdLocal, famUnspec<<4, 0, 0)
	}
	sa, da, v4 := pair(src.Addr(), dst2.Addr())
	if v4 {
		dst = append(dst, 0x20|cmdProxy, famInet<<4|protoStream, 0, lenInet)
		s, d := sa.As4(), da.As4()
		dst = append(dst, s[:]...)
		dst = append(dst, d[:]...)
	} else {
		dst = append(dst, 0x20|cmdProxy, famInet6<<4|protoStream, 0, lenInet6)
		s, d := sa.As16(), da.As16()
		dst = append(dst, s[:]...)
		dst = append(dst, d[:]...)
	}
	dst = binary.BigEndian.AppendUint16(dst, src.Port())
	return binary.BigEndian.AppendUint16(dst, dst2.Port())
}

// pair returns the two addresses as both IPv4 (v4 true) when both are IPv4
// or IPv4-mapped IPv6, or else both as IPv6 without zones.
func pair(s, d netip.Addr) (netip.Addr, netip.Addr, bool) {
	if su, du := s.Unmap(), d.Unmap(); su.Is4() && du.Is4() {
		return su, du, true
	}
	return netip.AddrFrom16(s.As16()), netip.AddrFrom16(d.As16()), false
}
