package upstream

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestProbe(t *testing.T) {
	var up, down atomic.Bool
	up.Store(true)
	var host atomic.Value
	echo := echoServer(t)
	ping := pingServer(t, &up)
	pang := pingServer(t, &down)
	web := httpServer(t, &up, &host)
	sick := httpServer(t, &down, &host)
	ln, dead := listen(t)
	ln.Close()
	_, silentAddr := listen(t) // connects (backlog) but never answers
	client := NewRegistry(nil, nil).http

	tcp := func(send, expect string) *healthCheck {
		return &healthCheck{timeout: 200 * time.Millisecond, tcp: &TCPCheck{Send: []byte(send), Expect: []byte(expect)}}
	}
	web1 := func(path string, statuses ...int) *healthCheck {
		return &healthCheck{timeout: time.Second, http: &HTTPCheck{Path: path, ExpectedStatuses: statuses}}
	}
	tests := []struct {
		name string
		hc   *healthCheck
		addr netip.AddrPort
		ok   bool
	}{
		{"connect", tcp("", ""), echo, true},
		{"connect refused", tcp("", ""), dead, false},
		{"send only", tcp("hello", ""), echo, true},
		{"echo", tcp("hello", "hello"), echo, true},
		{"prefix", tcp("hello world", "hello"), echo, true},
		{"wrong answer", tcp("hello", "howdy"), echo, false},
		{"ping pong", tcp("PING", "PONG"), ping, true},
		{"ping pang", tcp("PING", "PONG"), pang, false},
		{"no answer times out", tcp("PING", "PONG"), silentAddr, false},
		{"http 200", web1("/healthz"), web, true},
		{"http 404", web1("/other"), web, false},
		{"http 404 expected", web1("/other", 404), web, true},
		{"http 200 not listed", web1("/healthz", 204), web, false},
		{"http 503", web1("/healthz"), sick, false},
		{"http refused", web1("/healthz"), dead, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := probe(context.Background(), client, tt.hc, tt.addr.String())
			if (err == nil) != tt.ok {
				t.Errorf("probe = %v, want ok %v", err, tt.ok)
			}
		})
	}
}

func TestMembershipMetrics(t *testing.T) {
	r, _ := newTestRegistry(t)
	live := echoServer(t)
	ln, dead := listen(t)
	ln.Close()
	hc := fastHC(1, 1)
	hc.TCP = &TCPCheck{}
	r.Update([]ClusterConfig{{Name: "c", Endpoints: []Endpoint{{Addr: live}, {Addr: dead}}, HealthCheck: &hc}})
	c := r.Cluster("c")
	waitFor(t, 5*time.Second, "checks to settle", func() bool {
		return healthOf(c, live) == Healthy && healthOf(c, dead) == Unhealthy
	})
	m := r.metrics
	for _, tt := range []struct {
		name string
		got  float64
		want float64
	}{
		{"membership_healthy", testutil.ToFloat64(m.membershipHealthy.WithLabelValues("c")), 1},
		{"membership_total", testutil.ToFloat64(m.membershipTotal.WithLabelValues("c")), 2},
		{"endpoint_healthy live", testutil.ToFloat64(m.endpointHealthy.WithLabelValues("c", live.String())), 1},
		{"endpoint_healthy dead", testutil.ToFloat64(m.endpointHealthy.WithLabelValues("c", dead.String())), 0},
	} {
		if tt.got != tt.want {
			t.Errorf("%s = %v, want %v", tt.name, tt.got, tt.want)
		}
	}
}

// TestConcurrentUse picks, reports and releases from many goroutines while the
// configuration changes and hosts are ejected; the race detector and the final counts
// check it.
func TestConcurrentUse(t *testing.T) {
	r, _ := newTestRegistry(t)
	eps := synthetic(6)
	cfgs := func(p Policy, n int) []ClusterConfig {
		return []ClusterConfig{{Name: "c", Policy: p, Endpoints: eps[:n], MaxConnections: 1 << 20,
			Outlier: &Outlier{Consecutive5xxOrConnectFailures: 2, BaseEjection: time.Millisecond, MaxEjectionPercent: 50}}}
	}
	r.Update(cfgs(RoundRobin, 6))
	c := r.Cluster("c")
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				h, err := c.Pick(clientHash(i), nil)
				if err != nil {
					t.Error(err)
					return
				}
				if (i+g)%3 == 0 {
					h.ConnectFailed()
				} else {
					h.Connected()
				}
				h.Release()
			}
		})
	}
	for i := range 50 {
		r.Update(cfgs(Policy(i%5), 3+i%4))
	}
	close(stop)
	wg.Wait()
	if got := c.ActiveConnections(); got != 0 {
		t.Errorf("cluster active connections %d after all releases", got)
	}
	for _, h := range c.Hosts() {
		if h.ActiveConnections != 0 {
			t.Errorf("%s: %d active connections after all releases", h.Addr, h.ActiveConnections)
		}
	}
}
