package main

import (
	"context"
	"io"
	"net"
	"testing"
	"time"
)

func TestOpen(t *testing.T) {
	tests := []struct {
		name   string
		answer bool
		wantOK int
	}{
		{name: "backend answers", answer: true, wantOK: 20},
		{name: "backend closes without answering", answer: false, wantOK: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					go func() {
						defer c.Close()
						var b [1]byte
						if _, err := io.ReadFull(c, b[:]); err != nil || !tt.answer {
							return
						}
						c.Write([]byte{'y'})
						io.Copy(io.Discard, c)
					}()
				}
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			conns, failed, firstErr := open(ctx, ln.Addr().String(), 20, 4)
			t.Cleanup(func() {
				for _, c := range conns {
					c.Close()
				}
			})
			if len(conns) != tt.wantOK || failed != 20-tt.wantOK {
				t.Fatalf("open: ok=%d failed=%d (first error %v), want ok=%d", len(conns), failed, firstErr, tt.wantOK)
			}
			if (firstErr != nil) != (tt.wantOK < 20) {
				t.Fatalf("first error %v with ok=%d", firstErr, len(conns))
			}
		})
	}
}
