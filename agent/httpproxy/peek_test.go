//go:build unix

package httpproxy

import (
	"net"
	"testing"
	"time"
)

// TestPeeker: an idle connection is usable while nothing is readable, and not
// once the peer sent a byte or closed; peeking consumes nothing.
func TestPeeker(t *testing.T) {
	tests := []struct {
		name string
		peer func(net.Conn)
		want bool
	}{
		{"quiet", func(net.Conn) {}, false},
		{"unsolicited bytes", func(c net.Conn) { c.Write([]byte("HTTP/1.1 408 Request Timeout\r\n\r\n")) }, true},
		{"closed", func(c net.Conn) { c.Close() }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			s, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			tt.peer(s)
			// Loopback delivers at once, but poll for the event to be safe.
			deadline := time.Now().Add(2 * time.Second)
			pk := newPeeker(c)
			got := pk.unusable()
			for got != tt.want && tt.want && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
				got = pk.unusable()
			}
			if got != tt.want {
				t.Fatalf("unusable() = %v, want %v", got, tt.want)
			}
			if tt.name == "unsolicited bytes" {
				buf := make([]byte, 9)
				c.SetReadDeadline(time.Now().Add(time.Second))
				if n, err := c.Read(buf); err != nil || string(buf[:n]) != "HTTP/1.1 " {
					t.Fatalf("after the peek, read %q, %v: the peek consumed bytes", buf[:n], err)
				}
			}
		})
	}
}

// BenchmarkPeeker: the check before each reuse of a fast-path connection.
func BenchmarkPeeker(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	pk := newPeeker(c)
	b.ReportAllocs()
	for b.Loop() {
		if pk.unusable() {
			b.Fatal("a quiet connection is unusable")
		}
	}
}
