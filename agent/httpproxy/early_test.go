package httpproxy_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/flotilla-proxy/flotilla/agent/httpproxy"
)

// Sizes of TestEarlyResponse's exchanges: a request body far beyond socket buffers and
// net/http's 256 KiB post-handler discard, and a response body that takes several writes.
const (
	earlyReqSize  = 8 << 20
	earlyRespSize = 64 << 10
	// earlySmallSize is a request body under net/http's 256 KiB post-handler discard, and
	// over what the backend reads with the headers.
	earlySmallSize = 200 << 10
)

// smuggle is what the request body is made of: if any of it were read as a request, the
// backend would see a request for /smuggled.
const smuggle = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"

// earlyBody returns a request body of n bytes made of smuggle.
func earlyBody(n int) []byte {
	b := bytes.Repeat([]byte(smuggle), n/len(smuggle)+1)
	return b[:n]
}

// earlyRespBody is the early response's body: lines numbered so that a cut shows.
func earlyRespBody() []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < earlyRespSize; i++ {
		fmt.Fprintf(&b, "%015d\n", i)
	}
	return b.Bytes()[:earlyRespSize]
}

// How an early backend treats the rest of the body of the request it answered early.
type earlyMode int

const (
	earlyClose earlyMode = iota // says Connection: close and closes (unread bytes: a RST)
	earlyHold                   // keeps the connection open and reads nothing more
	earlyDrain                  // reads the rest of the body, then serves the next request
)

// earlyBackend is a raw HTTP/1.1 backend: it answers POST /upload with status and
// earlyRespBody as soon as it has the request headers, and any other request with 200
// "ok" after reading its body. It records the paths it was asked for.
type earlyBackend struct {
	addr   string
	status int
	mode   earlyMode

	done chan struct{} // closed at the test's end

	mu    sync.Mutex
	paths []string
	conns []net.Conn
}

func startEarlyBackend(t *testing.T, status int, mode earlyMode) *earlyBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &earlyBackend{addr: ln.Addr().String(), status: status, mode: mode, done: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.conns = append(b.conns, c)
			b.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				b.serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		close(b.done)
		ln.Close()
		b.mu.Lock()
		for _, c := range b.conns {
			c.Close()
		}
		b.mu.Unlock()
		wg.Wait()
	})
	return b
}

func (b *earlyBackend) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	resp := earlyRespBody()
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		b.mu.Lock()
		b.paths = append(b.paths, req.URL.Path)
		b.mu.Unlock()
		if req.URL.Path != "/upload" {
			io.Copy(io.Discard, req.Body)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			continue
		}
		hdr := fmt.Sprintf("HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n",
			b.status, http.StatusText(b.status), len(resp))
		if b.mode == earlyClose {
			hdr += "Connection: close\r\n"
		}
		io.WriteString(c, hdr+"\r\n")
		c.Write(resp)
		switch b.mode {
		case earlyClose:
			return
		case earlyHold:
			<-b.done
			return
		case earlyDrain:
			if _, err := io.Copy(io.Discard, req.Body); err != nil {
				return
			}
		}
	}
}

// smuggled reports whether the backend was asked for /smuggled.
func (b *earlyBackend) smuggled() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range b.paths {
		if p == "/smuggled" {
			return true
		}
	}
	return false
}

// goEarlyHandler is the same early answer from a net/http backend (which then closes the
// connection, the unread body being over its 256 KiB discard).
func goEarlyHandler(status int) http.Handler {
	resp := earlyRespBody()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/upload" {
			io.Copy(io.Discard, r.Body)
			io.WriteString(w, "ok")
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", fmt.Sprint(len(resp)))
		w.WriteHeader(status)
		w.Write(resp)
	})
}

// TestEarlyResponse: a backend that answers an upload before reading its body (a 413, a
// 401, an early 200) gets its whole response to the client, as nginx and Envoy do. The
// rest of the request body is never taken for a request; the client connection is then
// closed, or kept once the rest of the body has been read.
func TestEarlyResponse(t *testing.T) {
	type backend struct {
		raw    earlyMode // for the raw backend
		goSrv  bool      // a net/http backend instead
		upH2   bool      // the net/http backend over h2c
		status int
	}
	type client struct {
		h2c  bool          // HTTP/2 with prior knowledge, else a raw HTTP/1.1 client
		slow time.Duration // pause between 64 KiB writes of the body
		size int           // of the request body
		stop bool          // the HTTP/1.1 client sends 64 KiB of the body, then waits for the response (curl after an error status)
	}
	var tests []struct {
		name string
		be   backend
		cl   client
	}
	backends := []struct {
		name string
		be   backend
	}{
		{"413 close", backend{raw: earlyClose, status: 413}},
		{"413 hold", backend{raw: earlyHold, status: 413}},
		{"413 drain", backend{raw: earlyDrain, status: 413}},
		{"200 hold", backend{raw: earlyHold, status: 200}},
		{"401 net/http", backend{goSrv: true, status: 401}},
		{"413 net/http h2c", backend{goSrv: true, upH2: true, status: 413}},
	}
	clients := []struct {
		name string
		cl   client
	}{
		{"h1 fast", client{size: earlyReqSize}},
		{"h1 slow", client{slow: time.Millisecond, size: earlyReqSize}},
		{"h1 small", client{size: earlySmallSize}}, // net/http's server would discard the rest
		{"h1 small slow", client{slow: 5 * time.Millisecond, size: earlySmallSize}},
		{"h1 stops", client{size: earlyReqSize, stop: true}},
		{"h2c fast", client{h2c: true, size: earlyReqSize}},
		{"h2c slow", client{h2c: true, slow: time.Millisecond, size: earlyReqSize}},
	}
	for _, b := range backends {
		for _, c := range clients {
			tests = append(tests, struct {
				name string
				be   backend
				cl   client
			}{b.name + "/" + c.name, b.be, c.cl})
		}
	}
	want := earlyRespBody()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var (
				addr string
				eb   *earlyBackend
			)
			if tt.be.goSrv {
				addr = startBackend(t, goEarlyHandler(tt.be.status)).addr
			} else {
				eb = startEarlyBackend(t, tt.be.status, tt.be.raw)
				addr = eb.addr
			}
			p := startProxy(t, &httpproxy.Config{Listener: "web", Manager: manager(), Table: table(fwd("r", "/", "be"))}, nil,
				cluster{Cluster: httpproxy.Cluster{Name: "be", HTTP2: tt.be.upH2}, endpoints: []string{addr}})
			var (
				status int
				got    []byte
				body   = earlyBody(tt.cl.size)
			)
			if tt.cl.h2c {
				status, got = earlyH2C(t, p.addr, body, tt.cl.slow)
			} else {
				status, got = earlyH1(t, p.addr, body, tt.cl.slow, tt.cl.stop)
			}
			if status != tt.be.status {
				t.Errorf("status %d, want %d", status, tt.be.status)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("response body: %d bytes, want %d: %s", len(got), len(want), cutAt(got, want))
			}
			if eb != nil && eb.smuggled() {
				t.Error("the backend got a request for /smuggled: the rest of the body was taken for a request")
			}
		})
	}
}

// cutAt describes where got stops matching want.
func cutAt(got, want []byte) string {
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	return fmt.Sprintf("same as wanted for %d bytes", i)
}

// pacedReader hands out r in 64 KiB reads, pausing before each but the first.
type pacedReader struct {
	r     io.Reader
	pause time.Duration
	n     int
}

func (p *pacedReader) Read(b []byte) (int, error) {
	if p.n > 0 && p.pause > 0 {
		time.Sleep(p.pause) // pacing the client, not waiting for a condition
	}
	p.n++
	return p.r.Read(b[:min(len(b), 64<<10)])
}

// earlyH1 posts body to /upload over a raw HTTP/1.1 connection, writing it in the
// background as a client that reads the response independently does, and returns the
// response. Then it checks the connection: closed by the proxy (after the response said
// Connection: close, or after the rest of the body), or still in sync, serving a request.
//
// With stop, the client sends only the first 64 KiB of the body and waits for the response;
// it closes the connection after it.
func earlyH1(t *testing.T, addr string, body []byte, pause time.Duration, stop bool) (int, []byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	written := make(chan error, 1)
	go func() {
		_, err := fmt.Fprintf(c, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", len(body))
		switch {
		case err != nil:
		case stop:
			_, err = c.Write(body[:64<<10])
		default:
			_, err = io.Copy(c, &pacedReader{r: bytes.NewReader(body), pause: pause})
		}
		written <- err
	}()
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Errorf("reading the response body: %v", err)
	}
	if stop {
		return resp.StatusCode, got
	}
	if resp.Close {
		if !closedWithin(c, 10*time.Second) {
			t.Error("the proxy said Connection: close and kept the connection")
		}
		return resp.StatusCode, got
	}
	// Kept alive: the proxy must read (or discard) the rest of the body, then serve the
	// next request on the connection, or close the connection.
	if err := <-written; err != nil && !closedErr(err) {
		t.Fatalf("writing the body: %v", err)
	}
	_, err = io.WriteString(c, "GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
	if err != nil {
		if !closedErr(err) {
			t.Errorf("the request after the upload: %v", err)
		}
		return resp.StatusCode, got
	}
	next, err := http.ReadResponse(br, nil)
	if err != nil {
		if !closedErr(err) {
			t.Errorf("the request after the upload: %v", err)
		}
		return resp.StatusCode, got
	}
	b, _ := io.ReadAll(next.Body)
	if next.StatusCode != 200 || string(b) != "ok" {
		t.Errorf("the request after the upload: %d %q, want 200 \"ok\"", next.StatusCode, b)
	}
	return resp.StatusCode, got
}

// closedErr reports whether err says the peer closed the connection (and not that it
// stopped reading: a timeout is no close).
func closedErr(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// earlyH2C posts body to /upload over h2c with prior knowledge.
func earlyH2C(t *testing.T, addr string, body []byte, pause time.Duration) (int, []byte) {
	t.Helper()
	tr := &http.Transport{Protocols: &http.Protocols{}}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	req := newRequest(t, "POST", "http://"+addr+"/upload", &pacedReader{r: bytes.NewReader(body), pause: pause})
	req.ContentLength = int64(len(body))
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("HTTP/%d, want 2", resp.ProtoMajor)
	}
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Errorf("reading the response body: %v", err)
	}
	return resp.StatusCode, got
}
