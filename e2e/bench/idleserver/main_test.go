package main

import (
	"context"
	"io"
	"net"
	"testing"
	"time"
)

func TestServeAnswersAndHolds(t *testing.T) {
	tests := []struct {
		name  string
		conns int
	}{
		{name: "one connection", conns: 1},
		{name: "many connections", conns: 50},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			s := &server{}
			served := make(chan struct{})
			go func() { s.serve(ctx, ln); close(served) }()
			t.Cleanup(func() { cancel(); <-served })

			var conns []net.Conn
			for range tt.conns {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				conns = append(conns, c)
				c.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := c.Write([]byte{'x'}); err != nil {
					t.Fatal(err)
				}
				var b [1]byte
				if _, err := io.ReadFull(c, b[:]); err != nil || b[0] != 'y' {
					t.Fatalf("answer %q, %v; want y", b[0], err)
				}
			}
			// Held: nothing more arrives until the server is told to stop, then EOF.
			conns[0].SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			var b [1]byte
			if n, err := conns[0].Read(b[:]); n != 0 || !isTimeout(err) {
				t.Fatalf("held connection read %d bytes, %v; want a timeout", n, err)
			}
			if got := s.answered.Load(); got != int64(tt.conns) {
				t.Fatalf("answered %d, want %d", got, tt.conns)
			}
			cancel()
			<-served
			for _, c := range conns {
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := c.Read(b[:]); err != io.EOF {
					t.Fatalf("after stop: %v, want EOF", err)
				}
				c.Close()
			}
		})
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
