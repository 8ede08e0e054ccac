package httpproxy_test

// Reproductions from the review of the early-response change (branch httpearly). Each test
// states the behaviour wanted; a failure is a finding of the review.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-proxy/flotilla/agent/httpproxy"
)

// TestReviewEarlyBadChunkCloses: after an early response to a chunked upload, a framing
// error in the rest of the body must close the client connection; bytes after it must
// never be read as a request (RFC 9112 §6.3: the connection cannot be trusted).
func TestReviewEarlyBadChunkCloses(t *testing.T) {
	for _, mode := range []struct {
		name string
		m    earlyMode
	}{{"close", earlyClose}, {"hold", earlyHold}, {"drain", earlyDrain}} {
		t.Run(mode.name, func(t *testing.T) { testEarlyBadChunk(t, mode.m) })
	}
}

func testEarlyBadChunk(t *testing.T, mode earlyMode) {
	eb := startEarlyBackend(t, 200, mode)
	p := startProxy(t, &httpproxy.Config{Listener: "web", Manager: manager(), Table: table(fwd("r", "/", "be"))}, nil,
		cluster{Cluster: httpproxy.Cluster{Name: "be"}, endpoints: []string{eb.addr}})
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("early response: %v", err)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatalf("early response body: %v", err)
	}
	// A chunk size line that is no number, then a request (the write may fail when the
	// proxy said Connection: close and closed).
	io.WriteString(c, "ZZZ\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
	next, err := http.ReadResponse(br, nil)
	if err == nil {
		next.Body.Close()
		t.Errorf("a request after the bad chunk was served: %d", next.StatusCode)
	}
	if eb.smuggled() {
		t.Error("the backend got GET /smuggled: bytes after a body framing error were read as a request")
	}
}

// TestReviewEarlyStalledClientClosed: a client that stops sending its body once it has
// the early response, and keeps the connection open, is not held for ever: request_timeout
// or the stream idle timeout still bound it, as they do while the handler runs.
func TestReviewEarlyStalledClientClosed(t *testing.T) {
	for _, mode := range []struct {
		name string
		m    earlyMode
	}{{"close", earlyClose}, {"hold", earlyHold}} {
		t.Run(mode.name, func(t *testing.T) {
			eb := startEarlyBackend(t, 413, mode.m)
			m := manager()
			m.RequestTimeout = 500 * time.Millisecond
			m.StreamIdleTimeout = 500 * time.Millisecond
			p := startProxy(t, &httpproxy.Config{Listener: "web", Manager: m, Table: table(fwd("r", "/", "be"))}, nil,
				cluster{Cluster: httpproxy.Cluster{Name: "be"}, endpoints: []string{eb.addr}})
			c, err := net.Dial("tcp", p.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			fmt.Fprintf(c, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", earlyReqSize)
			c.Write(earlyBody(64 << 10))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("early response: %v", err)
			}
			io.Copy(io.Discard, resp.Body)
			t.Logf("status %d, Connection: close %v", resp.StatusCode, resp.Close)
			start := time.Now()
			if !closedWithin(c, 4*time.Second) {
				t.Errorf("the proxy still holds the connection %v after the response (request_timeout and stream_idle_timeout 0.5s)", time.Since(start).Round(time.Millisecond))
			}
		})
	}
}

// TestReviewWebSocketUpstreamGone: once the upstream of an upgraded connection has closed
// it, the client's further writes must not be swallowed for ever: the proxy ends the
// client connection (as it did before earlyConn, on the write error).
func TestReviewWebSocketUpstreamGone(t *testing.T) {
	ws := startEchoFunc(t, func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nbye")
		brw.Flush()
		c.Close() // the upstream goes away at once
	})
	route := fwd("ws", "/", "ws")
	route.Forward.Upgrades = map[string]bool{"websocket": true}
	p := startProxy(t, &httpproxy.Config{Listener: "web", Manager: manager(), Table: table(route)}, nil,
		cluster{Cluster: httpproxy.Cluster{Name: "ws"}, endpoints: []string{ws.addr}})
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	got, _ := io.ReadAll(br) // "bye", then the proxy's FIN (CloseWrite) or close
	if !strings.HasPrefix(string(got), "bye") {
		t.Fatalf("read %q, want bye", got)
	}
	// The client keeps writing, as one that ignores a half-close does.
	deadline := time.Now().Add(4 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := c.Write([]byte("ping")); err != nil {
			return // the proxy closed the connection: good
		}
		time.Sleep(20 * time.Millisecond) // pacing the client's writes, not waiting for a condition
	}
	t.Error("4s of writes after the upstream closed all succeeded: the proxy swallows them and never closes")
}

// chunked frames b in chunks of 8 KiB, with a trailer.
func chunked(b []byte) string {
	var s strings.Builder
	for len(b) > 0 {
		n := min(len(b), 8<<10)
		fmt.Fprintf(&s, "%x\r\n%s\r\n", n, b[:n])
		b = b[n:]
	}
	s.WriteString("0\r\nX-Trailer: t\r\n\r\n")
	return s.String()
}

// TestReviewEarlyPipelined: an upload answered early, with the next request pipelined
// right after its body in the same write: the next request is served (or the connection
// closed), and no byte of the body is read as a request, for every framing.
func TestReviewEarlyPipelined(t *testing.T) {
	body := earlyBody(100 << 10) // under net/http's 256 KiB post-handler discard
	const after = "GET /after HTTP/1.1\r\nHost: x\r\n\r\n"
	tests := []struct {
		name string
		req  string
	}{
		{"content-length", fmt.Sprintf("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(body), body)},
		{"chunked", "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(body)},
		{"http/1.0 keep-alive", fmt.Sprintf("POST /upload HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nContent-Length: %d\r\n\r\n%s", len(body), body)},
		{"expect 100-continue", fmt.Sprintf("POST /upload HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n%s", len(body), body)},
	}
	for _, mode := range []struct {
		name string
		m    earlyMode
	}{{"close", earlyClose}, {"hold", earlyHold}, {"drain", earlyDrain}} {
		for _, tt := range tests {
			t.Run(mode.name+"/"+tt.name, func(t *testing.T) {
				eb := startEarlyBackend(t, 413, mode.m)
				p := startProxy(t, &httpproxy.Config{Listener: "web", Manager: manager(), Table: table(fwd("r", "/", "be"))}, nil,
					cluster{Cluster: httpproxy.Cluster{Name: "be"}, endpoints: []string{eb.addr}})
				c, err := net.Dial("tcp", p.addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				go io.WriteString(c, tt.req+after)
				br := bufio.NewReader(c)
				var resp *http.Response
				for {
					resp, err = http.ReadResponse(br, nil)
					if err != nil {
						t.Fatalf("early response: %v", err)
					}
					if resp.StatusCode != http.StatusContinue {
						break
					}
				}
				io.Copy(io.Discard, resp.Body)
				if resp.StatusCode != 413 {
					t.Errorf("status %d, want 413", resp.StatusCode)
				}
				if next, err := http.ReadResponse(br, nil); err == nil {
					b, _ := io.ReadAll(next.Body)
					if next.StatusCode != 200 || string(b) != "ok" {
						t.Errorf("the pipelined request: %d %q, want 200 \"ok\"", next.StatusCode, b)
					}
				} else if !closedErr(err) {
					t.Errorf("after the early response: %v, want the pipelined request's response or a close", err)
				}
				if eb.smuggled() {
					t.Error("the backend got GET /smuggled: the rest of the body was read as a request")
				}
			})
		}
	}
}

// TestReviewMaxRequestBodyFullDuplex: a chunked body over max_request_body gets the
// proxy's own 413 with Connection: close, and what follows is never served, also now that
// requests with a body are served in full duplex mode.
func TestReviewMaxRequestBodyFullDuplex(t *testing.T) {
	for _, size := range []int{100 << 10, 1 << 20} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			eb := startEarlyBackend(t, 200, earlyDrain)
			m := manager()
			m.MaxRequestBodyBytes = 64 << 10
			p := startProxy(t, &httpproxy.Config{Listener: "web", Manager: m, Table: table(fwd("r", "/", "be"))}, nil,
				cluster{Cluster: httpproxy.Cluster{Name: "be"}, endpoints: []string{eb.addr}})
			c, err := net.Dial("tcp", p.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			// Not /upload: the backend reads the whole body before it answers.
			go io.WriteString(c, "POST /big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"+
				chunked(earlyBody(size))+"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("response: %v", err)
			}
			io.Copy(io.Discard, resp.Body)
			if resp.StatusCode != 413 || !resp.Close {
				t.Errorf("status %d, Connection: close %v; want 413 and close", resp.StatusCode, resp.Close)
			}
			if next, err := http.ReadResponse(br, nil); err == nil {
				t.Errorf("a request after the 413 was served: %d", next.StatusCode)
			}
			if eb.smuggled() {
				t.Error("the backend got GET /smuggled")
			}
		})
	}
}

// BenchmarkReviewUpload measures 16 MiB uploads through the proxy to a backend that reads
// them whole (upstream connections wrapped in earlyConn since httpearly), and 1 KiB POSTs.
func BenchmarkReviewUpload(b *testing.B) {
	be := startBackend(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	}))
	p := startProxy(b, &httpproxy.Config{Listener: "web", Manager: manager(), Table: table(fwd("r", "/", "be"))}, nil,
		cluster{Cluster: httpproxy.Cluster{Name: "be"}, endpoints: []string{be.addr}})
	for _, size := range []int{1 << 10, 16 << 20} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			body := strings.Repeat("x", size)
			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr}
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				resp, err := c.Post(p.url("/up"), "application/octet-stream", strings.NewReader(body))
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
		})
	}
}

// TestReviewClientStopsReading: a client that uploads a body and then reads nothing of a
// large response is ended by the stream idle timeout, not held for ever: the handler,
// blocked writing to it, gets a past write deadline, and the upstream request ends.
func TestReviewClientStopsReading(t *testing.T) {
	big := strings.Repeat("x", 64<<20)
	gaveUp := make(chan struct{}, 1) // the backend's write failed: the proxy ended the stream
	be := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if _, err := io.WriteString(w, big); err != nil {
			gaveUp <- struct{}{}
		}
	}))
	m := manager()
	m.StreamIdleTimeout = 300 * time.Millisecond
	p := startProxy(t, &httpproxy.Config{Listener: "web", Manager: m, Table: table(fwd("r", "/", "be"))}, nil,
		cluster{Cluster: httpproxy.Cluster{Name: "be"}, endpoints: []string{be.addr}})
	for _, method := range []string{"GET", "POST"} {
		t.Run(method, func(t *testing.T) {
			c, err := net.Dial("tcp", p.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if method == "GET" {
				io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			} else {
				io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
			}
			// Read nothing until the proxy gave up on the stream (the stream idle timeout
			// is 0.3s: the upstream request is cancelled and the backend's write fails),
			// then see whether it closed the connection: the rest of what it sent, then EOF.
			select {
			case <-gaveUp:
			case <-time.After(20 * time.Second):
				t.Fatal("the stream idle timeout did not end the upstream request of a client that stopped reading")
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := io.Copy(io.Discard, c)
			if n >= int64(len(big)) {
				t.Errorf("the client got the whole response (%d bytes) after its stall: the stream was not ended", n)
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Errorf("the stream idle timeout did not end a stream whose client stopped reading: read %d bytes (the whole response: %d), then the connection stayed open", n, len(big))
			}
			t.Logf("read %d bytes of %d after the stall, then %v", n, len(big), err)
		})
	}
}
