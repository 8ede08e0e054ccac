package httpproxy

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// TestEarlyConn: after the peer's reset, writes report success and send nothing, reads
// still get what the peer sent before it, and writes after Close fail.
func TestEarlyConn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		io.ReadFull(c, make([]byte, 1)) // the request's first byte: the dial is done
		io.WriteString(c, "response")
		c.(*net.TCPConn).SetLinger(0) // close with a reset
		c.Close()
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := &earlyConn{Conn: nc}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("r")); err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	deadline := time.Now().Add(10 * time.Second)
	for c.reset.Load() == nil { // until a write has met the reset
		if time.Now().After(deadline) {
			t.Fatal("no write met the peer's reset")
		}
		if n, err := c.Write(chunk); err != nil || n != len(chunk) {
			t.Fatalf("write: %d, %v; want %d, nil", n, err, len(chunk))
		}
	}
	if n, err := c.Write(chunk); err != nil || n != len(chunk) {
		t.Fatalf("write after the reset: %d, %v; want %d, nil", n, err, len(chunk))
	}
	got, err := io.ReadAll(io.LimitReader(c, int64(len("response"))))
	if string(got) != "response" {
		t.Errorf("read %q, %v; want what the peer sent before its reset", got, err)
	}
	c.Close()
	if _, err := c.Write(chunk); !errors.Is(err, net.ErrClosed) {
		t.Errorf("write after Close: %v, want net.ErrClosed", err)
	}
}
