package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	bin "encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// seen is what an httpBackend saw of a request, as it answers it (JSON).
type seen struct {
	ID       string      `json:"id"`
	Method   string      `json:"method"`
	Host     string      `json:"host"`
	Path     string      `json:"path"`
	RawQuery string      `json:"raw_query"`
	Proto    string      `json:"proto"`
	Header   http.Header `json:"header"`
}

// httpBackend is an in-process HTTP/1.1 server on a free loopback port. It
// answers:
//   - .../slow?d=DURATION: after DURATION (or when the client goes away), 200;
//   - a WebSocket handshake (Upgrade: websocket): 101, then every frame it
//     reads is echoed back as a text frame "<id>:<payload>";
//   - anything else: 200 with the request as seen (JSON), so tests see which
//     backend answered and with which path and headers.
type httpBackend struct {
	id   string
	addr string
	srv  *httptest.Server

	slowActive atomic.Int64 // .../slow requests being answered

	mu       sync.Mutex
	hijacked map[net.Conn]bool
	wg       sync.WaitGroup
}

// startHTTPBackend starts an httpBackend; it is closed at cleanup.
func startHTTPBackend(t *testing.T, id string) *httpBackend {
	t.Helper()
	return startHTTPBackendWith(t, id, false)
}

// startH2CBackend starts an httpBackend that also speaks HTTP/2 in clear text
// (prior knowledge), as a cluster with protocol http2 expects.
func startH2CBackend(t *testing.T, id string) *httpBackend {
	t.Helper()
	return startHTTPBackendWith(t, id, true)
}

func startHTTPBackendWith(t *testing.T, id string, h2c bool) *httpBackend {
	t.Helper()
	b := &httpBackend{id: id, hijacked: make(map[net.Conn]bool)}
	b.srv = httptest.NewUnstartedServer(http.HandlerFunc(b.serveHTTP))
	if h2c {
		b.srv.Config.Protocols = new(http.Protocols)
		b.srv.Config.Protocols.SetHTTP1(true)
		b.srv.Config.Protocols.SetUnencryptedHTTP2(true)
	}
	b.srv.Start()
	b.addr = b.srv.Listener.Addr().String()
	t.Cleanup(b.close)
	return b
}

func (b *httpBackend) serveHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case strings.EqualFold(r.Header.Get("Upgrade"), "websocket"):
		b.serveWebSocket(w, r)
	case strings.HasSuffix(r.URL.Path, "/slow"):
		d, err := time.ParseDuration(r.URL.Query().Get("d"))
		if err != nil {
			http.Error(w, "d: "+err.Error(), http.StatusBadRequest)
			return
		}
		b.slowActive.Add(1)
		defer b.slowActive.Add(-1)
		select {
		case <-time.After(d):
			io.WriteString(w, b.id+": slept "+d.String()+"\n")
		case <-r.Context().Done():
		}
	default:
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(seen{ID: b.id, Method: r.Method, Host: r.Host, Path: r.URL.Path,
			RawQuery: r.URL.RawQuery, Proto: r.Proto, Header: r.Header})
	}
}

// serveWebSocket answers the handshake and echoes frames until the client
// closes the session or the backend is closed.
func (b *httpBackend) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get("Sec-WebSocket-Key")
	if key == "" || !headerHasToken(r.Header, "Connection", "upgrade") {
		http.Error(w, "not a WebSocket handshake", http.StatusBadRequest)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	b.mu.Lock()
	b.hijacked[conn] = true
	b.wg.Add(1)
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.hijacked, conn)
		b.mu.Unlock()
		conn.Close()
		b.wg.Done()
	}()
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", wsAccept(key))
	if err := brw.Flush(); err != nil {
		return
	}
	for {
		op, payload, err := wsReadFrame(brw.Reader)
		if err != nil {
			return
		}
		if op == wsOpClose {
			wsWriteFrame(conn, wsOpClose, payload, false)
			return
		}
		if err := wsWriteFrame(conn, wsOpText, append([]byte(b.id+":"), payload...), false); err != nil {
			return
		}
	}
}

func (b *httpBackend) close() {
	b.mu.Lock()
	for c := range b.hijacked {
		c.Close()
	}
	b.mu.Unlock()
	b.srv.Close()
	b.wg.Wait()
}

// headerHasToken reports whether the comma-separated header name contains token.
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, f := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), token) {
				return true
			}
		}
	}
	return false
}

// WebSocket (RFC 6455), the little of it the tests need: single-frame
// messages shorter than 64 KiB.
const (
	wsOpText  = 0x1
	wsOpClose = 0x8
)

func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// wsWriteFrame writes one final frame; a client masks its frames.
func wsWriteFrame(w io.Writer, op byte, payload []byte, mask bool) error {
	if len(payload) > 0xffff {
		return fmt.Errorf("websocket frame of %d bytes: the tests send less than 64 KiB", len(payload))
	}
	hdr := []byte{0x80 | op, 0}
	if len(payload) < 126 {
		hdr[1] = byte(len(payload))
	} else {
		hdr[1] = 126
		hdr = bin.BigEndian.AppendUint16(hdr, uint16(len(payload)))
	}
	body := payload
	if mask {
		hdr[1] |= 0x80
		var key [4]byte
		rand.Read(key[:])
		hdr = append(hdr, key[:]...)
		body = make([]byte, len(payload))
		for i, c := range payload {
			body[i] = c ^ key[i%4]
		}
	}
	_, err := w.Write(append(hdr, body...))
	return err
}

// wsReadFrame reads one frame and returns its opcode and unmasked payload.
func wsReadFrame(r *bufio.Reader) (byte, []byte, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	if h[0]&0x80 == 0 {
		return 0, nil, errors.New("websocket: fragmented frames are not used by the tests")
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(bin.BigEndian.Uint16(l[:]))
	case 127:
		return 0, nil, errors.New("websocket: frame too long for the tests")
	}
	var key [4]byte
	masked := h[1]&0x80 != 0
	if masked {
		if _, err := io.ReadFull(r, key[:]); err != nil {
			return 0, nil, err
		}
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, err
	}
	if masked {
		for i := range payload {
			payload[i] ^= key[i%4]
		}
	}
	return h[0] & 0x0f, payload, nil
}

// wsClient is a client WebSocket session over a plain TCP connection.
type wsClient struct {
	c net.Conn
	r *bufio.Reader
}

// dialWebSocket opens a WebSocket session to http://addr+path with the Host
// header host; the connection is closed at cleanup. A handshake answered with
// anything but a valid 101 is an error naming the status.
func dialWebSocket(t *testing.T, addr, host, path string) (*wsClient, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	var k [16]byte
	rand.Read(k[:])
	key := base64.StdEncoding.EncodeToString(k[:])
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", path, host, key)
	r := bufio.NewReader(c)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("websocket handshake through %s%s: %w", addr, path, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		c.Close()
		return nil, fmt.Errorf("websocket handshake through %s%s: status %d %q, want 101", addr, path, resp.StatusCode, body)
	}
	if got := resp.Header.Get("Sec-WebSocket-Accept"); got != wsAccept(key) {
		c.Close()
		return nil, fmt.Errorf("websocket handshake: Sec-WebSocket-Accept %q, want %q", got, wsAccept(key))
	}
	c.SetDeadline(time.Time{})
	return &wsClient{c: c, r: r}, nil
}

// say sends msg as a text frame and returns the text of the frame that answers it.
func (w *wsClient) say(msg string) (string, error) {
	w.c.SetDeadline(time.Now().Add(5 * time.Second))
	defer w.c.SetDeadline(time.Time{})
	if err := wsWriteFrame(w.c, wsOpText, []byte(msg), true); err != nil {
		return "", fmt.Errorf("websocket send %q: %w", msg, err)
	}
	op, payload, err := wsReadFrame(w.r)
	if err != nil {
		return "", fmt.Errorf("websocket answer to %q: %w", msg, err)
	}
	if op != wsOpText {
		return "", fmt.Errorf("websocket answer to %q: opcode %#x, want text", msg, op)
	}
	return string(payload), nil
}

// writeConfig writes content to dir/name and returns its path.
func writeConfig(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// httpResult is one answer through the agent.
type httpResult struct {
	status int
	proto  string
	header http.Header
	body   string
	seen   *seen // the backend's report, when the body is one
}

// httpGet sends a GET to url with the Host header host (when not empty) and
// extra headers, and reads the whole answer. Redirects are not followed.
func httpGet(c *http.Client, url, host string, hdr map[string]string) (*httpResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	if host != "" {
		req.Host = host
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s (Host %s): read body: %w", url, host, err)
	}
	res := &httpResult{status: resp.StatusCode, proto: resp.Proto, header: resp.Header, body: string(body)}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		var s seen
		if json.Unmarshal(body, &s) == nil && s.ID != "" {
			res.seen = &s
		}
	}
	return res, nil
}

// noRedirects is an HTTP/1.1 client that returns redirects instead of following them.
func noRedirects(tr http.RoundTripper) *http.Client {
	return &http.Client{
		Transport:     tr,
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// h1Transport speaks HTTP/1.1 only (also over TLS with tlsCfg).
func h1Transport(tlsCfg *tls.Config) *http.Transport {
	tr := &http.Transport{TLSClientConfig: tlsCfg, DisableKeepAlives: false, MaxIdleConnsPerHost: 4}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP1(true)
	return tr
}

// h2Transport speaks HTTP/2 only: over TLS (ALPN h2) with tlsCfg, else h2c
// with prior knowledge.
func h2Transport(tlsCfg *tls.Config) *http.Transport {
	tr := &http.Transport{TLSClientConfig: tlsCfg}
	tr.Protocols = new(http.Protocols)
	if tlsCfg != nil {
		tr.Protocols.SetHTTP2(true)
	} else {
		tr.Protocols.SetUnencryptedHTTP2(true)
	}
	return tr
}

// portOf returns the port of a host:port address.
func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
