package upstream

import (
	"cmp"
	"container/heap"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"

	"github.com/cespare/xxhash/v2"
)

// balancer is the immutable picture a Pick works from: the hosts that may be picked right
// now and the policy's lookup structure over them. A cluster rebuilds it whenever its
// configuration or the set of hosts taking traffic changes, and publishes it with one
// atomic store.
type balancer struct {
	policy   Policy
	hosts    []*Host // candidates: the hosts taking traffic, or all hosts in panic mode
	weights  []uint32
	panic    bool
	maxConns int64
	outlier  *outlier // nil: outlier detection off

	schedule []uint32 // RoundRobin: host indexes in EDF order
	cum      []uint64 // LeastRequest, Random: cumulative weights
	ring     []ringEntry
	table    []uint32 // Maglev: host index per slot
}

// ringEntry is one point of a RingHash ring.
type ringEntry struct {
	hash uint64
	host uint32
}

// newBalancer builds the lookup structure of policy over hosts and their weights (len
// equal, weights >= 1).
func newBalancer(cfg *ClusterConfig, hosts []*Host, weights []uint32) *balancer {
	b := &balancer{policy: cfg.Policy, hosts: hosts, weights: weights}
	if len(hosts) == 0 {
		return b
	}
	switch cfg.Policy {
	case RoundRobin:
		b.schedule = edfSchedule(weights)
	case LeastRequest, Random:
		b.cum = make([]uint64, len(weights))
		var sum uint64
		for i, w := range weights {
			sum += uint64(w)
			b.cum[i] = sum
		}
	case RingHash:
		b.ring = buildRing(hosts, weights, orDefault(cfg.MinRingSize, DefaultMinRingSize), orDefault(cfg.MaxRingSize, DefaultMaxRingSize))
	case Maglev:
		b.table = buildMaglev(hosts, weights, orDefault(cfg.TableSize, DefaultTableSize))
	}
	return b
}

// pick returns the index in b.hosts of the host for a new connection, preferring hosts not
// in exclude. If every candidate is excluded it returns the policy's choice anyway, like
// Envoy's previous_hosts retry predicate once its attempts run out. b.hosts is not empty.
func (b *balancer) pick(rr uint64, hash uint64, exclude []netip.AddrPort) int {
	var i int
	switch b.policy {
	case RoundRobin:
		i = int(b.schedule[rr%uint64(len(b.schedule))])
	case Random:
		i = b.weightedRandom()
	case LeastRequest:
		return b.leastRequest(exclude)
	case RingHash:
		return b.ringPick(hash, exclude)
	case Maglev:
		return b.maglevPick(hash, exclude)
	}
	if len(exclude) == 0 || !excluded(b.hosts[i], exclude) {
		return i
	}
	for k := 1; k < len(b.hosts); k++ {
		if j := (i + k) % len(b.hosts); !excluded(b.hosts[j], exclude) {
			return j
		}
	}
	return i
}

func excluded(h *Host, exclude []netip.AddrPort) bool {
	return slices.Contains(exclude, h.addr)
}

// allExcluded reports whether every candidate is in exclude; the hash policies check it
// before walking their (large) tables for a host that is not.
func (b *balancer) allExcluded(exclude []netip.AddrPort) bool {
	for _, h := range b.hosts {
		if !excluded(h, exclude) {
			return false
		}
	}
	return true
}

// weightedRandom returns a host index with probability proportional to its weight.
func (b *balancer) weightedRandom() int {
	r := rand.Uint64N(b.cum[len(b.cum)-1])
	i, _ := slices.BinarySearch(b.cum, r+1) // first i with cum[i] > r
	return i
}

// leastRequest is power of two choices: two candidates drawn in proportion to their
// weights, and the one with fewer active connections per unit of weight wins; ties go to
// the first, so an idle cluster is spread exactly by weight. Excluded candidates lose; if
// both are excluded, the least loaded host that is not excluded wins.
func (b *balancer) leastRequest(exclude []netip.AddrPort) int {
	a, c := b.weightedRandom(), b.weightedRandom()
	ea := len(exclude) > 0 && excluded(b.hosts[a], exclude)
	ec := len(exclude) > 0 && excluded(b.hosts[c], exclude)
	switch {
	case ea && ec:
		best := -1
		for j, h := range b.hosts {
			if !excluded(h, exclude) && (best < 0 || b.lighter(j, best)) {
				best = j
			}
		}
		if best < 0 {
			return a
		}
		return best
	case ea:
		return c
	case ec:
		return a
	case b.lighter(c, a):
		return c
	}
	return a
}

// lighter reports whether host i carries less load per unit of weight than host j:
// active_i/w_i < active_j/w_j.
func (b *balancer) lighter(i, j int) bool {
	li := uint64(max(b.hosts[i].active.Load(), 0)) * uint64(b.weights[j])
	lj := uint64(max(b.hosts[j].active.Load(), 0)) * uint64(b.weights[i])
	return li < lj
}

// ringPick returns the host of the first ring entry at or after hash, walking on past
// entries of excluded hosts.
func (b *balancer) ringPick(hash uint64, exclude []netip.AddrPort) int {
	r := b.ring
	lo, hi := 0, len(r)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if r[m].hash < hash {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == len(r) {
		lo = 0
	}
	first := int(r[lo].host)
	if len(exclude) == 0 || !excluded(b.hosts[first], exclude) || b.allExcluded(exclude) {
		return first
	}
	for k := range r {
		if h := int(r[(lo+k)%len(r)].host); !excluded(b.hosts[h], exclude) {
			return h
		}
	}
	return first
}

// maglevPick returns the host of the table slot hash selects, walking on past slots of
// excluded hosts.
func (b *balancer) maglevPick(hash uint64, exclude []netip.AddrPort) int {
	t := b.table
	s := hash % uint64(len(t))
	first := int(t[s])
	if len(exclude) == 0 || !excluded(b.hosts[first], exclude) || b.allExcluded(exclude) {
		return first
	}
	for k := range uint64(len(t)) {
		if h := int(t[(s+k)%uint64(len(t))]); !excluded(b.hosts[h], exclude) {
			return h
		}
	}
	return first
}

// maxScheduleLen bounds a round-robin schedule. Weights whose reduced sum exceeds it are
// scaled down proportionally (every host keeps at least one slot), an error below
// 1/maxScheduleLen of the traffic per host.
const maxScheduleLen = 1 << 14

// edfSchedule interleaves host indexes in proportion to their weights with the earliest
// deadline first rule Envoy uses: the k-th pick of host i is due at k/weight(i), the
// earliest due pick goes next, ties to the lower index. Equal weights give plain round
// robin in order; weights 1 and 3 give 1,1,0,1 (smooth, like nginx).
func edfSchedule(weights []uint32) []uint32 {
	w := make([]uint64, len(weights))
	var g uint64
	for i, x := range weights {
		w[i] = uint64(x)
		g = gcd(g, w[i])
	}
	total := reduce(w, g)
	if total > maxScheduleLen && total > uint64(len(w)) {
		g = 0
		for i := range w {
			w[i] = max(1, w[i]*maxScheduleLen/total)
			g = gcd(g, w[i])
		}
		total = reduce(w, g)
	}
	h := make(edfHeap, len(w))
	for i := range w {
		h[i] = edfItem{index: uint32(i), weight: w[i]}
	}
	heap.Init(&h)
	out := make([]uint32, total)
	for n := range out {
		out[n] = h[0].index
		h[0].picks++
		heap.Fix(&h, 0)
	}
	return out
}

// reduce divides every weight by g and returns their new sum.
func reduce(w []uint64, g uint64) uint64 {
	var total uint64
	for i := range w {
		w[i] /= g
		total += w[i]
	}
	return total
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// edfItem is a host in the schedule heap; its next pick is due at (picks+1)/weight.
type edfItem struct {
	index  uint32
	weight uint64
	picks  uint64
}

// edfHeap orders hosts by the due time of their next pick, then by index.
type edfHeap []edfItem

func (h edfHeap) Len() int { return len(h) }
func (h edfHeap) Less(i, j int) bool {
	// (picks_i+1)/weight_i < (picks_j+1)/weight_j without division; both products stay
	// far below 2^64 (picks <= maxScheduleLen, weight < 2^32).
	a := (h[i].picks + 1) * h[j].weight
	b := (h[j].picks + 1) * h[i].weight
	if a != b {
		return a < b
	}
	return h[i].index < h[j].index
}
func (h edfHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *edfHeap) Push(x any)   { *h = append(*h, x.(edfItem)) }
func (h *edfHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// buildRing builds a ketama ring like Envoy's: host i gets n_i entries at
// xxhash("address_j") for j < n_i, where n_i is K times its weight over the smallest
// weight. K is the smallest power of two that makes the ring at least minSize entries
// long (the total is capped at maxSize). Envoy computes K exactly, so removing one host
// adds points to every other one and moves some of their clients too; rounding K up to a
// power of two keeps it, and so every other host's points, unchanged unless the number of
// hosts crosses a power of two. The ring depends only on the hosts' addresses and weights,
// not their order, so every agent builds the same ring.
func buildRing(hosts []*Host, weights []uint32, minSize, maxSize uint64) []ringEntry {
	var sum uint64
	minW := uint32(math.MaxUint32)
	for _, w := range weights {
		sum += uint64(w)
		minW = min(minW, w)
	}
	units := float64(sum) / float64(minW) // ring entries per unit of K
	k := 1.0
	for k*units < float64(minSize) {
		k *= 2
	}
	if k*units > float64(maxSize) {
		k = float64(maxSize) / units
	}
	counts := make([]int, len(hosts))
	total := 0
	for i, w := range weights {
		counts[i] = max(1, int(math.Round(k*float64(w)/float64(minW))))
		total += counts[i]
	}
	ring := make([]ringEntry, 0, total)
	var key []byte
	for i, h := range hosts {
		key = append(key[:0], h.addrStr...)
		key = append(key, '_')
		prefix := len(key)
		for n := range counts[i] {
			key = strconv.AppendInt(key[:prefix], int64(n), 10)
			ring = append(ring, ringEntry{hash: xxhash.Sum64(key), host: uint32(i)})
		}
	}
	slices.SortFunc(ring, func(a, b ringEntry) int {
		switch {
		case a.hash < b.hash:
			return -1
		case a.hash > b.hash:
			return 1
		}
		return cmp.Compare(hosts[a.host].addrStr, hosts[b.host].addrStr)
	})
	return ring
}

// buildMaglev fills a table of size m (a prime) with Maglev's population algorithm,
// weighted as in Envoy: every host walks its own permutation of the slots (offset and
// skip from hashes of its address) and, in each round, a host of weight w claims its next
// free slot in w/maxWeight of the rounds. Hosts take turns in address order, so the table
// does not depend on the order the configuration lists them in.
func buildMaglev(hosts []*Host, weights []uint32, m uint64) []uint32 {
	type entry struct {
		offset, skip, next uint64
		weight, target     uint64
	}
	var maxW uint64
	entries := make([]entry, len(hosts))
	for i, h := range hosts {
		sum := xxhash.Sum64String(h.addrStr)
		entries[i] = entry{
			offset: sum % m,
			skip:   splitmix64(sum)%(m-1) + 1,
			weight: uint64(weights[i]),
		}
		maxW = max(maxW, uint64(weights[i]))
	}
	const empty = math.MaxUint32
	table := make([]uint32, m)
	for i := range table {
		table[i] = empty
	}
	order := make([]int, len(hosts))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return hosts[a].addr.Compare(hosts[b].addr) })
	filled := uint64(0)
	for round := uint64(0); filled < m; round++ {
		for _, i := range order {
			if filled == m {
				break
			}
			e := &entries[i]
			if round*e.weight < e.target {
				continue
			}
			e.target += maxW
			c := (e.offset + e.skip*e.next) % m
			for table[c] != empty {
				e.next++
				c = (e.offset + e.skip*e.next) % m
			}
			table[c] = uint32(i)
			e.next++
			filled++
		}
	}
	return table
}

// splitmix64 scrambles x; it derives Maglev's skip from the same address hash as the
// offset.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// HashAddr returns a stable hash of a client IP address for RingHash and Maglev: the same
// address always hashes the same, in every process; an IPv4 address and its IPv4-mapped
// IPv6 form hash alike.
func HashAddr(a netip.Addr) uint64 {
	b := a.Unmap().As16()
	return xxhash.Sum64(b[:])
}
