package proxy_test

import (
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/flotilla-proxy/flotilla/agent/proxy"
)

// BenchmarkShortConnections measures what one short connection costs through the proxy:
// each op dials the listener, writes a request, reads the backend's short reply to EOF and
// closes. The backend reads the request, answers a few bytes and closes first, as the
// benchmark's HTTP backend does with "Connection: close".
func BenchmarkShortConnections(b *testing.B) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	b.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
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
				c.SetDeadline(time.Now().Add(5 * time.Second))
				var buf [64]byte
				if _, err := c.Read(buf[:]); err != nil {
					return
				}
				c.Write([]byte("HTTP/1.0 200 OK\r\n\r\nx"))
			}()
		}
	}()

	m, _ := newManager(b, proxy.Options{})
	apply(b, m, graph(b, []*listenerv3.Listener{tcpListener("front", 0, "backend", nil)}, cluster("backend", ln.Addr().String())))
	addr := m.Addr("front").String()
	req := []byte("GET / HTTP/1.0\r\n\r\n")

	b.ReportAllocs()
	before := cpuTime(b)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 256)
		for pb.Next() {
			c, err := net.Dial("tcp4", addr)
			if err != nil {
				b.Error(err)
				return
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write(req); err != nil {
				b.Error(err)
				c.Close()
				return
			}
			n := 0
			for {
				r, err := c.Read(buf[n:])
				n += r
				if err == io.EOF {
					break
				}
				if err != nil {
					b.Error(err)
					break
				}
			}
			c.Close()
			if n == 0 {
				b.Error("empty reply")
			}
		}
	})
	b.StopTimer()
	// The process's CPU time per connection (proxy, client and backend together, user
	// and system): less noisy than ns/op on a loaded machine.
	b.ReportMetric(float64(cpuTime(b)-before)/float64(b.N), "cpu-ns/op")
}

// cpuTime returns the CPU time the process has used so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
