package httpproxy_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-proxy/flotilla/agent/httpproxy"
)

// TestRetiredPoolClosesConnections: a connection in use when an update replaces its
// cluster's pool (a long response, over HTTP/1.1 or HTTP/2) closes soon after its request
// ends, instead of idling in a pool nothing uses any more.
func TestRetiredPoolClosesConnections(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("http2=%v", h2), func(t *testing.T) {
			var closed atomic.Int32
			release := make(chan struct{})
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var protos http.Protocols
			protos.SetHTTP1(true)
			protos.SetUnencryptedHTTP2(true)
			be := &http.Server{
				Protocols: &protos,
				Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					io.Copy(io.Discard, r.Body)
					io.WriteString(w, "first")
					w.(http.Flusher).Flush()
					select {
					case <-release:
					case <-r.Context().Done():
					}
					io.WriteString(w, "rest")
				}),
				ConnState: func(_ net.Conn, s http.ConnState) {
					if s == http.StateClosed {
						closed.Add(1)
					}
				},
			}
			go be.Serve(ln)
			t.Cleanup(func() { be.Close() })
			c := httpproxy.Cluster{Name: "c", HTTP2: h2}
			p := startProxy(t, &httpproxy.Config{Listener: "web", Manager: manager(), Table: table(fwd("r", "/", "c"))}, nil,
				cluster{Cluster: c, endpoints: []string{ln.Addr().String()}})
			// A POST: HTTP/1.1 requests with a body take the http.Transport.
			resp, err := noRedirect().Post(p.url("/stream"), "text/plain", strings.NewReader("x"))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			buf := make([]byte, len("first"))
			if _, err := io.ReadFull(resp.Body, buf); err != nil {
				t.Fatal(err)
			}
			c.IdleTimeout = time.Hour // a new pool
			p.setClusters(cluster{Cluster: c, endpoints: []string{ln.Addr().String()}})
			close(release)
			if rest, err := io.ReadAll(resp.Body); err != nil || string(rest) != "rest" {
				t.Fatalf("rest of the response: %q, %v", rest, err)
			}
			resp.Body.Close()
			waitFor(t, 10*time.Second, "the retired pool to close its connection", func() bool { return closed.Load() >= 1 })
		})
	}
}
