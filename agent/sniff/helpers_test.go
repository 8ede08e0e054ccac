package sniff

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
)

var update = flag.Bool("update", false, "record testdata/*.bin from real TLS clients")

// readHelloRecords reads TLS records from r until they hold one whole
// handshake message, and returns the raw bytes read. It frames records on
// its own so recordings do not depend on the parser under test.
func readHelloRecords(r io.Reader) ([]byte, error) {
	var raw, msg []byte
	for {
		hdr := make([]byte, 5)
		if _, err := io.ReadFull(r, hdr); err != nil {
			return nil, err
		}
		n := int(hdr[3])<<8 | int(hdr[4])
		payload := make([]byte, n)
		if _, err := io.ReadFull(r, payload); err != nil {
			return nil, err
		}
		raw = append(append(raw, hdr...), payload...)
		msg = append(msg, payload...)
		if len(msg) >= 4 && len(msg) >= 4+(int(msg[1])<<16|int(msg[2])<<8|int(msg[3])) {
			return raw, nil
		}
	}
}

// recordHello listens on loopback, runs client against the address, and
// returns the records of the first handshake message the client sent.
func recordHello(t *testing.T, client func(addr string)) []byte {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	done := make(chan struct{})
	go func() {
		defer close(done)
		client(ln.Addr().String())
	}()
	t.Cleanup(func() { <-done })
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	raw, err := readHelloRecords(c)
	if err != nil {
		t.Fatalf("record client hello: %v", err)
	}
	return raw
}

// goClientHello records the ClientHello Go's crypto/tls client sends with cfg.
func goClientHello(t *testing.T, cfg *tls.Config) []byte {
	t.Helper()
	return recordHello(t, func(addr string) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		tls.Client(c, cfg).Handshake() // fails when the recorder hangs up
	})
}

// opensslClientHello records the ClientHello `openssl s_client` sends, or
// skips the test when openssl is not installed.
func opensslClientHello(t *testing.T, args ...string) []byte {
	t.Helper()
	bin, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl is not installed, so there is no openssl ClientHello to record")
	}
	return recordHello(t, func(addr string) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, append([]string{"s_client", "-connect", addr}, args...)...)
		cmd.Stdin = strings.NewReader("")
		cmd.Run() // fails when the recorder hangs up
	})
}

// readTestdata returns testdata/name.
func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatalf("%v (run go test -run TestGenerate -update to record)", err)
	}
	return b
}

// fragment reframes the handshake message carried by the records in raw
// into records of the given payload sizes; the last size repeats.
func fragment(t testing.TB, raw []byte, sizes ...int) []byte {
	t.Helper()
	var msg []byte
	for len(raw) > 0 {
		if len(raw) < 5 {
			t.Fatal("fragment: truncated record header")
		}
		n := int(raw[3])<<8 | int(raw[4])
		msg = append(msg, raw[5:5+n]...)
		raw = raw[5+n:]
	}
	return records(msg, sizes...)
}

// records frames a handshake message into handshake records of the given
// payload sizes; the last size repeats.
func records(msg []byte, sizes ...int) []byte {
	var out []byte
	for i := 0; len(msg) > 0; i++ {
		n := sizes[min(i, len(sizes)-1)]
		n = min(n, len(msg))
		out = append(out, 22, 3, 1, byte(n>>8), byte(n))
		out = append(out, msg[:n]...)
		msg = msg[n:]
	}
	return out
}

// ext is one extension for buildHello.
type ext struct {
	typ  uint16
	data []byte
}

// helloSpec describes a ClientHello for buildHello.
type helloSpec struct {
	legacy   uint16 // 0 means TLS 1.2
	noExts   bool   // omit the extensions block entirely
	exts     []ext
	suites   []uint16 // nil means one suite
	sessLen  int      // session id length
	trailing []byte   // bytes after the extensions, inside the body
}

// buildHello returns a ClientHello handshake message (4-byte header and body).
func buildHello(s helloSpec) []byte {
	if s.legacy == 0 {
		s.legacy = tls.VersionTLS12
	}
	if s.suites == nil {
		s.suites = []uint16{tls.TLS_AES_128_GCM_SHA256}
	}
	var b cryptobyte.Builder
	b.AddUint8(1)
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) {
		b.AddUint16(s.legacy)
		b.AddBytes(make([]byte, 32))
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(make([]byte, s.sessLen)) })
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
			for _, cs := range s.suites {
				b.AddUint16(cs)
			}
		})
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint8(0) })
		if !s.noExts {
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
				for _, e := range s.exts {
					b.AddUint16(e.typ)
					b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(e.data) })
				}
			})
		}
		b.AddBytes(s.trailing)
	})
	return b.BytesOrPanic()
}

func sniExt(names ...string) ext {
	var b cryptobyte.Builder
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		for _, n := range names {
			b.AddUint8(0)
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(n)) })
		}
	})
	return ext{extServerName, b.BytesOrPanic()}
}

func alpnExt(protos ...string) ext {
	var b cryptobyte.Builder
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		for _, p := range protos {
			b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(p)) })
		}
	})
	return ext{extALPN, b.BytesOrPanic()}
}

func versionsExt(vs ...uint16) ext {
	var b cryptobyte.Builder
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) {
		for _, v := range vs {
			b.AddUint16(v)
		}
	})
	return ext{extSupportedVersions, b.BytesOrPanic()}
}

// oracle feeds raw to a crypto/tls server and returns the ClientHelloInfo it
// saw, or an error when crypto/tls rejects the hello.
func oracle(t *testing.T, raw []byte) (*tls.ClientHelloInfo, error) {
	t.Helper()
	cli, srv := net.Pipe()
	defer cli.Close()
	defer srv.Close()
	go func() {
		cli.Write(raw)
		io.Copy(io.Discard, cli)
	}()
	var info *tls.ClientHelloInfo
	errStop := errors.New("stop after ClientHello")
	srv.SetDeadline(time.Now().Add(10 * time.Second))
	err := tls.Server(srv, &tls.Config{
		GetConfigForClient: func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
			info = hi
			return nil, errStop
		},
	}).Handshake()
	if info == nil {
		return nil, err
	}
	return info, nil
}
