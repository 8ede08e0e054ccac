package sniff

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// largeALPN is enough long ALPN values to push Go's ClientHello past 4 KiB.
func largeALPN() []string {
	var protos []string
	for i := range 24 {
		protos = append(protos, strings.Repeat(string(rune('a'+i)), 200))
	}
	return append(protos, "h2")
}

// recorded lists the committed ClientHellos and what they must parse to.
var recorded = []struct {
	file       string
	serverName string
	alpn       []string
	minLen     int // the recording is at least this long
	records    int // and spans this many records
	versions   []uint16
}{
	{file: "go_sni_alpn.bin", serverName: "www.example.com", alpn: []string{"h2", "http/1.1"}, minLen: 1400, records: 1,
		versions: []uint16{tls.VersionTLS13, tls.VersionTLS12}},
	{file: "go_upper_sni.bin", serverName: "upper.example.com", minLen: 1400, records: 1,
		versions: []uint16{tls.VersionTLS13, tls.VersionTLS12}},
	{file: "go_no_sni.bin", serverName: "", alpn: []string{"http/1.1"}, minLen: 1000, records: 1,
		versions: []uint16{tls.VersionTLS13, tls.VersionTLS12}},
	{file: "go_large.bin", serverName: "big.example.com", alpn: largeALPN(), minLen: 4096, records: 1,
		versions: []uint16{tls.VersionTLS13, tls.VersionTLS12}},
	{file: "go_large_fragmented.bin", serverName: "big.example.com", alpn: largeALPN(), minLen: 4096, records: 5,
		versions: []uint16{tls.VersionTLS13, tls.VersionTLS12}},
	{file: "openssl.bin", serverName: "foo.example.org", alpn: []string{"h2", "http/1.1"}, minLen: 200, records: 1,
		versions: []uint16{tls.VersionTLS13, tls.VersionTLS12}},
}

// TestGenerate records testdata/*.bin from real clients. Run it with
// go test -run TestGenerate -update.
func TestGenerate(t *testing.T) {
	if !*update {
		t.Skip("pass -update to re-record testdata")
	}
	write := func(name string, b []byte) {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("testdata", name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go_sni_alpn.bin", goClientHello(t, &tls.Config{ServerName: "www.example.com", NextProtos: []string{"h2", "http/1.1"}}))
	write("go_upper_sni.bin", goClientHello(t, &tls.Config{ServerName: "UPPER.Example.COM"}))
	write("go_no_sni.bin", goClientHello(t, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}))
	large := goClientHello(t, &tls.Config{ServerName: "big.example.com", NextProtos: largeALPN()})
	write("go_large.bin", large)
	// crypto/tls sends a hello in one record however large; real stacks
	// also fragment it, so reframe the recorded message into records of
	// at most 1400 bytes, as a stack writing one record per segment would.
	write("go_large_fragmented.bin", fragment(t, large, 1400))
	write("openssl.bin", opensslClientHello(t, "-servername", "Foo.Example.org", "-alpn", "h2,http/1.1"))
}

func countRecords(b []byte) int {
	n := 0
	for len(b) >= 5 {
		b = b[5+(int(b[3])<<8|int(b[4])):]
		n++
	}
	return n
}

func TestParseClientHelloRecorded(t *testing.T) {
	for _, tc := range recorded {
		t.Run(tc.file, func(t *testing.T) {
			b := readTestdata(t, tc.file)
			if len(b) < tc.minLen || countRecords(b) != tc.records {
				t.Fatalf("recording is %d bytes in %d records, want >= %d bytes in %d", len(b), countRecords(b), tc.minLen, tc.records)
			}
			h, err := ParseClientHello(b)
			if err != nil {
				t.Fatalf("ParseClientHello: %v", err)
			}
			if h.ServerName != tc.serverName || !slices.Equal(h.ALPN, tc.alpn) {
				t.Errorf("got SNI %q ALPN %q, want %q %q", h.ServerName, h.ALPN, tc.serverName, tc.alpn)
			}
			for _, v := range tc.versions {
				if !slices.Contains(h.Versions, v) {
					t.Errorf("versions %#04x lack %#04x", h.Versions, v)
				}
			}
			checkAgainstCryptoTLS(t, b, h)

			// Bytes after the hello (the client's next flight) do not matter.
			if h2, err := ParseClientHello(append(slices.Clip(b), "trailing"...)); err != nil || h2.ServerName != h.ServerName {
				t.Errorf("with trailing bytes: %v, %+v", err, h2)
			}
		})
	}
}

// checkAgainstCryptoTLS checks h against what crypto/tls's server reads from
// the same bytes.
func checkAgainstCryptoTLS(t *testing.T, raw []byte, h *ClientHello) {
	t.Helper()
	info, err := oracle(t, raw)
	if err != nil {
		t.Fatalf("crypto/tls rejects the hello: %v", err)
	}
	if want := strings.ToLower(info.ServerName); h.ServerName != want {
		t.Errorf("SNI %q, crypto/tls says %q", h.ServerName, want)
	}
	if !slices.Equal(h.ALPN, info.SupportedProtos) && !(len(h.ALPN) == 0 && len(info.SupportedProtos) == 0) {
		t.Errorf("ALPN %q, crypto/tls says %q", h.ALPN, info.SupportedProtos)
	}
	if !slices.Equal(h.Versions, info.SupportedVersions) {
		t.Errorf("versions %#04x, crypto/tls says %#04x", h.Versions, info.SupportedVersions)
	}
}

// TestParseClientHelloLive records hellos from the clients installed now,
// so a new Go or OpenSSL release is covered without re-recording.
func TestParseClientHelloLive(t *testing.T) {
	tests := []struct {
		name   string
		record func(t *testing.T) []byte
		sni    string
		alpn   []string
	}{
		{"go", func(t *testing.T) []byte {
			return goClientHello(t, &tls.Config{ServerName: "Live.Example.net.", NextProtos: []string{"h2"}})
		}, "live.example.net", []string{"h2"}},
		{"go large", func(t *testing.T) []byte {
			return goClientHello(t, &tls.Config{ServerName: "big.example.com", NextProtos: largeALPN()})
		}, "big.example.com", largeALPN()},
		{"openssl", func(t *testing.T) []byte {
			return opensslClientHello(t, "-servername", "Ssl.Example.org", "-alpn", "x,y")
		}, "ssl.example.org", []string{"x", "y"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.record(t)
			h, err := ParseClientHello(b)
			if err != nil {
				t.Fatalf("ParseClientHello(%d bytes): %v", len(b), err)
			}
			if h.ServerName != tc.sni || !slices.Equal(h.ALPN, tc.alpn) {
				t.Errorf("got %q %q, want %q %q", h.ServerName, h.ALPN, tc.sni, tc.alpn)
			}
		})
	}
}

func TestParseClientHelloEveryPrefix(t *testing.T) {
	for _, tc := range recorded {
		t.Run(tc.file, func(t *testing.T) {
			b := readTestdata(t, tc.file)
			for i := range len(b) {
				if _, err := ParseClientHello(b[:i]); err != ErrNeedMore {
					t.Fatalf("prefix of %d/%d bytes: %v, want ErrNeedMore", i, len(b), err)
				}
			}
		})
	}
}

func TestParseClientHelloFragmented(t *testing.T) {
	raw := readTestdata(t, "go_sni_alpn.bin")
	tests := []struct {
		name  string
		sizes []int
	}{
		{"1400-byte records", []int{1400}},
		{"512-byte records", []int{512}},
		{"header split over records", []int{2, 2, 1000}},
		{"one-byte first record", []int{1, 4000}},
		{"many small records", []int{64}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := fragment(t, raw, tc.sizes...)
			h, err := ParseClientHello(b)
			if err != nil {
				t.Fatalf("ParseClientHello: %v", err)
			}
			if h.ServerName != "www.example.com" || !slices.Equal(h.ALPN, []string{"h2", "http/1.1"}) {
				t.Errorf("got %+v", h)
			}
			checkAgainstCryptoTLS(t, b, h)
			for i := range len(b) {
				if _, err := ParseClientHello(b[:i]); err != ErrNeedMore {
					t.Fatalf("prefix of %d bytes: %v, want ErrNeedMore", i, err)
				}
			}
		})
	}
}

func TestParseClientHelloBuilt(t *testing.T) {
	tests := []struct {
		name     string
		spec     helloSpec
		sni      string
		alpn     []string
		versions []uint16
	}{
		{"no extensions at all", helloSpec{noExts: true, legacy: tls.VersionTLS11}, "", nil, []uint16{tls.VersionTLS11}},
		{"no SNI", helloSpec{exts: []ext{alpnExt("h2")}}, "", []string{"h2"}, []uint16{tls.VersionTLS12}},
		{"uppercase SNI lower-cased", helloSpec{exts: []ext{sniExt("WWW.Example.COM")}}, "www.example.com", nil, []uint16{tls.VersionTLS12}},
		{"trailing dot dropped", helloSpec{exts: []ext{sniExt("a.example.")}}, "a.example", nil, []uint16{tls.VersionTLS12}},
		{"supported_versions win", helloSpec{exts: []ext{versionsExt(0x0a0a, tls.VersionTLS13)}}, "", nil, []uint16{0x0a0a, tls.VersionTLS13}},
		{"many ALPN values", helloSpec{exts: []ext{alpnExt("a", "b", "c", "d", "e", "f")}}, "", []string{"a", "b", "c", "d", "e", "f"}, []uint16{tls.VersionTLS12}},
		{"other name types ignored", helloSpec{exts: []ext{{extServerName, []byte{0, 8, 1, 0, 1, 'x', 0, 0, 1, 'y'}}}}, "y", nil, []uint16{tls.VersionTLS12}},
		{"unknown extensions skipped", helloSpec{exts: []ext{{0xfe0d, []byte{1, 2, 3}}, sniExt("x.y"), {21, make([]byte, 300)}}}, "x.y", nil, []uint16{tls.VersionTLS12}},
		{"max session id", helloSpec{sessLen: 32, exts: []ext{sniExt("s.example")}}, "s.example", nil, []uint16{tls.VersionTLS12}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, err := ParseClientHello(records(buildHello(tc.spec), 1<<14))
			if err != nil {
				t.Fatal(err)
			}
			if h.ServerName != tc.sni || !slices.Equal(h.ALPN, tc.alpn) || !slices.Equal(h.Versions, tc.versions) {
				t.Errorf("got %q %q %#04x, want %q %q %#04x", h.ServerName, h.ALPN, h.Versions, tc.sni, tc.alpn, tc.versions)
			}
		})
	}
}

func TestParseClientHelloNotTLS(t *testing.T) {
	for _, in := range []string{
		"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
		"SSH-2.0-OpenSSH_9.6\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
		"\x80\x2e\x01\x03\x01", // SSLv2-compatible hello
		"\x17\x03\x03\x00\x10", // application data
		"\x16\x02\x00",         // handshake type, SSL 2 version
		"\x16",                 // could still be TLS: not this case
	} {
		t.Run(strings.ToValidUTF8(in[:min(len(in), 12)], "?"), func(t *testing.T) {
			_, err := ParseClientHello([]byte(in))
			want := ErrNotTLS
			if in == "\x16" {
				want = ErrNeedMore
			}
			if err != want {
				t.Fatalf("got %v, want %v", err, want)
			}
		})
	}
}

func TestParseClientHelloMalformed(t *testing.T) {
	ok := buildHello(helloSpec{exts: []ext{sniExt("ok.example"), alpnExt("h2")}})
	mutate := func(f func(b []byte) []byte) []byte { return f(records(slices.Clone(ok), 1<<14)) }
	tests := []struct {
		name string
		in   []byte
		want string // substring of the error
	}{
		{"server hello", mutate(func(b []byte) []byte { b[5] = 2; return b }), "handshake message type 2"},
		{"record over 16 KiB", []byte{22, 3, 1, 0x40, 0x01, 1}, "exceeds"},
		{"empty record", []byte{22, 3, 1, 0, 0}, "empty handshake record"},
		{"hello body over limit", []byte{22, 3, 1, 0x10, 0, 1, 0, 0x40, 0x01}, "exceeds"},
		{"alert record after first", append(records(ok[:10], 10), 21, 3, 1, 0, 2, 2, 40), "content type 21"},
		{"non-TLS second record", append(records(ok[:10], 10), 22, 9, 1, 0, 2, 2, 40), "not TLS"},
		{"session id too long", records(buildHello(helloSpec{sessLen: 33}), 1<<14), "session id"},
		{"no cipher suites", records(buildHello(helloSpec{suites: []uint16{}}), 1<<14), "cipher suites"},
		{"body length overflows record", mutate(func(b []byte) []byte { b[8]++; return b[:len(b):len(b)] }), ""},
		{"extensions length too long", mutate(func(b []byte) []byte {
			// The extensions length is at a fixed offset for this hello:
			// record 5 + header 4 + version 2 + random 32 + sid 1 + suites 4 + comp 2.
			b[5+4+2+32+1+4+2+1]++
			return b
		}), "extensions length"},
		{"trailing body bytes", records(buildHello(helloSpec{trailing: []byte{1}}), 1<<14), "extensions length"},
		{"duplicate extension", records(buildHello(helloSpec{exts: []ext{sniExt("a.b"), alpnExt("x"), sniExt("a.b")}}), 1<<14), "duplicate extension 0"},
		{"duplicate unknown extension", records(buildHello(helloSpec{exts: []ext{{99, nil}, {99, nil}}}), 1<<14), "duplicate extension 99"},
		{"SNI with space", records(buildHello(helloSpec{exts: []ext{sniExt("exa mple.com")}}), 1<<14), "not a letter"},
		{"SNI empty label", records(buildHello(helloSpec{exts: []ext{sniExt("a..b")}}), 1<<14), "empty label"},
		{"SNI leading dot", records(buildHello(helloSpec{exts: []ext{sniExt(".a")}}), 1<<14), "empty label"},
		{"SNI empty", records(buildHello(helloSpec{exts: []ext{sniExt("")}}), 1<<14), "empty host name"},
		{"SNI only a dot", records(buildHello(helloSpec{exts: []ext{sniExt(".")}}), 1<<14), "empty label"},
		{"SNI underscore", records(buildHello(helloSpec{exts: []ext{sniExt("a_b.example")}}), 1<<14), "not a letter"},
		{"SNI label over 63", records(buildHello(helloSpec{exts: []ext{sniExt(strings.Repeat("a", 64) + ".com")}}), 1<<14), "label longer"},
		{"SNI over 253", records(buildHello(helloSpec{exts: []ext{sniExt(strings.Repeat("abcdefg.", 32) + "com")}}), 1<<14), "longer than 253"},
		{"two host names", records(buildHello(helloSpec{exts: []ext{sniExt("a.b", "c.d")}}), 1<<14), "more than one host_name"},
		{"SNI list empty", records(buildHello(helloSpec{exts: []ext{{extServerName, []byte{0, 0}}}}), 1<<14), "bad server_name extension"},
		{"SNI entry truncated", records(buildHello(helloSpec{exts: []ext{{extServerName, []byte{0, 4, 0, 0, 9, 'a'}}}}), 1<<14), "bad server_name entry"},
		{"ALPN empty list", records(buildHello(helloSpec{exts: []ext{{extALPN, []byte{0, 0}}}}), 1<<14), "bad ALPN extension"},
		{"ALPN empty protocol", records(buildHello(helloSpec{exts: []ext{alpnExt("h2", "")}}), 1<<14), "bad ALPN protocol"},
		{"ALPN overflowing protocol", records(buildHello(helloSpec{exts: []ext{{extALPN, []byte{0, 2, 5, 'a'}}}}), 1<<14), "bad ALPN protocol"},
		{"versions odd length", records(buildHello(helloSpec{exts: []ext{{extSupportedVersions, []byte{3, 3, 4, 3}}}}), 1<<14), "supported_versions"},
		{"versions empty", records(buildHello(helloSpec{exts: []ext{versionsExt()}}), 1<<14), "supported_versions"},
		{"extension data overflows", records(buildHello(helloSpec{trailing: []byte{0, 4, 0, 0, 0, 200}, noExts: true}), 1<<14), "truncated extension"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, err := ParseClientHello(tc.in)
			if err == nil || err == ErrNotTLS || (err == ErrNeedMore && tc.want != "") {
				t.Fatalf("got %+v, %v; want an error containing %q", h, err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

// TestMaxClientHello checks the promise that a MaxClientHello buffer is
// always enough: the largest hello fits, and anything larger fails rather
// than asking for more.
func TestMaxClientHello(t *testing.T) {
	// A hello whose body is exactly maxHelloBody: pad with an unknown extension.
	base := buildHello(helloSpec{exts: []ext{sniExt("max.example")}})
	pad := maxHelloBody - (len(base) - 4) - 4
	biggest := buildHello(helloSpec{exts: []ext{sniExt("max.example"), {0xffce, make([]byte, pad)}}})
	if len(biggest) != 4+maxHelloBody {
		t.Fatalf("built %d bytes, want %d", len(biggest), 4+maxHelloBody)
	}
	tooBig := buildHello(helloSpec{exts: []ext{sniExt("max.example"), {0xffce, make([]byte, pad+1)}}})

	tests := []struct {
		name string
		in   []byte
		ok   bool
	}{
		{"largest in 2 records", records(biggest, 1<<14), true},
		{"largest in 4 records", records(biggest, 4097), true},
		{"largest in 5 records", records(biggest, 4000), false},
		{"body one byte over", records(tooBig, 1<<14), false},
		{"small hello in many records", records(buildHello(helloSpec{exts: []ext{sniExt("max.example"), {0xffce, make([]byte, 3000)}}}), 1), false},
		{"small hello in many records that fit", records(base, 1), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in
			if len(in) < MaxClientHello {
				// Whatever follows, the caller has a full buffer.
				in = append(in, make([]byte, MaxClientHello-len(in))...)
			}
			h, err := ParseClientHello(in[:MaxClientHello])
			if tc.ok != (err == nil) || err == ErrNeedMore {
				t.Fatalf("got %v, want ok=%v", err, tc.ok)
			}
			if tc.ok && h.ServerName != "max.example" {
				t.Errorf("SNI %q", h.ServerName)
			}
		})
	}
}

// TestParseClientHelloDoesNotAlias checks the result survives the caller
// reusing its buffer.
func TestParseClientHelloDoesNotAlias(t *testing.T) {
	b := readTestdata(t, "go_sni_alpn.bin")
	h, err := ParseClientHello(b)
	if err != nil {
		t.Fatal(err)
	}
	clear(b)
	if h.ServerName != "www.example.com" || !slices.Equal(h.ALPN, []string{"h2", "http/1.1"}) {
		t.Fatalf("result changed with the buffer: %+v", h)
	}
}

func FuzzParseClientHello(f *testing.F) {
	for _, tc := range recorded {
		b := readTestdata(f, tc.file)
		f.Add(b)
		f.Add(fragment(f, b, 300))
	}
	f.Add(records(buildHello(helloSpec{exts: []ext{sniExt("A.b"), alpnExt("h2"), versionsExt(0x0304)}}), 7))
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseClientHello(b)
		if err == ErrNeedMore && len(b) >= MaxClientHello {
			t.Fatalf("ErrNeedMore with %d bytes", len(b))
		}
		if err != nil {
			if h != nil {
				t.Fatal("non-nil hello with an error")
			}
			return
		}
		if h.ServerName != strings.ToLower(h.ServerName) || strings.HasSuffix(h.ServerName, ".") {
			t.Fatalf("server name %q not normalised", h.ServerName)
		}
		if h.ServerName != "" {
			if err := checkHostName([]byte(h.ServerName)); err != nil {
				t.Fatalf("server name %q: %v", h.ServerName, err)
			}
		}
		if len(h.Versions) == 0 {
			t.Fatal("no versions")
		}
		for _, p := range h.ALPN {
			if p == "" {
				t.Fatal("empty ALPN protocol")
			}
		}
		// A successful parse is stable under more bytes after it.
		h2, err := ParseClientHello(append(slices.Clip(b), 0x16))
		if err != nil || h2.ServerName != h.ServerName || !slices.Equal(h2.ALPN, h.ALPN) {
			t.Fatalf("parse changed with a trailing byte: %v", err)
		}
	})
}

func BenchmarkParseClientHello(b *testing.B) {
	for _, file := range []string{"go_sni_alpn.bin", "go_large_fragmented.bin"} {
		in := readTestdata(b, file)
		b.Run(file, func(b *testing.B) {
			b.SetBytes(int64(len(in)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ParseClientHello(in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
