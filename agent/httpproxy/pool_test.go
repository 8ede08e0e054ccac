package httpproxy_test

import (
	"bufio"
	"fmt"
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

// rawBackend is an HTTP/1.1 endpoint that answers each request with the bytes reply
// returns, verbatim (framing errors included); it reads each request's body first.
func rawBackend(t *testing.T, reply func(req *http.Request) string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					if _, err := io.WriteString(c, reply(req)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// TestFastPathExtraBytes: an endpoint that sends more than the framed response (a body on
// a HEAD response or on a 204, bytes after Content-Length) must not have the excess read
// as the next request's response, which may be another client's.
func TestFastPathExtraBytes(t *testing.T) {
	smuggled := "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nX-Smuggled: 1\r\n\r\nhacked!"
	tests := []struct {
		name, method, path string
		first              int // the first request's status
	}{
		{"body on HEAD", "HEAD", "/head", 200},
		{"body on 204", "GET", "/204", 204},
		{"body on 304", "GET", "/304", 304},
		{"bytes after Content-Length", "GET", "/extra", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := rawBackend(t, func(req *http.Request) string {
				switch req.URL.Path {
				case "/head":
					return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(smuggled), smuggled)
				case "/204":
					return fmt.Sprintf("HTTP/1.1 204 No Content\r\nContent-Length: %d\r\n\r\n%s", len(smuggled), smuggled)
				case "/304":
					return fmt.Sprintf("HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(smuggled), smuggled)
				case "/extra":
					return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + smuggled
				}
				return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
			})
			p := startProxy(t, &httpproxy.Config{Listener: "web", Manager: manager(), Table: table(fwd("all", "/", "c"))}, nil,
				cluster{Cluster: httpproxy.Cluster{Name: "c"}, endpoints: []string{addr}})
			if resp, _ := do(t, noRedirect(), newRequest(t, tt.method, p.url(tt.path), nil)); resp.StatusCode != tt.first {
				t.Fatalf("%s %s: %d, want %d", tt.method, tt.path, resp.StatusCode, tt.first)
			}
			for i := range 3 {
				resp, body := do(t, noRedirect(), newRequest(t, "GET", p.url("/victim"), nil))
				if resp.StatusCode != 200 || body != "ok" || resp.Header.Get("X-Smuggled") != "" {
					t.Fatalf("next request %d got %d %q X-Smuggled=%q, want 200 \"ok\"", i, resp.StatusCode, body, resp.Header.Get("X-Smuggled"))
				}
			}
		})
	}
}

// TestFastPathUnsolicitedResponse: a response an endpoint sends on an idle keep-alive
// connection (a 408 before it would close it) is not given to the next request.
func TestFastPathUnsolicitedResponse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg   sync.WaitGroup
		sent = make(chan struct{}, 1)
		stop = make(chan struct{})
	)
	t.Cleanup(func() { close(stop); ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for first := true; ; first = false {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func(first bool) {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				if first {
					// Unasked, on the idle connection, which stays open.
					io.WriteString(c, "HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")
					sent <- struct{}{}
					<-stop
				}
			}(first)
		}
	}()
	p := startProxy(t, &httpproxy.Config{Listener: "web", Manager: manager(), Table: table(fwd("all", "/", "c"))}, nil,
		cluster{Cluster: httpproxy.Cluster{Name: "c"}, endpoints: []string{ln.Addr().String()}})
	if resp, body := do(t, noRedirect(), newRequest(t, "GET", p.url("/1"), nil)); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("first request: %d %q", resp.StatusCode, body)
	}
	<-sent
	if resp, body := do(t, noRedirect(), newRequest(t, "GET", p.url("/2"), nil)); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("second request got %d %q, want 200 \"ok\" on a new connection", resp.StatusCode, body)
	}
}
