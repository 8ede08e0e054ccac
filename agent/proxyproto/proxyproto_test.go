package proxyproto

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// v2 builds a v2 header: the signature, ver/cmd, fam/proto, then body with
// its length.
func v2(verCmd, famProto byte, body ...[]byte) []byte {
	b := append([]byte(nil), v2Sig[:]...)
	joined := bytes.Join(body, nil)
	b = append(b, verCmd, famProto)
	b = binary.BigEndian.AppendUint16(b, uint16(len(joined)))
	return append(b, joined...)
}

func tlv(typ byte, val string) []byte {
	b := []byte{typ}
	b = binary.BigEndian.AppendUint16(b, uint16(len(val)))
	return append(b, val...)
}

func inet(src, dst string, sport, dport uint16) []byte {
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	b := append(s[:], d[:]...)
	b = binary.BigEndian.AppendUint16(b, sport)
	return binary.BigEndian.AppendUint16(b, dport)
}

func inet6(src, dst string, sport, dport uint16) []byte {
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	b := append(s[:], d[:]...)
	b = binary.BigEndian.AppendUint16(b, sport)
	return binary.BigEndian.AppendUint16(b, dport)
}

var ap = netip.MustParseAddrPort

// valid lists well-formed headers, from the examples in haproxy's
// proxy-protocol.txt and built per its v2 layout.
var valid = []struct {
	name string
	in   []byte
	want Header
}{
	{"v1 TCP4 spec example", []byte("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"),
		Header{Version: 1, Src: ap("192.168.0.1:56324"), Dst: ap("192.168.0.11:443")}},
	{"v1 TCP4 longest", []byte("PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n"),
		Header{Version: 1, Src: ap("255.255.255.255:65535"), Dst: ap("255.255.255.255:65535")}},
	{"v1 TCP6 longest", []byte("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"),
		Header{Version: 1, Src: ap("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"), Dst: ap("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535")}},
	{"v1 TCP6 short", []byte("PROXY TCP6 2001:db8::1 ::1 0 8443\r\n"),
		Header{Version: 1, Src: ap("[2001:db8::1]:0"), Dst: ap("[::1]:8443")}},
	{"v1 UNKNOWN", []byte("PROXY UNKNOWN\r\n"), Header{Version: 1, Local: true}},
	{"v1 UNKNOWN 107 bytes", []byte("PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"),
		Header{Version: 1, Local: true}},
	{"v2 PROXY IPv4", v2(0x21, 0x11, inet("10.0.0.1", "10.0.0.2", 40000, 443)),
		Header{Version: 2, Src: ap("10.0.0.1:40000"), Dst: ap("10.0.0.2:443")}},
	{"v2 PROXY IPv6 with TLVs", v2(0x21, 0x21, inet6("2001:db8::1", "2001:db8::2", 1, 2), tlv(0x01, "h2"), tlv(0x02, "example.com"), tlv(0x04, "")),
		Header{Version: 2, Src: ap("[2001:db8::1]:1"), Dst: ap("[2001:db8::2]:2"),
			TLVs: []TLV{{0x01, []byte("h2")}, {0x02, []byte("example.com")}, {0x04, []byte{}}}}},
	{"v2 LOCAL UNSPEC", v2(0x20, 0x00), Header{Version: 2, Local: true}},
	{"v2 LOCAL IPv4 with TLV, addresses ignored", v2(0x20, 0x11, inet("1.1.1.1", "2.2.2.2", 1, 2), tlv(0xe0, "x")),
		Header{Version: 2, Local: true, TLVs: []TLV{{0xe0, []byte("x")}}}},
	{"v2 LOCAL with short body", v2(0x20, 0x21, make([]byte, 5)), Header{Version: 2, Local: true}},
	{"v2 LOCAL with bad TLV", v2(0x20, 0x00, []byte{1, 0}), Header{Version: 2, Local: true}},
	{"v2 PROXY UNSPEC", v2(0x21, 0x00, tlv(0x05, "id")), Header{Version: 2, Local: true, TLVs: []TLV{{0x05, []byte("id")}}}},
	{"v2 PROXY UNIX", v2(0x21, 0x31, make([]byte, 216)), Header{Version: 2, Local: true}},
}

func equalHeader(a, b *Header) bool {
	if a.Version != b.Version || a.Local != b.Local || a.Src != b.Src || a.Dst != b.Dst || len(a.TLVs) != len(b.TLVs) {
		return false
	}
	for i := range a.TLVs {
		if a.TLVs[i].Type != b.TLVs[i].Type || !bytes.Equal(a.TLVs[i].Value, b.TLVs[i].Value) {
			return false
		}
	}
	return true
}

func TestParseValid(t *testing.T) {
	for _, tc := range valid {
		t.Run(tc.name, func(t *testing.T) {
			in := append(slices.Clone(tc.in), "\x16\x03\x01 client bytes"...)
			h, n, err := Parse(in)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if n != len(tc.in) {
				t.Errorf("n = %d, want %d", n, len(tc.in))
			}
			if !equalHeader(h, &tc.want) {
				t.Errorf("got %+v, want %+v", *h, tc.want)
			}
			// The header must not alias the caller's buffer.
			clear(in)
			if !equalHeader(h, &tc.want) {
				t.Errorf("header changed with the buffer: %+v", *h)
			}
		})
	}
}

func TestParseEveryPrefix(t *testing.T) {
	for _, tc := range valid {
		t.Run(tc.name, func(t *testing.T) {
			for i := range len(tc.in) {
				if _, _, err := Parse(tc.in[:i]); err != ErrNeedMore {
					t.Fatalf("prefix of %d/%d bytes: %v, want ErrNeedMore", i, len(tc.in), err)
				}
			}
		})
	}
}

func TestParseNoHeader(t *testing.T) {
	for _, in := range []string{
		"GET / HTTP/1.1\r\n",
		"\x16\x03\x01\x02\x00",
		"SSH-2.0-OpenSSH_9.6\r\n",
		"PROXX TCP4",
		"proxy TCP4",
		"\r\n\r\n\x00\r\nQUIT\r",
		"\r\nGET",
		"P ",
	} {
		t.Run(strings.ToValidUTF8(in, "?"), func(t *testing.T) {
			if _, _, err := Parse([]byte(in)); err != ErrNoHeader {
				t.Fatalf("got %v, want ErrNoHeader", err)
			}
		})
	}
}

func TestParseMalformed(t *testing.T) {
	long := "PROXY UNKNOWN " + strings.Repeat("x", 200) + "\r\n"
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"v1 port over 65535", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 65536 80\r\n"), "out of range"},
		{"v1 port leading zero", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 080 80\r\n"), "bad port"},
		{"v1 negative port", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 -1 80\r\n"), "bad port"},
		{"v1 port not a number", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 http 80\r\n"), "bad port"},
		{"v1 empty port", []byte("PROXY TCP4 1.2.3.4 5.6.7.8  80\r\n"), "bad port"},
		{"v1 bad IPv4", []byte("PROXY TCP4 256.2.3.4 5.6.7.8 1 80\r\n"), "source address"},
		{"v1 IPv6 under TCP4", []byte("PROXY TCP4 ::1 5.6.7.8 1 80\r\n"), "not an IPv4"},
		{"v1 IPv4 under TCP6", []byte("PROXY TCP6 ::1 5.6.7.8 1 80\r\n"), "not an IPv6"},
		{"v1 zone", []byte("PROXY TCP6 fe80::1%eth0 ::1 1 80\r\n"), "zone"},
		{"v1 too few fields", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"), "4 fields"},
		{"v1 too many fields", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"), "4 fields"},
		{"v1 trailing space", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n"), "4 fields"},
		{"v1 unknown protocol", []byte("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n"), "v1 protocol"},
		{"v1 empty protocol", []byte("PROXY \r\n"), "v1 protocol"},
		{"v1 overlong", []byte(long), "longer than 107"},
		{"v1 no CRLF within 107 bytes", []byte(long[:107]), "longer than 107"},
		{"v1 bare LF", []byte("PROXY UNKNOWN\n"), "without CR"},
		{"v1 CR without LF", []byte("PROXY UNKNOWN\rx\n"), "CR not followed by LF"},
		{"v1 control byte", []byte("PROXY TCP4 1.2.3.4\x00"), "byte 0x00"},
		{"v2 version 1", v2(0x11, 0x11, inet("1.1.1.1", "2.2.2.2", 1, 2)), "version 1"},
		{"v2 version 1, early", append(v2Sig[:], 0x11), "version 1"},
		{"v2 command 2", v2(0x22, 0x11, inet("1.1.1.1", "2.2.2.2", 1, 2)), "command 0x2"},
		{"v2 family 4", v2(0x21, 0x41), "address family"},
		{"v2 protocol 3", v2(0x21, 0x13, inet("1.1.1.1", "2.2.2.2", 1, 2)), "transport protocol"},
		{"v2 DGRAM", v2(0x21, 0x12, inet("1.1.1.1", "2.2.2.2", 1, 2)), "want STREAM"},
		{"v2 length short for IPv4", v2(0x21, 0x11, make([]byte, 11)), "too short"},
		{"v2 length short for IPv6", v2(0x21, 0x21, inet("1.1.1.1", "2.2.2.2", 1, 2)), "too short"},
		{"v2 TLV header truncated", v2(0x21, 0x11, inet("1.1.1.1", "2.2.2.2", 1, 2), []byte{1, 0}), "TLV truncated"},
		{"v2 TLV value overflows", v2(0x21, 0x11, inet("1.1.1.1", "2.2.2.2", 1, 2), []byte{1, 0, 9, 'x'}), "exceeds"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, n, err := Parse(tc.in)
			if err == nil || err == ErrNeedMore || err == ErrNoHeader {
				t.Fatalf("got %+v, %d, %v; want an error containing %q", h, n, err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestAppendRoundTrip(t *testing.T) {
	tests := []struct {
		name       string
		src, dst   netip.AddrPort
		wantV1     string
		wantFamily byte // v2 family/protocol byte
		want       Header
	}{
		{"IPv4", ap("192.0.2.1:5000"), ap("198.51.100.2:443"), "PROXY TCP4 192.0.2.1 198.51.100.2 5000 443\r\n", 0x11,
			Header{Src: ap("192.0.2.1:5000"), Dst: ap("198.51.100.2:443")}},
		{"IPv6", ap("[2001:db8::1]:1"), ap("[2001:db8::2]:65535"), "PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n", 0x21,
			Header{Src: ap("[2001:db8::1]:1"), Dst: ap("[2001:db8::2]:65535")}},
		{"IPv4-mapped both ends", ap("[::ffff:192.0.2.1]:7"), ap("[::ffff:192.0.2.2]:8"), "PROXY TCP4 192.0.2.1 192.0.2.2 7 8\r\n", 0x11,
			Header{Src: ap("192.0.2.1:7"), Dst: ap("192.0.2.2:8")}},
		{"IPv4 to IPv6", ap("192.0.2.1:7"), ap("[2001:db8::2]:8"), "PROXY TCP6 ::ffff:192.0.2.1 2001:db8::2 7 8\r\n", 0x21,
			Header{Src: ap("[::ffff:192.0.2.1]:7"), Dst: ap("[2001:db8::2]:8")}},
		{"zone dropped", ap("[fe80::1%eth0]:7"), ap("[fe80::2]:8"), "PROXY TCP6 fe80::1 fe80::2 7 8\r\n", 0x21,
			Header{Src: ap("[fe80::1]:7"), Dst: ap("[fe80::2]:8")}},
		{"unknown source", netip.AddrPort{}, ap("192.0.2.2:8"), "PROXY UNKNOWN\r\n", 0x00,
			Header{Local: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			prefix := []byte("pre")
			b1 := AppendV1(slices.Clone(prefix), tc.src, tc.dst)
			if got := string(b1[len(prefix):]); got != tc.wantV1 {
				t.Errorf("AppendV1 = %q, want %q", got, tc.wantV1)
			}
			b2 := AppendV2(slices.Clone(prefix), tc.src, tc.dst)
			if b2[len(prefix)+13] != tc.wantFamily {
				t.Errorf("v2 family byte %#02x, want %#02x", b2[len(prefix)+13], tc.wantFamily)
			}
			for v, b := range map[int][]byte{1: b1, 2: b2} {
				if !bytes.HasPrefix(b, prefix) {
					t.Fatalf("v%d: prefix lost", v)
				}
				h, n, err := Parse(b[len(prefix):])
				if err != nil {
					t.Fatalf("v%d: Parse: %v", v, err)
				}
				want := tc.want
				want.Version = v
				if n != len(b)-len(prefix) || !equalHeader(h, &want) {
					t.Errorf("v%d: got %+v (%d bytes), want %+v (%d)", v, *h, n, want, len(b)-len(prefix))
				}
			}
		})
	}
}

func TestAppendAllocs(t *testing.T) {
	src, dst := ap("[2001:db8::1]:1"), ap("[2001:db8::2]:2")
	buf := make([]byte, 0, 128)
	if n := testing.AllocsPerRun(100, func() {
		AppendV1(buf, src, dst)
		AppendV2(buf, src, dst)
	}); n != 0 {
		t.Errorf("Append allocates %v times, want 0", n)
	}
}

func FuzzParse(f *testing.F) {
	for _, tc := range valid {
		f.Add(tc.in)
	}
	f.Add(AppendV2(nil, ap("[::ffff:1.2.3.4]:1"), ap("[2001:db8::1]:2")))
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, err := Parse(b)
		if err != nil {
			if h != nil || n != 0 {
				t.Fatalf("header %+v, n %d with error %v", h, n, err)
			}
			if err == ErrNeedMore && len(b) >= MaxV2Len {
				t.Fatalf("ErrNeedMore with %d bytes", len(b))
			}
			return
		}
		if n <= 0 || n > len(b) {
			t.Fatalf("n = %d for %d bytes", n, len(b))
		}
		if h.Version == 1 && n > MaxV1Len || h.Version == 2 && n > MaxV2Len || h.Version != 1 && h.Version != 2 {
			t.Fatalf("version %d header of %d bytes", h.Version, n)
		}
		if h.Local {
			if h.Src.IsValid() || h.Dst.IsValid() {
				t.Fatalf("local header with addresses: %+v", h)
			}
			return
		}
		if !h.Src.IsValid() || !h.Dst.IsValid() {
			t.Fatalf("proxy header without addresses: %+v", h)
		}
		// Re-encode in the same version and parse again: same addresses,
		// up to IPv4 and IPv4-mapped IPv6 being the same address.
		enc := AppendV1(nil, h.Src, h.Dst)
		if h.Version == 2 {
			enc = AppendV2(nil, h.Src, h.Dst)
		}
		h2, n2, err := Parse(enc)
		if err != nil || n2 != len(enc) {
			t.Fatalf("re-encoded %q: %d, %v", enc, n2, err)
		}
		same := func(a, b netip.AddrPort) bool {
			return a.Addr().Unmap() == b.Addr().Unmap() && a.Port() == b.Port()
		}
		if !same(h.Src, h2.Src) || !same(h.Dst, h2.Dst) || h2.Local || h2.Version != h.Version {
			t.Fatalf("round trip: %+v became %+v", h, h2)
		}
	})
}

func BenchmarkParseV2(b *testing.B) {
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"IPv4", AppendV2(nil, ap("192.0.2.1:5000"), ap("198.51.100.2:443"))},
		{"IPv6+TLVs", v2(0x21, 0x21, inet6("2001:db8::1", "2001:db8::2", 1, 2), tlv(0x01, "h2"), tlv(0x02, "example.com"))},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := Parse(tc.in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkParseV1(b *testing.B) {
	in := AppendV1(nil, ap("192.0.2.1:5000"), ap("198.51.100.2:443"))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Parse(in); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendV2(b *testing.B) {
	buf := make([]byte, 0, 64)
	src, dst := ap("192.0.2.1:5000"), ap("198.51.100.2:443")
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendV2(buf[:0], src, dst)
	}
}
