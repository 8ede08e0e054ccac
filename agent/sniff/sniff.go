// Package sniff reads what a listener needs to route a TLS connection (SNI,
// ALPN, offered versions) from the client's first bytes without terminating
// TLS, the way Envoy's tls_inspector and nginx's ssl_preread do.
//
// ParseClientHello is a pure parser over a caller-owned buffer: it never
// reads from a connection and never blocks. Given an incomplete prefix of a
// ClientHello it returns ErrNeedMore, so the caller reads more and tries
// again; Peek is that loop over a net.Conn, bounded by a buffer and a
// deadline. The bytes peeked stay with the caller, who writes them upstream
// before splicing the rest of the connection.
package sniff

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/cryptobyte"
)

// ErrNeedMore says b is a valid prefix of a ClientHello that ends too soon:
// read more bytes and call again.
var ErrNeedMore = errors.New("sniff: need more bytes")

// ErrNotTLS says the first bytes are not a TLS handshake record, so the
// connection is not TLS (or is SSLv2, which is not supported).
var ErrNotTLS = errors.New("sniff: not a TLS handshake")

// ClientHello is what routing needs from a TLS ClientHello.
//
// ParseClientHello returns it by pointer; the slices do not alias the input
// buffer, which the caller may reuse at once.
type ClientHello struct {
	ServerName string   // SNI host_name, lower-cased, no trailing dot; "" when absent
	ALPN       []string // protocols offered, in order
	Versions   []uint16 // supported_versions if present (as sent, GREASE included), else the legacy version
}

const (
	recordHeaderLen = 5
	handshakeHeader = 4

	// maxRecordPayload is the largest TLSPlaintext fragment (RFC 8446 §5.1).
	maxRecordPayload = 1 << 14

	// maxHelloBody bounds the ClientHello handshake body we accept. Real
	// hellos are 0.5–2 KiB (X25519MLKEM768 adds ~1.2 KiB); 16 KiB leaves
	// room for large session tickets and padding.
	maxHelloBody = 16 * 1024

	// maxRecords is how many records a largest ClientHello may be
	// fragmented into and still fit in MaxClientHello. More records are
	// fine as long as the bytes fit.
	maxRecords = 4
)

// MaxClientHello is the most bytes a caller needs to buffer: a ClientHello
// handshake message of up to 16 KiB of body (plus its 4-byte header) carried
// in up to 4 records of 5-byte headers (smaller hellos may use more records).
// For any b with len(b) >= MaxClientHello, ParseClientHello never returns
// ErrNeedMore: a hello that is larger, or fragmented into so many records
// that it does not fit, is an error.
const MaxClientHello = handshakeHeader + maxHelloBody + maxRecords*recordHeaderLen

const (
	typeHandshake   = 22
	typeClientHello = 1

	extServerName        = 0
	extALPN              = 16
	extSupportedVersions = 43

	sniHostName = 0
)

// ParseClientHello parses the ClientHello at the start of b, which holds raw
// bytes from the client: one or more TLS records (a ClientHello may span
// several records, and a large one spans records and TCP segments). It
// returns ErrNeedMore when b is an incomplete prefix, ErrNotTLS when b does
// not start with a handshake record, or a descriptive error for a malformed
// hello. Bytes after the ClientHello are ignored. It never panics.
//
// It allocates the returned ClientHello and one string for the names in it,
// plus one buffer to reassemble a hello that spans records.
func ParseClientHello(b []byte) (*ClientHello, error) {
	msg, err := handshakeMessage(b)
	if err != nil {
		return nil, err
	}
	return parseHello(msg)
}

// handshakeMessage returns the body of the ClientHello handshake message at
// the start of b, reassembled from as many handshake records as it spans. It
// aliases b when the message fits in the first record.
func handshakeMessage(b []byte) ([]byte, error) {
	// The first two bytes decide whether this is TLS at all. The minor
	// version byte is checked loosely, like crypto/tls: record versions are
	// 3.x in every TLS version, and clients commonly send 3.1 for TLS 1.3.
	if len(b) >= 1 && b[0] != typeHandshake {
		return nil, ErrNotTLS
	}
	if len(b) >= 2 && b[1] != 3 {
		return nil, ErrNotTLS
	}

	// First pass: check record headers and find how many records hold the
	// whole message, without copying.
	var (
		hdr     [handshakeHeader]byte // handshake header, which may span records
		got     int                   // bytes of hdr filled
		want    = -1                  // handshake message length, once known
		total   int                   // payload bytes seen
		off     int                   // start of the current record
		records int
	)
	for {
		if off+recordHeaderLen >= MaxClientHello {
			// Not even one more payload byte would fit.
			return nil, fmt.Errorf("sniff: client hello does not fit in %d bytes", MaxClientHello)
		}
		if len(b)-off < recordHeaderLen {
			return nil, ErrNeedMore
		}
		rh := b[off : off+recordHeaderLen]
		if rh[0] != typeHandshake {
			return nil, fmt.Errorf("sniff: record %d: content type %d inside a client hello, want handshake", records, rh[0])
		}
		if rh[1] != 3 {
			return nil, fmt.Errorf("sniff: record %d: version %d.%d is not TLS", records, rh[1], rh[2])
		}
		n := int(rh[3])<<8 | int(rh[4])
		if n == 0 {
			return nil, fmt.Errorf("sniff: record %d: empty handshake record", records)
		}
		if n > maxRecordPayload {
			return nil, fmt.Errorf("sniff: record %d: length %d exceeds %d", records, n, maxRecordPayload)
		}
		start := off + recordHeaderLen
		if start+n > MaxClientHello {
			return nil, fmt.Errorf("sniff: client hello does not fit in %d bytes", MaxClientHello)
		}
		payload := b[start:min(start+n, len(b))]
		records++
		got += copy(hdr[got:], payload)
		if got >= 1 && hdr[0] != typeClientHello {
			return nil, fmt.Errorf("sniff: handshake message type %d, want client_hello", hdr[0])
		}
		if want < 0 && got == handshakeHeader {
			body := int(hdr[1])<<16 | int(hdr[2])<<8 | int(hdr[3])
			if body > maxHelloBody {
				return nil, fmt.Errorf("sniff: client hello of %d bytes exceeds %d", body, maxHelloBody)
			}
			want = handshakeHeader + body
		}
		total += len(payload)
		if want >= 0 && total >= want {
			break
		}
		if len(payload) < n {
			return nil, ErrNeedMore
		}
		off = start + n
	}

	if records == 1 {
		return b[recordHeaderLen+handshakeHeader : recordHeaderLen+want], nil
	}
	// Second pass: reassemble the message from its records, whose headers
	// were checked above.
	msg := make([]byte, 0, want)
	for off := 0; len(msg) < want; {
		n := int(b[off+3])<<8 | int(b[off+4])
		start := off + recordHeaderLen
		payload := b[start:min(start+n, len(b))]
		msg = append(msg, payload[:min(len(payload), want-len(msg))]...)
		off = start + n
	}
	return msg[handshakeHeader:], nil
}

// helloAlloc holds a ClientHello and room for typical ALPN and version lists,
// so parsing allocates once for all three.
type helloAlloc struct {
	ClientHello
	alpn     [4]string
	versions [8]uint16
}

// parseHello parses a ClientHello handshake body (RFC 8446 §4.1.2, which is
// also the TLS 1.2 layout).
func parseHello(body []byte) (*ClientHello, error) {
	s := cryptobyte.String(body)
	var (
		legacyVersion uint16
		sessionID     cryptobyte.String
		suites        cryptobyte.String
		compression   cryptobyte.String
	)
	if !s.ReadUint16(&legacyVersion) || !s.Skip(32) {
		return nil, errors.New("sniff: client hello truncated before session id")
	}
	if !s.ReadUint8LengthPrefixed(&sessionID) || len(sessionID) > 32 {
		return nil, errors.New("sniff: client hello: bad session id")
	}
	if !s.ReadUint16LengthPrefixed(&suites) || len(suites) == 0 || len(suites)%2 != 0 {
		return nil, errors.New("sniff: client hello: bad cipher suites")
	}
	if !s.ReadUint8LengthPrefixed(&compression) || len(compression) == 0 {
		return nil, errors.New("sniff: client hello: bad compression methods")
	}

	var sni, alpn, versions cryptobyte.String
	var haveSNI, haveALPN, haveVersions bool
	if !s.Empty() {
		var exts cryptobyte.String
		if !s.ReadUint16LengthPrefixed(&exts) || !s.Empty() {
			return nil, errors.New("sniff: client hello: bad extensions length")
		}
		var seen extSet
		for !exts.Empty() {
			var typ uint16
			var data cryptobyte.String
			if !exts.ReadUint16(&typ) || !exts.ReadUint16LengthPrefixed(&data) {
				return nil, errors.New("sniff: client hello: truncated extension")
			}
			if seen.add(typ) {
				return nil, fmt.Errorf("sniff: client hello: duplicate extension %d", typ)
			}
			switch typ {
			case extServerName:
				sni, haveSNI = data, true
			case extALPN:
				alpn, haveALPN = data, true
			case extSupportedVersions:
				versions, haveVersions = data, true
			}
		}
	}

	a := &helloAlloc{}
	h := &a.ClientHello

	// Validate first, then copy the names into one string.
	var host []byte
	if haveSNI {
		var err error
		if host, err = serverName(sni); err != nil {
			return nil, err
		}
	}
	var protos cryptobyte.String
	size, count := len(host), 0
	if haveALPN {
		if !alpn.ReadUint16LengthPrefixed(&protos) || !alpn.Empty() || protos.Empty() {
			return nil, errors.New("sniff: client hello: bad ALPN extension")
		}
		for p := protos; !p.Empty(); {
			var proto cryptobyte.String
			if !p.ReadUint8LengthPrefixed(&proto) || proto.Empty() {
				return nil, errors.New("sniff: client hello: bad ALPN protocol")
			}
			size += len(proto)
			count++
		}
	}
	if size > 0 {
		var sb strings.Builder
		sb.Grow(size)
		for _, c := range host {
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			sb.WriteByte(c)
		}
		for p := protos; !p.Empty(); {
			var proto cryptobyte.String
			p.ReadUint8LengthPrefixed(&proto)
			sb.Write(proto)
		}
		all := sb.String()
		h.ServerName = all[:len(host)]
		all = all[len(host):]
		h.ALPN = a.alpn[:0]
		if count > len(a.alpn) {
			h.ALPN = make([]string, 0, count)
		}
		for p := protos; !p.Empty(); {
			var proto cryptobyte.String
			p.ReadUint8LengthPrefixed(&proto)
			h.ALPN = append(h.ALPN, all[:len(proto)])
			all = all[len(proto):]
		}
	}

	h.Versions = a.versions[:0]
	if haveVersions {
		var list cryptobyte.String
		if !versions.ReadUint8LengthPrefixed(&list) || !versions.Empty() || list.Empty() || len(list)%2 != 0 {
			return nil, errors.New("sniff: client hello: bad supported_versions extension")
		}
		for !list.Empty() {
			var v uint16
			list.ReadUint16(&v)
			h.Versions = append(h.Versions, v)
		}
	} else {
		h.Versions = append(h.Versions, legacyVersion)
	}
	return h, nil
}

// serverName returns the host_name in a server_name extension (RFC 6066 §3),
// without a trailing dot, after checking it is an LDH host name. It returns
// nil when the list names no host.
func serverName(data cryptobyte.String) ([]byte, error) {
	var list cryptobyte.String
	if !data.ReadUint16LengthPrefixed(&list) || !data.Empty() || list.Empty() {
		return nil, errors.New("sniff: client hello: bad server_name extension")
	}
	var host []byte
	for !list.Empty() {
		var typ uint8
		var name cryptobyte.String
		if !list.ReadUint8(&typ) || !list.ReadUint16LengthPrefixed(&name) {
			return nil, errors.New("sniff: client hello: bad server_name entry")
		}
		if typ != sniHostName {
			continue
		}
		if host != nil {
			return nil, errors.New("sniff: client hello: more than one host_name in server_name")
		}
		name = cryptobyte.String(trimDot(name))
		if err := checkHostName(name); err != nil {
			return nil, fmt.Errorf("sniff: client hello: server_name %q: %w", []byte(name), err)
		}
		host = name
	}
	return host, nil
}

func trimDot(b []byte) []byte {
	if n := len(b); n > 1 && b[n-1] == '.' {
		return b[:n-1]
	}
	return b
}

// checkHostName reports whether name is a host name of letters, digits and
// hyphens (LDH, RFC 1123) in non-empty labels of at most 63 bytes, at most
// 253 bytes in all.
func checkHostName(name []byte) error {
	if len(name) == 0 {
		return errors.New("empty host name")
	}
	if len(name) > 253 {
		return errors.New("host name longer than 253 bytes")
	}
	label := 0
	for _, c := range name {
		switch {
		case c == '.':
			if label == 0 {
				return errors.New("empty label")
			}
			label = 0
			continue
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-':
		default:
			return fmt.Errorf("byte %#02x is not a letter, digit, hyphen or dot", c)
		}
		label++
		if label > 63 {
			return errors.New("label longer than 63 bytes")
		}
	}
	if label == 0 {
		return errors.New("empty label")
	}
	return nil
}

// extSet records extension types to find duplicates: a linear scan over a
// small array covers real hellos (about 20 extensions); beyond that a map
// keeps adversarial ones linear in time.
type extSet struct {
	small [32]uint16
	n     int
	big   map[uint16]struct{}
}

// add records typ and reports whether it was already present.
func (s *extSet) add(typ uint16) bool {
	for _, t := range s.small[:s.n] {
		if t == typ {
			return true
		}
	}
	if s.big != nil {
		if _, ok := s.big[typ]; ok {
			return true
		}
	}
	if s.n < len(s.small) {
		s.small[s.n] = typ
		s.n++
		return false
	}
	if s.big == nil {
		s.big = make(map[uint16]struct{})
	}
	s.big[typ] = struct{}{}
	return false
}
