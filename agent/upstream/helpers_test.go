package upstream

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// newTestRegistry returns a Registry with its own Prometheus registry, closed at cleanup.
func newTestRegistry(t *testing.T) (*Registry, *prometheus.Registry) {
	t.Helper()
	pr := prometheus.NewRegistry()
	r := NewRegistry(slog.New(slog.DiscardHandler), pr)
	t.Cleanup(r.Close)
	return r, pr
}

// synthetic returns n endpoints 10.0.x.y:80 with the given weights (1 if weights is nil).
func synthetic(n int, weights ...uint32) []Endpoint {
	eps := make([]Endpoint, n)
	for i := range eps {
		eps[i] = Endpoint{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 80), Weight: 1}
		if i < len(weights) {
			eps[i].Weight = weights[i]
		}
	}
	return eps
}

// hostOf returns the status of addr in c.
func hostOf(t *testing.T, c *Cluster, addr netip.AddrPort) HostStatus {
	t.Helper()
	for _, h := range c.Hosts() {
		if h.Addr == addr {
			return h
		}
	}
	t.Fatalf("cluster %q has no host %s", c.Name(), addr)
	return HostStatus{}
}

func healthOf(c *Cluster, addr netip.AddrPort) Health {
	for _, h := range c.Hosts() {
		if h.Addr == addr {
			return h.Health
		}
	}
	return -1
}

// pickRelease picks once and releases at once, returning the address.
func pickRelease(t *testing.T, c *Cluster, hash uint64, exclude ...netip.AddrPort) netip.AddrPort {
	t.Helper()
	h, err := c.Pick(hash, exclude)
	if err != nil {
		t.Fatalf("Pick: %v", err)
	}
	h.Release()
	return h.Addr()
}

// listen returns a loopback TCP listener closed at cleanup, and its address.
func listen(t *testing.T) (net.Listener, netip.AddrPort) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln, ln.Addr().(*net.TCPAddr).AddrPort()
}

// serve accepts connections on ln and runs handle for each until ln is closed; cleanup
// waits for the handlers.
func serve(t *testing.T, ln net.Listener, handle func(net.Conn)) {
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	t.Cleanup(func() { ln.Close() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				handle(c)
			})
		}
	})
}

// echoServer is a TCP echo server on loopback.
func echoServer(t *testing.T) netip.AddrPort {
	ln, addr := listen(t)
	serve(t, ln, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.Copy(c, c)
	})
	return addr
}

// pingServer answers "PING" with "PONG" while up is true and with "PANG" otherwise.
func pingServer(t *testing.T, up *atomic.Bool) netip.AddrPort {
	ln, addr := listen(t)
	serve(t, ln, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "PING" {
			return
		}
		if up.Load() {
			c.Write([]byte("PONG"))
		} else {
			c.Write([]byte("PANG"))
		}
	})
	return addr
}

// httpServer serves /healthz with 200 while up is true and 503 otherwise, and records the
// last Host header it saw.
func httpServer(t *testing.T, up *atomic.Bool, host *atomic.Value) netip.AddrPort {
	ln, addr := listen(t)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host.Store(r.Host)
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		if up.Load() {
			fmt.Fprintln(w, "ok")
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return addr
}
