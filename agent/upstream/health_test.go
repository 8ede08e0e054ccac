package upstream

import (
	"errors"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fastHC checks every 10ms with the given thresholds.
func fastHC(healthy, unhealthy uint32) HealthCheck {
	return HealthCheck{Interval: 10 * time.Millisecond, Timeout: time.Second, HealthyThreshold: healthy, UnhealthyThreshold: unhealthy}
}

func TestActiveHealthCheck(t *testing.T) {
	var up atomic.Bool
	up.Store(true)
	var host atomic.Value
	pingAddr := pingServer(t, &up)
	httpAddr := httpServer(t, &up, &host)

	tests := []struct {
		name  string
		addr  netip.AddrPort
		check func(*HealthCheck)
	}{
		{"tcp send expect", pingAddr, func(hc *HealthCheck) {
			hc.TCP = &TCPCheck{Send: []byte("PING"), Expect: []byte("PONG")}
		}},
		{"http", httpAddr, func(hc *HealthCheck) {
			hc.HTTP = &HTTPCheck{Path: "/healthz", Host: "health.example"}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up.Store(true)
			r, pr := newTestRegistry(t)
			hc := fastHC(2, 3)
			tt.check(&hc)
			// A second, healthy endpoint keeps the cluster out of panic mode.
			other := echoServer(t)
			r.Update([]ClusterConfig{
				{Name: "c", Endpoints: []Endpoint{{Addr: tt.addr}}, HealthCheck: &hc},
				{Name: "echo", Endpoints: []Endpoint{{Addr: other}}, HealthCheck: &HealthCheck{Interval: time.Hour, TCP: &TCPCheck{}}},
			})
			c := r.Cluster("c")
			waitFor(t, 5*time.Second, "first check to pass", func() bool { return healthOf(c, tt.addr) == Healthy })

			up.Store(false)
			success := testutil.ToFloat64(r.metrics.hcSuccess.WithLabelValues("c", tt.addr.String()))
			waitFor(t, 5*time.Second, "host to turn unhealthy", func() bool { return healthOf(c, tt.addr) == Unhealthy })
			if f := testutil.ToFloat64(r.metrics.hcFailure.WithLabelValues("c", tt.addr.String())); f < 3 {
				t.Errorf("unhealthy after %v failed checks, want 3", f)
			}
			if v := testutil.ToFloat64(r.metrics.membershipHealthy.WithLabelValues("c")); v != 0 {
				t.Errorf("membership_healthy = %v, want 0", v)
			}
			up.Store(true)
			waitFor(t, 5*time.Second, "host to turn healthy", func() bool { return healthOf(c, tt.addr) == Healthy })
			if s := testutil.ToFloat64(r.metrics.hcSuccess.WithLabelValues("c", tt.addr.String())) - success; s < 2 {
				t.Errorf("healthy again after %v passed checks, want 2", s)
			}
			if tt.name == "http" {
				if h := host.Load(); h != "health.example" {
					t.Errorf("health check sent Host %v, want health.example", h)
				}
			}
			if n, err := testutil.GatherAndCount(pr, "flotilla_agent_health_check_success"); err != nil || n != 2 {
				t.Errorf("health_check_success series: %d, %v; want 2", n, err)
			}
		})
	}
}

// TestHealthThresholds applies check results one by one (the real checker runs only once,
// at start, with an interval of an hour) and follows the host's health.
func TestHealthThresholds(t *testing.T) {
	fail := errors.New("fail")
	tests := []struct {
		name    string
		first   bool // result of the real first check
		results []bool
		want    []Health
	}{
		{"first pass is enough", true, nil, nil},
		{"unhealthy after three", true, []bool{false, false, true, false, false, false},
			[]Health{Healthy, Healthy, Healthy, Healthy, Healthy, Unhealthy}},
		{"healthy after two", true, []bool{false, false, false, true, false, true, true},
			[]Health{Healthy, Healthy, Unhealthy, Unhealthy, Unhealthy, Unhealthy, Healthy}},
		{"failed first check needs two", false, []bool{true, true},
			[]Health{Unhealthy, Healthy}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var up atomic.Bool
			up.Store(tt.first)
			addr := pingServer(t, &up)
			r, _ := newTestRegistry(t)
			hc := HealthCheck{Interval: time.Hour, HealthyThreshold: 2, UnhealthyThreshold: 3,
				TCP: &TCPCheck{Send: []byte("PING"), Expect: []byte("PONG")}}
			r.Update([]ClusterConfig{{Name: "c", Endpoints: []Endpoint{{Addr: addr}}, HealthCheck: &hc}})
			c := r.Cluster("c")
			hs := r.metrics.host("c", addr.String())
			waitFor(t, 5*time.Second, "the first check", func() bool {
				return testutil.ToFloat64(hs.hcSuccess)+testutil.ToFloat64(hs.hcFailure) == 1
			})
			want := Unhealthy
			if tt.first {
				want = Healthy
			}
			if got := healthOf(c, addr); got != want {
				t.Fatalf("after the first check: %v, want %v", got, want)
			}
			c.mu.Lock()
			chk := c.byAddr[addr].checker
			c.mu.Unlock()
			for i, ok := range tt.results {
				var err error
				if !ok {
					err = fail
				}
				c.report(chk, err)
				if got := healthOf(c, addr); got != tt.want[i] {
					t.Fatalf("after result %d (%v): %v, want %v", i, ok, got, tt.want[i])
				}
			}
		})
	}
}

// TestPendingHostUnhealthy: a new host with a health check takes no traffic before its
// first check passes (here the check hangs on a server that never answers); a new host
// without one takes traffic at once.
func TestPendingHostUnhealthy(t *testing.T) {
	r, _ := newTestRegistry(t)
	_, silent := listen(t)
	hc := HealthCheck{Interval: time.Hour, Timeout: time.Hour, TCP: &TCPCheck{Send: []byte("PING"), Expect: []byte("PONG")}}
	eps := synthetic(2)
	r.Update([]ClusterConfig{
		{Name: "checked", Endpoints: []Endpoint{{Addr: silent}}, HealthCheck: &hc},
		{Name: "unchecked", Endpoints: eps},
	})
	if got := healthOf(r.Cluster("checked"), silent); got != Unhealthy {
		t.Errorf("new host with a health check: %v, want unhealthy", got)
	}
	for _, e := range eps {
		if got := healthOf(r.Cluster("unchecked"), e.Addr); got != Healthy {
			t.Errorf("new host without a health check: %v, want healthy", got)
		}
	}
	// Close stops the hanging check.
	r.Close()
}

func TestTCPConnectCheck(t *testing.T) {
	r, _ := newTestRegistry(t)
	live := echoServer(t)
	ln, dead := listen(t)
	ln.Close() // nothing listens: connection refused
	hc := fastHC(1, 1)
	hc.TCP = &TCPCheck{}
	r.Update([]ClusterConfig{{Name: "c", Endpoints: []Endpoint{{Addr: live}, {Addr: dead}}, HealthCheck: &hc}})
	c := r.Cluster("c")
	waitFor(t, 5*time.Second, "checks to settle", func() bool {
		return healthOf(c, live) == Healthy && healthOf(c, dead) == Unhealthy && !c.Panic()
	})
	for range 20 {
		if got := pickRelease(t, c, 0); got != live {
			t.Fatalf("picked %s, want the healthy %s", got, live)
		}
	}
}

func TestStateSurvivesUpdate(t *testing.T) {
	r, _ := newTestRegistry(t)
	var up atomic.Bool
	up.Store(true)
	a := pingServer(t, &up)
	var up2 atomic.Bool
	up2.Store(true)
	b := pingServer(t, &up2)
	hc := fastHC(1, 1)
	hc.TCP = &TCPCheck{Send: []byte("PING"), Expect: []byte("PONG")}
	cfg := ClusterConfig{Name: "c", Endpoints: []Endpoint{{Addr: a}, {Addr: b}}, HealthCheck: &hc, Outlier: &Outlier{}}
	r.Update([]ClusterConfig{cfg})
	c := r.Cluster("c")
	waitFor(t, 5*time.Second, "both healthy", func() bool { return healthOf(c, a) == Healthy && healthOf(c, b) == Healthy })
	up.Store(false)
	waitFor(t, 5*time.Second, "a unhealthy", func() bool { return healthOf(c, a) == Unhealthy })
	held, err := c.Pick(0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release()
	checkers := r.numCheckers.Load()

	// An unrelated change: a new cluster, a new endpoint, another weight, another policy.
	c3 := echoServer(t)
	cfg2 := cfg
	cfg2.Policy = LeastRequest
	cfg2.Endpoints = []Endpoint{{Addr: a, Weight: 5}, {Addr: b}, {Addr: c3}}
	r.Update([]ClusterConfig{cfg2, {Name: "other", Endpoints: synthetic(1)}})
	if r.Cluster("c") != c {
		t.Fatal("the cluster was replaced")
	}
	if got := healthOf(c, a); got != Unhealthy {
		t.Errorf("after the update a is %v, want still unhealthy", got)
	}
	if got := healthOf(c, c3); got != Unhealthy && got != Healthy {
		t.Errorf("new host: %v", got)
	}
	if got := hostOf(t, c, held.Addr()).ActiveConnections; got != 1 {
		t.Errorf("active connections of %s after the update: %d, want 1", held.Addr(), got)
	}
	if n := r.numCheckers.Load(); n != checkers+1 {
		t.Errorf("%d health checkers after adding one endpoint to %d, want %d", n, checkers, checkers+1)
	}
}

func TestRoundRobinPositionSurvivesUpdate(t *testing.T) {
	r, _ := newTestRegistry(t)
	eps := synthetic(3)
	cfg := []ClusterConfig{{Name: "c", Endpoints: eps}}
	r.Update(cfg)
	c := r.Cluster("c")
	if got := pickRelease(t, c, 0); got != eps[0].Addr {
		t.Fatalf("first pick %s, want %s", got, eps[0].Addr)
	}
	r.Update(cfg)
	if got := pickRelease(t, c, 0); got != eps[1].Addr {
		t.Errorf("pick after an update %s, want %s (the position carries on)", got, eps[1].Addr)
	}
}

func TestRemovedCheckersStop(t *testing.T) {
	base := runtime.NumGoroutine()
	r, _ := newTestRegistry(t)
	hc := fastHC(1, 1)
	hc.TCP = &TCPCheck{}
	var eps []Endpoint
	for range 3 {
		eps = append(eps, Endpoint{Addr: echoServer(t)})
	}
	base += 3 // the echo servers' accept loops
	r.Update([]ClusterConfig{{Name: "c", Endpoints: eps, HealthCheck: &hc}, {Name: "d", Endpoints: eps[:1], HealthCheck: &hc}})
	if n := r.numCheckers.Load(); n != 4 {
		t.Fatalf("%d checkers, want 4", n)
	}
	r.Update([]ClusterConfig{{Name: "c", Endpoints: eps[:1], HealthCheck: &hc}})
	waitFor(t, 5*time.Second, "checkers of removed endpoints and clusters to stop", func() bool { return r.numCheckers.Load() == 1 })
	// Removing the health check stops the last one and makes the host healthy.
	r.Update([]ClusterConfig{{Name: "c", Endpoints: eps[:1]}})
	waitFor(t, 5*time.Second, "the last checker to stop", func() bool { return r.numCheckers.Load() == 0 })
	if got := healthOf(r.Cluster("c"), eps[0].Addr); got != Healthy {
		t.Errorf("host without health check: %v, want healthy", got)
	}
	r.Update([]ClusterConfig{{Name: "c", Endpoints: eps, HealthCheck: &hc}})
	r.Close()
	if n := r.numCheckers.Load(); n != 0 {
		t.Errorf("%d checkers after Close", n)
	}
	waitFor(t, 5*time.Second, "goroutines to return", func() bool { return runtime.NumGoroutine() <= base })
}
