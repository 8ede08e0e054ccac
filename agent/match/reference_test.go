package match

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// reference selects a chain the way Envoy's documentation states the rules, one level at a
// time over the set of candidate chains, with no tree: at each level keep the chains whose
// value matches most specifically, else those that leave the field empty.
func reference(chains []Conditions, in *Input) int {
	cand := make([]int, len(chains))
	for i := range cand {
		cand[i] = i
	}
	// level narrows cand; score reports whether chain c sets the field (set), whether it
	// matches, and how specifically (higher is more specific).
	level := func(score func(c *Conditions) (set, ok bool, s int)) {
		var specific, empty []int
		best := -1 << 31
		for _, i := range cand {
			set, ok, s := score(&chains[i])
			switch {
			case !set:
				empty = append(empty, i)
			case ok && s > best:
				best, specific = s, []int{i}
			case ok && s == best:
				specific = append(specific, i)
			}
		}
		if len(specific) > 0 {
			cand = specific
		} else {
			cand = empty
		}
	}
	ipScore := func(ps []netip.Prefix, a netip.Addr) (bool, bool, int) {
		best := -1
		for _, p := range ps {
			if a.IsValid() && p.Masked().Contains(a.Unmap()) {
				best = max(best, p.Bits())
			}
		}
		return len(ps) > 0, best >= 0, best
	}
	level(func(c *Conditions) (bool, bool, int) {
		return c.DestinationPort != 0, c.DestinationPort == in.DestinationPort, 0
	})
	level(func(c *Conditions) (bool, bool, int) { return ipScore(c.PrefixRanges, in.DestinationIP) })
	level(func(c *Conditions) (bool, bool, int) {
		best := -1
		for _, n := range c.ServerNames {
			if in.ServerName == "" {
				continue
			}
			if n == in.ServerName {
				best = max(best, 1000)
			} else if suffix, ok := strings.CutPrefix(n, "*"); ok && strings.HasSuffix(in.ServerName, suffix) {
				best = max(best, len(suffix))
			}
		}
		return len(c.ServerNames) > 0, best >= 0, best
	})
	level(func(c *Conditions) (bool, bool, int) {
		return c.TransportProtocol != "", c.TransportProtocol == in.TransportProtocol, 0
	})
	level(func(c *Conditions) (bool, bool, int) {
		best := -1 << 30
		for _, p := range c.ApplicationProtocols {
			if i := slices.Index(in.ApplicationProtocols, p); i >= 0 {
				best = max(best, -i)
			}
		}
		return len(c.ApplicationProtocols) > 0, best > -1<<30, best
	})
	level(func(c *Conditions) (bool, bool, int) { return ipScore(c.DirectSourcePrefixRanges, in.DirectSourceIP) })
	level(func(c *Conditions) (bool, bool, int) { return ipScore(c.SourcePrefixRanges, in.SourceIP) })
	if len(cand) == 1 {
		return cand[0]
	}
	return -1
}

// TestMatchAgainstReference compares Match with reference on random listeners and
// connections drawn from small value sets, so that overlaps and ties are common.
func TestMatchAgainstReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func(n int) int { return rng.IntN(n) }
	prefixes := func(opts ...string) []netip.Prefix {
		switch pick(3) {
		case 0:
			return nil
		case 1:
			return pfx(opts[pick(len(opts))])
		}
		return pfx(opts[pick(len(opts))], opts[pick(len(opts))])
	}
	subset := func(opts ...string) []string {
		var out []string
		for _, o := range opts {
			if pick(3) == 0 {
				out = append(out, o)
			}
		}
		return out
	}
	ports := []uint16{0, 443, 8443}
	transports := []string{"", "tls", "raw_buffer"}
	addrs := []string{"10.0.0.1", "10.1.2.3", "127.0.0.1", "192.0.2.9", "2001:db8::1"}
	names := []string{"", "a.example", "x.a.example", "b.example", "example", "y.x.a.example"}
	compiled, matched := 0, 0
	for range 6000 {
		chains := make([]Conditions, 1+pick(6))
		for i := range chains {
			chains[i] = Conditions{
				DestinationPort:          ports[pick(3)],
				PrefixRanges:             prefixes("10.0.0.0/8", "10.0.0.0/24", "10.1.0.0/16", "2001:db8::/32"),
				ServerNames:              subset("a.example", "*.example", "*.a.example", "b.example", "*.x.a.example"),
				TransportProtocol:        transports[pick(3)],
				ApplicationProtocols:     subset("h2", "http/1.1"),
				DirectSourcePrefixRanges: prefixes("127.0.0.0/8", "127.0.0.1/32", "0.0.0.0/0"),
				SourcePrefixRanges:       prefixes("192.0.2.0/24", "0.0.0.0/0", "10.0.0.0/8"),
			}
		}
		m, err := Compile(chains)
		if err != nil {
			continue
		}
		compiled++
		for range 10 {
			in := &Input{
				DestinationIP:        netip.MustParseAddr(addrs[pick(len(addrs))]),
				DestinationPort:      ports[pick(3)],
				ServerName:           names[pick(len(names))],
				TransportProtocol:    transports[1+pick(2)],
				ApplicationProtocols: subset("http/1.1", "h2", "h3"),
				DirectSourceIP:       netip.MustParseAddr(addrs[pick(len(addrs))]),
				SourceIP:             netip.MustParseAddr(addrs[pick(len(addrs))]),
			}
			got, want := m.Match(in), reference(chains, in)
			if got != want {
				t.Fatalf("Match = %d, reference = %d\nchains: %+v\ninput: %+v", got, want, chains, in)
			}
			if got >= 0 {
				matched++
			}
		}
	}
	if compiled < 500 || matched < 500 {
		t.Fatalf("too few cases exercised: %d listeners compiled, %d connections matched", compiled, matched)
	}
}
