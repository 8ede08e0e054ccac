package httpproxy

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestRequestBodyEOFOutlivesClose: once the request body has ended, reading it again gives
// io.EOF even after net/http closed the real body, which its HTTP/1.1 server does when the
// response headers go out. http.Transport reads a Content-Length body once more after its
// last byte; when that read came after the reverse proxy had flushed the response headers,
// it failed, and the transport closed the upstream connection in the middle of the
// response (TestRetiredPoolClosesConnections failed now and then with "unexpected EOF").
func TestRequestBodyEOFOutlivesClose(t *testing.T) {
	tests := []struct {
		name string
		body io.Reader // a *strings.Reader has a Content-Length; the io.MultiReader is chunked
	}{
		{"content-length", strings.NewReader("some body")},
		{"chunked", io.MultiReader(strings.NewReader("some body"))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			type result struct {
				body    string
				readErr error // reading the body to its end
				again   error // reading it once more after the headers went out
			}
			got := make(chan result, 1)
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b := &requestBody{rc: r.Body, x: &exchange{}}
				var res result
				var data []byte
				data, res.readErr = io.ReadAll(b)
				res.body = string(data)
				w.WriteHeader(http.StatusOK)
				w.(http.Flusher).Flush() // net/http closes r.Body here
				_, res.again = b.Read(make([]byte, 1))
				got <- res
			})}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go srv.Serve(ln)
			t.Cleanup(func() { srv.Close() })

			tr := &http.Transport{}
			t.Cleanup(tr.CloseIdleConnections)
			resp, err := (&http.Client{Transport: tr}).Post("http://"+ln.Addr().String()+"/", "text/plain", tt.body)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			var res result
			select {
			case res = <-got:
			case <-time.After(10 * time.Second):
				t.Fatal("the handler did not finish")
			}
			if res.readErr != nil || res.body != "some body" {
				t.Fatalf("reading the body: %q, %v", res.body, res.readErr)
			}
			if !errors.Is(res.again, io.EOF) {
				t.Errorf("reading the ended body after the response headers went out: %v, want io.EOF", res.again)
			}
		})
	}
}
