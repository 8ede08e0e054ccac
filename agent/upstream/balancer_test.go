package upstream

import (
	"math"
	"net/netip"
	"testing"
)

func TestRoundRobinExact(t *testing.T) {
	tests := []struct {
		name    string
		weights []uint32
		seq     []int // expected first picks, as endpoint indexes
	}{
		{"equal", []uint32{1, 1, 1}, []int{0, 1, 2, 0, 1, 2}},
		{"one to three", []uint32{1, 3}, []int{1, 1, 0, 1, 1, 1, 0, 1}},
		{"one two three", []uint32{1, 2, 3}, nil},
		{"zero means one", []uint32{0, 2}, []int{1, 0, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := newTestRegistry(t)
			eps := synthetic(len(tt.weights), tt.weights...)
			r.Update([]ClusterConfig{{Name: "c", Endpoints: eps}})
			c := r.Cluster("c")
			index := map[netip.AddrPort]int{}
			var total uint32
			for i, e := range eps {
				index[e.Addr] = i
				total += max(e.Weight, 1)
			}
			for i, want := range tt.seq {
				if got := index[pickRelease(t, c, 0)]; got != want {
					t.Fatalf("pick %d = endpoint %d, want %d", i, got, want)
				}
			}
			// Over whole rounds every endpoint gets exactly its weight.
			const rounds = 100
			counts := make([]uint32, len(eps))
			// Align to the start of a round.
			for n := len(tt.seq); n%int(total) != 0; n++ {
				pickRelease(t, c, 0)
			}
			for range rounds * total {
				counts[index[pickRelease(t, c, 0)]]++
			}
			for i, e := range eps {
				if want := rounds * max(e.Weight, 1); counts[i] != want {
					t.Errorf("endpoint %d got %d picks, want %d", i, counts[i], want)
				}
			}
		})
	}
}

// shares picks n times (released at once) and returns each endpoint's share.
func shares(t *testing.T, c *Cluster, n int, hash func(i int) uint64) map[netip.AddrPort]float64 {
	t.Helper()
	m := map[netip.AddrPort]float64{}
	for i := range n {
		m[pickRelease(t, c, hash(i))] += 1 / float64(n)
	}
	return m
}

func clientHash(i int) uint64 {
	return HashAddr(netip.AddrFrom4([4]byte{192, byte(i >> 16), byte(i >> 8), byte(i)}))
}

func TestWeightedDistribution(t *testing.T) {
	tests := []struct {
		policy Policy
		tol    float64 // allowed absolute error of a share
	}{
		{Random, 0.02},
		{LeastRequest, 0.02},
		{RingHash, 0.05},
		{Maglev, 0.01},
	}
	for _, tt := range tests {
		t.Run(tt.policy.String(), func(t *testing.T) {
			r, _ := newTestRegistry(t)
			eps := synthetic(4, 1, 2, 3, 4)
			r.Update([]ClusterConfig{{Name: "c", Policy: tt.policy, Endpoints: eps}})
			got := shares(t, r.Cluster("c"), 40000, clientHash)
			for _, e := range eps {
				want := float64(e.Weight) / 10
				if math.Abs(got[e.Addr]-want) > tt.tol {
					t.Errorf("%s share %.3f, want %.3f ± %.2f", e.Addr, got[e.Addr], want, tt.tol)
				}
			}
		})
	}
}

func TestLeastRequestPrefersLessLoaded(t *testing.T) {
	r, _ := newTestRegistry(t)
	eps := synthetic(2)
	r.Update([]ClusterConfig{{Name: "c", Policy: LeastRequest, Endpoints: eps}})
	c := r.Cluster("c")

	// Load host 0 with 20 connections (picks that exclude host 1 land on host 0).
	var held []*Host
	for range 20 {
		h, err := c.Pick(0, []netip.AddrPort{eps[1].Addr})
		if err != nil || h.Addr() != eps[0].Addr {
			t.Fatalf("Pick excluding host 1 = %v, %v", h, err)
		}
		held = append(held, h)
	}
	// Two choices: the loaded host wins only when both candidates are it (1/4).
	got := shares(t, c, 4000, func(int) uint64 { return 0 })
	if s := got[eps[1].Addr]; s < 0.7 {
		t.Errorf("idle host got %.2f of the picks, want about 0.75", s)
	}
	if a := hostOf(t, c, eps[0].Addr).ActiveConnections; a != 20 {
		t.Errorf("loaded host has %d active connections, want 20", a)
	}
	for _, h := range held {
		h.Release()
	}

	// Held picks spread in proportion to the weights.
	r.Update([]ClusterConfig{{Name: "c", Policy: LeastRequest, Endpoints: synthetic(2, 1, 3), MaxConnections: 10000}})
	for range 4000 {
		if _, err := c.Pick(0, nil); err != nil {
			t.Fatal(err)
		}
	}
	a0, a1 := hostOf(t, c, eps[0].Addr).ActiveConnections, hostOf(t, c, eps[1].Addr).ActiveConnections
	if ratio := float64(a1) / float64(a0); ratio < 2.7 || ratio > 3.3 {
		t.Errorf("active connections %d and %d, want a ratio of 3", a0, a1)
	}
}

// hashMapping returns the host each of n clients is sent to.
func hashMapping(t *testing.T, c *Cluster, n int) []netip.AddrPort {
	out := make([]netip.AddrPort, n)
	for i := range out {
		out[i] = pickRelease(t, c, clientHash(i))
	}
	return out
}

func TestConsistentHashing(t *testing.T) {
	const hosts, clients = 10, 20000
	for _, p := range []Policy{RingHash, Maglev} {
		t.Run(p.String(), func(t *testing.T) {
			r, _ := newTestRegistry(t)
			eps := synthetic(hosts)
			r.Update([]ClusterConfig{{Name: "c", Policy: p, Endpoints: eps}})
			c := r.Cluster("c")
			before := hashMapping(t, c, clients)
			if again := hashMapping(t, c, clients); !equalAddrs(before, again) {
				t.Fatal("the same clients went to different hosts")
			}

			// Another agent, with the endpoints listed in another order, agrees.
			r2, _ := newTestRegistry(t)
			rev := make([]Endpoint, len(eps))
			for i, e := range eps {
				rev[len(eps)-1-i] = e
			}
			r2.Update([]ClusterConfig{{Name: "c", Policy: p, Endpoints: rev}})
			if other := hashMapping(t, r2.Cluster("c"), clients); !equalAddrs(before, other) {
				t.Error("a registry with the endpoints reordered sends clients elsewhere")
			}

			// Removing one host moves about 1/N of the clients, mostly its own.
			removed := eps[3].Addr
			r.Update([]ClusterConfig{{Name: "c", Policy: p, Endpoints: append(eps[:3:3], eps[4:]...)}})
			after := hashMapping(t, c, clients)
			moved, movedOthers := 0, 0
			for i := range before {
				if before[i] != after[i] {
					moved++
					if before[i] != removed {
						movedOthers++
					}
				}
				if after[i] == removed {
					t.Fatal("a client went to the removed host")
				}
			}
			frac := float64(moved) / clients
			if frac < 0.5/hosts || frac > 1.5/hosts {
				t.Errorf("%.3f of the clients moved, want about %.3f", frac, 1.0/hosts)
			}
			if f := float64(movedOthers) / clients; f > 0.02 {
				t.Errorf("%.3f of the clients of other hosts moved", f)
			}
		})
	}
}

func equalAddrs(a, b []netip.AddrPort) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return len(a) == len(b)
}

func TestPickExclude(t *testing.T) {
	for _, p := range []Policy{RoundRobin, LeastRequest, RingHash, Maglev, Random} {
		t.Run(p.String(), func(t *testing.T) {
			r, _ := newTestRegistry(t)
			eps := synthetic(3)
			r.Update([]ClusterConfig{{Name: "c", Policy: p, Endpoints: eps}})
			c := r.Cluster("c")
			for i := range 200 {
				first := pickRelease(t, c, clientHash(i))
				tried := []netip.AddrPort{first}
				second := pickRelease(t, c, clientHash(i), tried...)
				if second == first {
					t.Fatalf("retry went to the excluded host %s", first)
				}
				tried = append(tried, second)
				third := pickRelease(t, c, clientHash(i), tried...)
				if third == first || third == second {
					t.Fatalf("second retry went to an excluded host %s", third)
				}
				// Everything excluded: a host is still picked.
				pickRelease(t, c, clientHash(i), append(tried, third)...)
			}
		})
	}
}

func TestHashAddr(t *testing.T) {
	v4 := netip.MustParseAddr("192.0.2.1")
	if HashAddr(v4) != HashAddr(netip.MustParseAddr("::ffff:192.0.2.1")) {
		t.Error("IPv4 and IPv4-mapped IPv6 hash differently")
	}
	if HashAddr(v4) == HashAddr(netip.MustParseAddr("192.0.2.2")) {
		t.Error("different addresses hash alike")
	}
	if HashAddr(v4) != HashAddr(netip.MustParseAddr("192.0.2.1")) {
		t.Error("hash is not stable")
	}
}

func TestEmptyCluster(t *testing.T) {
	r, _ := newTestRegistry(t)
	r.Update([]ClusterConfig{{Name: "c"}})
	if _, err := r.Cluster("c").Pick(0, nil); err != ErrNoHealthyUpstream {
		t.Errorf("Pick on an empty cluster: %v, want ErrNoHealthyUpstream", err)
	}
}

func BenchmarkPick(b *testing.B) {
	for _, p := range []Policy{RoundRobin, LeastRequest, RingHash, Maglev, Random} {
		b.Run(p.String(), func(b *testing.B) {
			r := NewRegistry(nil, nil)
			defer r.Close()
			r.Update([]ClusterConfig{{Name: "c", Policy: p, Endpoints: synthetic(100, 1, 2, 3, 4, 5)}})
			c := r.Cluster("c")
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				h, err := c.Pick(clientHash(i), nil)
				if err != nil {
					b.Fatal(err)
				}
				h.Release()
				i++
			}
		})
	}
}
