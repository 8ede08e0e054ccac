package sniff

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

// tcpPair returns both ends of a real loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	return client, server
}

func matchHello(b []byte) error {
	_, err := ParseClientHello(b)
	return err
}

// TestPeekSplitWrites sends a recorded hello in three writes, each only
// after Peek has seen the previous one, so the hello really arrives in
// separate reads.
func TestPeekSplitWrites(t *testing.T) {
	hello := readTestdata(t, "go_large_fragmented.bin")
	parts := [][]byte{hello[:3], hello[3:2000], hello[2000:]}
	client, server := tcpPair(t)

	var seen atomic.Int64 // bytes match has seen
	var calls atomic.Int64
	errc := make(chan error, 1)
	go func() {
		sent := 0
		for _, p := range parts {
			if _, err := client.Write(p); err != nil {
				errc <- err
				return
			}
			sent += len(p)
			deadline := time.Now().Add(5 * time.Second)
			for seen.Load() < int64(sent) && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
		}
		errc <- nil
	}()

	buf := make([]byte, 0, MaxClientHello)
	got, err := Peek(server, buf, time.Now().Add(5*time.Second), func(b []byte) error {
		calls.Add(1)
		seen.Store(int64(len(b)))
		return matchHello(b)
	})
	if err != nil {
		t.Fatalf("Peek: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, hello) {
		t.Fatalf("peeked %d bytes, want the %d of the hello", len(got), len(hello))
	}
	if calls.Load() < 3 {
		t.Errorf("match called %d times, want >= 3 (one per write)", calls.Load())
	}
	if &got[0] != &buf[:1][0] {
		t.Error("Peek did not read into the caller's buffer")
	}
	h, _ := ParseClientHello(got)
	if h.ServerName != "big.example.com" {
		t.Errorf("SNI %q", h.ServerName)
	}
}

func TestPeekErrors(t *testing.T) {
	hello := readTestdata(t, "go_sni_alpn.bin")
	tests := []struct {
		name     string
		send     []byte // what the client writes
		close    bool   // client closes after writing
		capacity int
		wait     time.Duration
		wantErr  error
		wantLen  int
	}{
		{name: "client never speaks", capacity: MaxClientHello, wait: 100 * time.Millisecond, wantErr: os.ErrDeadlineExceeded},
		{name: "client stops mid hello", send: hello[:700], capacity: MaxClientHello, wait: 100 * time.Millisecond, wantErr: os.ErrDeadlineExceeded, wantLen: 700},
		{name: "buffer fills", send: hello, capacity: 1000, wait: 5 * time.Second, wantErr: ErrBufferFull, wantLen: 1000},
		{name: "client hangs up mid hello", send: hello[:10], close: true, capacity: MaxClientHello, wait: 5 * time.Second, wantErr: io.EOF, wantLen: 10},
		{name: "not TLS", send: []byte("SSH-2.0-OpenSSH_9.6\r\n"), capacity: MaxClientHello, wait: 5 * time.Second, wantErr: ErrNotTLS, wantLen: 21},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			client, server := tcpPair(t)
			if len(tc.send) > 0 {
				if _, err := client.Write(tc.send); err != nil {
					t.Fatal(err)
				}
			}
			if tc.close {
				client.Close()
			}
			start := time.Now()
			got, err := Peek(server, make([]byte, 0, tc.capacity), start.Add(tc.wait), matchHello)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("got %v, want %v", err, tc.wantErr)
			}
			if len(got) != tc.wantLen {
				t.Errorf("returned %d bytes, want %d", len(got), tc.wantLen)
			}
			if !bytes.Equal(got, tc.send[:len(got)]) {
				t.Error("returned bytes differ from those sent")
			}
			if tc.wantErr == os.ErrDeadlineExceeded && time.Since(start) > 3*time.Second {
				t.Errorf("deadline of %v took %v", tc.wait, time.Since(start))
			}
		})
	}
}

// TestPeekClearsDeadline checks a timed-out Peek leaves the conn usable with
// no deadline.
func TestPeekClearsDeadline(t *testing.T) {
	client, server := tcpPair(t)
	_, err := Peek(server, make([]byte, 0, 64), time.Now().Add(50*time.Millisecond), matchHello)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("got %v, want deadline exceeded", err)
	}
	if _, err := client.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	if _, err := server.Read(b[:]); err != nil {
		t.Fatalf("read after Peek: %v (deadline left set?)", err)
	}
}

// TestPeekPrefilled checks bytes already in buf are matched before reading,
// so a complete hello from an earlier peek (after a PROXY header, say) does
// not wait for a client that has nothing more to say.
func TestPeekPrefilled(t *testing.T) {
	_, server := tcpPair(t)
	hello := readTestdata(t, "go_sni_alpn.bin")
	buf := append(make([]byte, 0, MaxClientHello), hello...)
	got, err := Peek(server, buf, time.Now().Add(5*time.Second), matchHello)
	if err != nil || len(got) != len(hello) {
		t.Fatalf("got %d bytes, %v", len(got), err)
	}
}

// TestPeekThenHandshake checks the peeked bytes are exactly what the client
// sent: replayed ahead of the conn, they complete a real TLS handshake.
func TestPeekThenHandshake(t *testing.T) {
	cert := selfSigned(t, "peek.example")
	client, server := tcpPair(t)

	errc := make(chan error, 1)
	go func() {
		pool := x509.NewCertPool()
		pool.AddCert(cert.Leaf)
		c := tls.Client(client, &tls.Config{ServerName: "peek.example", RootCAs: pool, NextProtos: []string{"h2"}})
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if err := c.Handshake(); err != nil {
			errc <- err
			return
		}
		_, err := c.Write([]byte("ping"))
		errc <- err
	}()

	got, err := Peek(server, make([]byte, 0, MaxClientHello), time.Now().Add(5*time.Second), matchHello)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := ParseClientHello(got)
	if h.ServerName != "peek.example" {
		t.Fatalf("SNI %q", h.ServerName)
	}
	tc := tls.Server(&replayConn{Conn: server, r: io.MultiReader(bytes.NewReader(got), server)},
		&tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}})
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	var b [4]byte
	if _, err := io.ReadFull(tc, b[:]); err != nil || string(b[:]) != "ping" {
		t.Fatalf("read through TLS: %q, %v", b, err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

type replayConn struct {
	net.Conn
	r io.Reader
}

func (c *replayConn) Read(b []byte) (int, error) { return c.r.Read(b) }

func selfSigned(t *testing.T, name string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		DNSNames:              []string{name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// BenchmarkPeek measures Peek over loopback TCP with a hello already
// buffered in the socket, to show it allocates nothing beyond buf.
func BenchmarkPeek(b *testing.B) {
	hello := readTestdata(b, "go_sni_alpn.bin")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer server.Close()
	buf := make([]byte, 0, MaxClientHello)
	match := func(b []byte) error {
		if len(b) < len(hello) {
			return ErrNeedMore
		}
		return nil
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := client.Write(hello); err != nil {
			b.Fatal(err)
		}
		if _, err := Peek(server, buf, time.Time{}, match); err != nil {
			b.Fatal(err)
		}
	}
}
