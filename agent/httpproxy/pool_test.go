package httpproxy_test

import (
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-proxy/flotilla/agent/httpproxy"
)

// TestFastPath: bodiless GETs to an HTTP/1.1 cluster reuse one upstream connection, survive
// the endpoint closing it while idle, and pass chunked bodies, trailers and HEAD.
func TestFastPath(t *testing.T) {
	var (
		mu      sync.Mutex
		remotes = map[string]int{}
		closed  atomic.Int32
	)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	be := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			remotes[r.RemoteAddr]++
			mu.Unlock()
			switch r.URL.Path {
			case "/chunked":
				w.Header().Set("Trailer", "X-Checksum")
				io.WriteString(w, "part one,")
				w.(http.Flusher).Flush()
				io.WriteString(w, "part two")
				w.Header().Set("X-Checksum", "42")
			default:
				w.Header().Set("Content-Length", "5")
				io.WriteString(w, "hello")
			}
		}),
		IdleTimeout: 200 * time.Millisecond,
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateClosed {
				closed.Add(1)
			}
		},
	}
	go be.Serve(ln)
	t.Cleanup(func() { be.Close() })
	p := startProxy(t, &httpproxy.Config{Listener: "web", Manager: manager(), Table: table(fwd("r", "/", "be"))}, nil,
		cluster{Cluster: httpproxy.Cluster{Name: "be", IdleTimeout: time.Hour}, endpoints: []string{ln.Addr().String()}})
	c := noRedirect()

	for range 5 {
		if resp, body := do(t, c, newRequest(t, "GET", p.url("/"), nil)); resp.StatusCode != 200 || body != "hello" {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
	}
	mu.Lock()
	conns := len(remotes)
	mu.Unlock()
	if conns != 1 {
		t.Errorf("5 sequential requests used %d upstream connections, want 1", conns)
	}

	waitFor(t, 5*time.Second, "the backend to close the idle connection", func() bool { return closed.Load() >= 1 })
	if resp, body := do(t, c, newRequest(t, "GET", p.url("/"), nil)); resp.StatusCode != 200 || body != "hello" {
		t.Fatalf("after the backend closed the idle connection: %d %q", resp.StatusCode, body)
	}

	resp, body := do(t, c, newRequest(t, "GET", p.url("/chunked"), nil))
	if body != "part one,part two" || resp.Trailer.Get("X-Checksum") != "42" {
		t.Errorf("chunked: %q, trailer %q", body, resp.Trailer.Get("X-Checksum"))
	}
	resp, body = do(t, c, newRequest(t, "HEAD", p.url("/"), nil))
	if resp.StatusCode != 200 || body != "" || resp.ContentLength != 5 {
		t.Errorf("HEAD: %d %q length %d", resp.StatusCode, body, resp.ContentLength)
	}
	if resp, body := do(t, c, newRequest(t, "GET", p.url("/"), nil)); body != "hello" {
		t.Errorf("after HEAD: %d %q", resp.StatusCode, body)
	}
}

// TestFastPathHugeHeaders: an endpoint that never ends its response headers gets a 502, not
// the proxy's memory.
func TestFastPathHugeHeaders(t *testing.T) {
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
				buf := make([]byte, 4096)
				c.Read(buf)
				io.WriteString(c, "HTTP/1.1 200 OK\r\n")
				line := []byte("X-Junk: " + strings.Repeat("x", 1000) + "\r\n")
				for {
					if _, err := c.Write(line); err != nil {
						return
					}
				}
			}()
		}
	}()
	p := startProxy(t, &httpproxy.Config{Listener: "web", Manager: manager(), Table: table(fwd("r", "/", "be"))}, nil,
		cluster{Cluster: httpproxy.Cluster{Name: "be"}, endpoints: []string{ln.Addr().String()}})
	if resp, body := do(t, noRedirect(), newRequest(t, "GET", p.url("/"), nil)); resp.StatusCode != 502 {
		t.Errorf("got %d %q, want 502", resp.StatusCode, body)
	}
}
