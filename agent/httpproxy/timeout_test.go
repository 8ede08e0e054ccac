package httpproxy_test

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-proxy/flotilla/agent/httpproxy"
)

// TestRouteTimeoutHungUpstreamLargeBody: an upstream that accepts the connection but never
// reads a body larger than the socket buffers gets the route timeout's 504, though the
// body never ends (the route timeout proper starts at its end).
func TestRouteTimeoutHungUpstreamLargeBody(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() { // accepts, never reads
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	rt := fwd("r", "/", "c")
	rt.Forward.Timeout = 300 * time.Millisecond
	p := startProxy(t, &httpproxy.Config{Listener: "web", Manager: manager(), Table: table(rt)}, nil,
		cluster{Cluster: httpproxy.Cluster{Name: "c"}, endpoints: []string{ln.Addr().String()}})
	t.Cleanup(func() { // before the proxy's cleanup, which waits for its requests to end
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})

	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	const size = 64 << 20 // far beyond loopback socket buffers
	done := make(chan struct{})
	go func() { // the client sends the body as fast as it is taken
		defer close(done)
		fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", size)
		chunk := bytes.Repeat([]byte("x"), 64<<10)
		for sent := 0; sent < size; sent += len(chunk) {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	}()
	start := time.Now()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no response from the proxy: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusGatewayTimeout {
		t.Errorf("status %d, want 504", resp.StatusCode)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("504 after %v, want about the 300ms route timeout", d)
	}
	c.Close()
	<-done
}
