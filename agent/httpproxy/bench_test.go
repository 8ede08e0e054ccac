package httpproxy_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/flotilla-proxy/flotilla/agent/httpproxy"
)

// BenchmarkHTTPProxy measures keep-alive GETs of a 1 KiB body through the proxy (with and
// without path normalisation and, for comparison, straight to the backend), with as many
// concurrent clients as GOMAXPROCS.
func BenchmarkHTTPProxy(b *testing.B) {
	body := strings.Repeat("x", 1024)
	be := startBackend(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, body)
	}))
	p := startProxy(b, &httpproxy.Config{Listener: "web", Manager: manager(), Table: table(fwd("r", "/", "be"))}, nil,
		cluster{Cluster: httpproxy.Cluster{Name: "be"}, endpoints: []string{be.addr}})
	m := manager()
	m.NormalizePath, m.MergeSlashes = true, true // as the compiler emits
	pn := startProxy(b, &httpproxy.Config{Listener: "web", Manager: m, Table: table(fwd("r", "/", "be"))}, nil,
		cluster{Cluster: httpproxy.Cluster{Name: "be"}, endpoints: []string{be.addr}})
	for _, bb := range []struct{ name, url string }{
		{"direct", "http://" + be.addr + "/"},
		{"proxy", p.url("/")},
		{"proxy-normalized", pn.url("/a/b?q=1")},
	} {
		b.Run(bb.name, func(b *testing.B) {
			tr := &http.Transport{MaxIdleConnsPerHost: 1024}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr}
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := c.Get(bb.url)
					if err != nil {
						b.Error(err)
						return
					}
					n, _ := io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 || n != int64(len(body)) {
						b.Errorf("status %d, %d bytes", resp.StatusCode, n)
						return
					}
				}
			})
		})
	}
}
