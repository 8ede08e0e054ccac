package upstream

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// failHost reports n connect failures of addr.
func failHost(t *testing.T, c *Cluster, addr netip.AddrPort, n int) {
	t.Helper()
	for range n {
		h := pickHost(t, c, addr)
		h.ConnectFailed()
		h.Release()
	}
}

// pickHost picks until it gets addr (other hosts are excluded) and returns it unreleased.
func pickHost(t *testing.T, c *Cluster, addr netip.AddrPort) *Host {
	t.Helper()
	var others []netip.AddrPort
	for _, s := range c.Hosts() {
		if s.Addr != addr {
			others = append(others, s.Addr)
		}
	}
	h, err := c.Pick(0, others)
	if err != nil {
		t.Fatal(err)
	}
	if h.Addr() != addr {
		h.Release()
		t.Fatalf("cannot pick %s (got %s)", addr, h.Addr())
	}
	return h
}

func TestOutlierEjection(t *testing.T) {
	r, _ := newTestRegistry(t)
	eps := synthetic(3)
	const base = 100 * time.Millisecond
	r.Update([]ClusterConfig{{Name: "c", Endpoints: eps, Outlier: &Outlier{
		Consecutive5xxOrConnectFailures: 3, BaseEjection: base, MaxEjectionPercent: 100, Interval: time.Hour}}})
	c := r.Cluster("c")
	bad := eps[1].Addr

	// A success resets the run of failures.
	failHost(t, c, bad, 2)
	h := pickHost(t, c, bad)
	h.Connected()
	h.Release()
	failHost(t, c, bad, 2)
	if got := healthOf(c, bad); got != Healthy {
		t.Fatalf("after 2+2 failures with a success between: %v, want healthy", got)
	}

	for round := 1; round <= 2; round++ {
		failHost(t, c, bad, 3-(round%2)*2) // round 1: 1 more (3 in a row); round 2: 3
		start := time.Now()
		if got := healthOf(c, bad); got != Ejected {
			t.Fatalf("round %d: host %v, want ejected", round, got)
		}
		for range 30 {
			if got := pickRelease(t, c, 0); got == bad {
				t.Fatalf("round %d: the ejected host was picked", round)
			}
		}
		waitFor(t, 5*time.Second, "the host to return", func() bool { return healthOf(c, bad) == Healthy })
		if d := time.Since(start); d < time.Duration(round)*base {
			t.Errorf("round %d: ejected for %v, want at least %v", round, d, time.Duration(round)*base)
		}
		if got := hostOf(t, c, bad).TimesEjected; got != uint32(round) {
			t.Errorf("round %d: times ejected %d", round, got)
		}
	}
	if n := testutil.ToFloat64(r.metrics.ejections.WithLabelValues("c", bad.String())); n != 2 {
		t.Errorf("ejections metric %v, want 2", n)
	}
}

func TestOutlierMaxEjectionPercent(t *testing.T) {
	tests := []struct {
		name    string
		percent uint32
		hosts   int
		fail    int // hosts that keep failing
		ejected int
	}{
		{"default 10% still ejects one", 0, 4, 2, 1},
		{"50% of 4", 50, 4, 3, 2},
		{"100%", 100, 3, 3, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, pr := newTestRegistry(t)
			eps := synthetic(tt.hosts)
			r.Update([]ClusterConfig{{Name: "c", Endpoints: eps, Outlier: &Outlier{MaxEjectionPercent: tt.percent}}})
			c := r.Cluster("c")
			for _, e := range eps[:tt.fail] {
				h := pickHost(t, c, e.Addr)
				for range DefaultConsecutiveFailure {
					h.ConnectFailed()
				}
				h.Release()
			}
			n := 0
			for _, s := range c.Hosts() {
				if s.Health == Ejected {
					n++
				}
			}
			if n != tt.ejected {
				t.Errorf("%d hosts ejected, want %d", n, tt.ejected)
			}
			if err := testutil.GatherAndCompare(pr, strings.NewReader(
				"# HELP flotilla_agent_outlier_detection_ejections_active Hosts of a cluster ejected by outlier detection now.\n"+
					"# TYPE flotilla_agent_outlier_detection_ejections_active gauge\n"+
					"flotilla_agent_outlier_detection_ejections_active{cluster=\"c\"} "+strconv.Itoa(tt.ejected)+"\n"),
				"flotilla_agent_outlier_detection_ejections_active"); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestPanicMode(t *testing.T) {
	off, high := 0.0, 80.0
	tests := []struct {
		name      string
		threshold *float64
		hosts     int
		down      int
		wantPanic bool
	}{
		{"all healthy", nil, 4, 0, false},
		{"half healthy", nil, 4, 2, false},
		{"quarter healthy", nil, 4, 3, true},
		{"none healthy", nil, 2, 2, true},
		{"threshold 80, three quarters healthy", &high, 4, 1, true},
		{"threshold 0, quarter healthy", &off, 4, 3, false},
		{"threshold 0, none healthy", &off, 2, 2, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := newTestRegistry(t)
			eps := synthetic(tt.hosts)
			r.Update([]ClusterConfig{{Name: "c", Endpoints: eps, PanicThreshold: tt.threshold,
				Outlier: &Outlier{Consecutive5xxOrConnectFailures: 1, MaxEjectionPercent: 100}}})
			c := r.Cluster("c")
			for _, e := range eps[:tt.down] {
				failHost(t, c, e.Addr, 1)
			}
			if c.Panic() != tt.wantPanic {
				t.Fatalf("panic mode %v, want %v", c.Panic(), tt.wantPanic)
			}
			if tt.down == tt.hosts && !tt.wantPanic {
				// Panic mode off and nothing healthy: no pick at all.
				if _, err := c.Pick(0, nil); !errors.Is(err, ErrNoHealthyUpstream) {
					t.Fatalf("Pick() error = %v, want ErrNoHealthyUpstream", err)
				}
				return
			}
			seen := map[netip.AddrPort]bool{}
			for range 4 * tt.hosts {
				seen[pickRelease(t, c, 0)] = true
			}
			for i, e := range eps {
				want := i >= tt.down || tt.wantPanic
				if seen[e.Addr] != want {
					t.Errorf("%s picked: %v, want %v", e.Addr, seen[e.Addr], want)
				}
			}
		})
	}
}

func TestCircuitBreaker(t *testing.T) {
	r, pr := newTestRegistry(t)
	r.Update([]ClusterConfig{{Name: "c", Endpoints: synthetic(2), MaxConnections: 2}})
	c := r.Cluster("c")
	a, err := c.Pick(0, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Pick(0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Pick(0, nil); !errors.Is(err, ErrOverflow) {
		t.Fatalf("third Pick: %v, want ErrOverflow", err)
	}
	if got := c.ActiveConnections(); got != 2 {
		t.Errorf("active connections %d, want 2", got)
	}
	a.Release()
	h, err := c.Pick(0, nil)
	if err != nil {
		t.Fatalf("Pick after a release: %v", err)
	}
	h.Release()
	b.Release()
	if got := c.ActiveConnections(); got != 0 {
		t.Errorf("active connections %d after releasing all, want 0", got)
	}
	if n, _ := testutil.GatherAndCount(pr, "flotilla_agent_upstream_cx_overflow"); n != 1 {
		t.Errorf("%d upstream_cx_overflow series, want 1", n)
	}
	if v := testutil.ToFloat64(r.metrics.overflow.WithLabelValues("c")); v != 1 {
		t.Errorf("upstream_cx_overflow = %v, want 1", v)
	}
}

func TestRemovedCluster(t *testing.T) {
	r, pr := newTestRegistry(t)
	r.Update([]ClusterConfig{{Name: "a", Endpoints: synthetic(2)}, {Name: "b", Endpoints: synthetic(1)}})
	a := r.Cluster("a")
	held, err := a.Pick(0, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Update([]ClusterConfig{{Name: "b", Endpoints: synthetic(1)}})
	if r.Cluster("a") != nil {
		t.Error("removed cluster still there")
	}
	if _, err := a.Pick(0, nil); !errors.Is(err, ErrNoHealthyUpstream) {
		t.Errorf("Pick on a removed cluster: %v, want ErrNoHealthyUpstream", err)
	}
	held.Release() // still allowed
	held.ConnectFailed()
	if n, _ := testutil.GatherAndCount(pr, "flotilla_agent_membership_total"); n != 1 {
		t.Errorf("%d membership_total series, want 1 (cluster b)", n)
	}
}

func TestInvalidConfigKeepsPrevious(t *testing.T) {
	r, _ := newTestRegistry(t)
	eps := synthetic(2)
	r.Update([]ClusterConfig{{Name: "c", Endpoints: eps}})
	c := r.Cluster("c")
	r.Update([]ClusterConfig{{Name: "c", Endpoints: []Endpoint{eps[0], eps[0]}}})
	if r.Cluster("c") != c || len(c.Hosts()) != 2 {
		t.Errorf("an invalid config replaced the cluster: %v", c.Hosts())
	}
}

func TestValidate(t *testing.T) {
	ep := synthetic(1)
	tests := []struct {
		name string
		cfg  ClusterConfig
		want string // substring of the error; "" for valid
	}{
		{"minimal", ClusterConfig{Name: "c"}, ""},
		{"full", ClusterConfig{Name: "c", Policy: Maglev, Endpoints: ep, TableSize: 251,
			HealthCheck: &HealthCheck{HTTP: &HTTPCheck{Path: "/h", ExpectedStatuses: []int{204}}}, Outlier: &Outlier{MaxEjectionPercent: 100}}, ""},
		{"no name", ClusterConfig{}, "name is empty"},
		{"bad policy", ClusterConfig{Name: "c", Policy: 9}, "unknown load-balancing policy"},
		{"invalid address", ClusterConfig{Name: "c", Endpoints: []Endpoint{{}}}, "endpoints[0]: invalid address"},
		{"duplicate", ClusterConfig{Name: "c", Endpoints: append(ep, ep...)}, "endpoints[1]: duplicate address"},
		{"table not prime", ClusterConfig{Name: "c", TableSize: 65536}, "not a prime"},
		{"ring sizes", ClusterConfig{Name: "c", MinRingSize: 10, MaxRingSize: 5}, "exceeds max ring size"},
		{"no check kind", ClusterConfig{Name: "c", HealthCheck: &HealthCheck{}}, "exactly one of tcp and http"},
		{"two check kinds", ClusterConfig{Name: "c", HealthCheck: &HealthCheck{TCP: &TCPCheck{}, HTTP: &HTTPCheck{}}}, "exactly one of tcp and http"},
		{"expect without send", ClusterConfig{Name: "c", HealthCheck: &HealthCheck{TCP: &TCPCheck{Expect: []byte("x")}}}, "expect needs send"},
		{"relative path", ClusterConfig{Name: "c", HealthCheck: &HealthCheck{HTTP: &HTTPCheck{Path: "h"}}}, "does not start with /"},
		{"bad status", ClusterConfig{Name: "c", HealthCheck: &HealthCheck{HTTP: &HTTPCheck{ExpectedStatuses: []int{99}}}}, "out of range"},
		{"percent", ClusterConfig{Name: "c", Outlier: &Outlier{MaxEjectionPercent: 101}}, "exceeds 100"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Validate: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
