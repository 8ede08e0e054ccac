// Package match selects a listener's filter chain for a new connection the way Envoy's
// filter_chain_match does. It is pure: Compile turns the match conditions of a listener's
// chains into an immutable Matcher, and Matcher.Match walks it with what the accept path
// learned about the connection (addresses, SNI, ALPN, transport), without allocating.
//
// Envoy's rules, which this package follows exactly: the criteria are tried level by level in
// a fixed order — destination port, destination IP, server name, transport protocol,
// application protocols, direct source IP, source IP. At each level the chains whose value
// for that criterion matches most specifically are kept (an exact port; the longest IP prefix;
// an exact server name, else the longest "*." wildcard suffix; an equal transport; the first
// of the client's ALPN protocols that some chain names); chains that leave the criterion
// empty are kept only when no chain matches it specifically. There is no backtracking: once a
// level has chosen, a failure further down means no chain matches, even if a less specific
// chain at an earlier level would have matched everything. Two chains with the same
// conditions are an error, as in Envoy.
package match

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Conditions are one filter chain's filter_chain_match. A zero field matches anything (it is
// the fallback at its level).
type Conditions struct {
	// DestinationPort is the local port the client connected to; 0 means any.
	DestinationPort uint16
	// PrefixRanges hold the local address the client connected to.
	PrefixRanges []netip.Prefix
	// ServerNames are lower-case exact host names or "*.suffix" wildcards (any depth of
	// subdomain; the suffix itself does not match), as from the TLS SNI.
	ServerNames []string
	// TransportProtocol is "tls" or "raw_buffer" (see Input.TransportProtocol).
	TransportProtocol string
	// ApplicationProtocols are ALPN protocol names the client offers.
	ApplicationProtocols []string
	// DirectSourcePrefixRanges hold the TCP peer's address.
	DirectSourcePrefixRanges []netip.Prefix
	// SourcePrefixRanges hold the client's address (the PROXY protocol source if any).
	SourcePrefixRanges []netip.Prefix
}

// Input is what is known about a connection when its chain is chosen.
type Input struct {
	DestinationIP   netip.Addr
	DestinationPort uint16
	// ServerName is the SNI, lower case, "" when none.
	ServerName string
	// TransportProtocol is "tls" when a ClientHello was seen, else "raw_buffer".
	TransportProtocol string
	// ApplicationProtocols are the ALPN protocols the client offers, in its order.
	ApplicationProtocols []string
	DirectSourceIP       netip.Addr
	SourceIP             netip.Addr
}

// Matcher selects a chain. It is immutable and safe for concurrent use.
type Matcher struct {
	root *portNode
	n    int
}

// Len returns the number of chains the Matcher was compiled from.
func (m *Matcher) Len() int { return m.n }

// Match returns the index of the chain for in, or -1 when no chain matches (the caller
// then uses the listener's default chain, if any). It does not allocate.
func (m *Matcher) Match(in *Input) int {
	if m == nil || m.root == nil {
		return -1
	}
	dst := m.root.any
	if n, ok := m.root.ports[in.DestinationPort]; ok {
		dst = n
	}
	if dst == nil {
		return -1
	}
	sn := dst.lookup(in.DestinationIP.Unmap())
	if sn == nil {
		return -1
	}
	tp := sn.lookup(in.ServerName)
	if tp == nil {
		return -1
	}
	ap := tp.any
	if n, ok := tp.protos[in.TransportProtocol]; ok {
		ap = n
	}
	if ap == nil {
		return -1
	}
	ds := ap.lookup(in.ApplicationProtocols)
	if ds == nil {
		return -1
	}
	src := ds.lookup(in.DirectSourceIP.Unmap())
	if src == nil {
		return -1
	}
	leaf := src.lookup(in.SourceIP.Unmap())
	if leaf == nil {
		return -1
	}
	return leaf.chain
}

// The tree has one node type per level. Each node maps the values chains name at that level
// to the node of the next level built from those chains, plus "any" for the chains that
// leave the criterion empty.
type (
	portNode struct {
		ports map[uint16]*ipNode[*nameNode]
		any   *ipNode[*nameNode]
	}
	// ipNode is a destination, direct source or source IP level. Prefixes are sorted
	// longest first, so the first that contains an address is the longest match.
	ipNode[T any] struct {
		prefixes []netip.Prefix
		next     []T
		any      T
	}
	nameNode struct {
		exact    map[string]*transportNode
		wildcard map[string]*transportNode // by suffix without "*."
		any      *transportNode
	}
	transportNode struct {
		protos map[string]*alpnNode
		any    *alpnNode
	}
	alpnNode struct {
		protos map[string]*ipNode[*ipNode[*leaf]]
		any    *ipNode[*ipNode[*leaf]]
	}
	leaf struct{ chain int }
)

func (n *ipNode[T]) lookup(a netip.Addr) T {
	if a.IsValid() {
		for i, p := range n.prefixes {
			if p.Contains(a) {
				return n.next[i]
			}
		}
	}
	return n.any
}

func (n *nameNode) lookup(name string) *transportNode {
	if name != "" {
		if t, ok := n.exact[name]; ok {
			return t
		}
		// The longest wildcard suffix first: "a.b.example" tries "b.example", then "example".
		if len(n.wildcard) > 0 {
			for i := 0; i < len(name); i++ {
				if name[i] == '.' {
					if t, ok := n.wildcard[name[i+1:]]; ok {
						return t
					}
				}
			}
		}
	}
	return n.any
}

func (n *alpnNode) lookup(protos []string) *ipNode[*ipNode[*leaf]] {
	for _, p := range protos {
		if t, ok := n.protos[p]; ok {
			return t
		}
	}
	return n.any
}

// Compile builds the Matcher for chains, in the listener's order (Match returns indexes into
// chains). It returns an error naming the chains when two have identical conditions, or
// when a server name is neither a valid host name nor a "*." wildcard.
func Compile(chains []Conditions) (*Matcher, error) {
	for i, c := range chains {
		for _, s := range c.ServerNames {
			if err := CheckServerName(s); err != nil {
				return nil, fmt.Errorf("chain %d: server_names: %w", i, err)
			}
		}
	}
	idx := make([]int, len(chains))
	for i := range idx {
		idx[i] = i
	}
	b := builder{chains: chains}
	root, err := b.ports(idx)
	if err != nil {
		return nil, err
	}
	return &Matcher{root: root, n: len(chains)}, nil
}

// builder builds the tree level by level from subsets of chains (indexes into chains).
type builder struct{ chains []Conditions }

// group splits idx by the values key returns for each chain; chains with no value go to the
// "" group, returned separately. A chain naming a value twice counts once.
func group[K comparable](idx []int, keys func(int) []K) (by map[K][]int, order []K, none []int) {
	by = map[K][]int{}
	for _, i := range idx {
		ks := keys(i)
		if len(ks) == 0 {
			none = append(none, i)
			continue
		}
		seen := make(map[K]bool, len(ks))
		for _, k := range ks {
			if seen[k] {
				continue
			}
			seen[k] = true
			if _, ok := by[k]; !ok {
				order = append(order, k)
			}
			by[k] = append(by[k], i)
		}
	}
	return by, order, none
}

func (b *builder) ports(idx []int) (*portNode, error) {
	by, order, none := group(idx, func(i int) []uint16 {
		if p := b.chains[i].DestinationPort; p != 0 {
			return []uint16{p}
		}
		return nil
	})
	n := &portNode{ports: make(map[uint16]*ipNode[*nameNode], len(by))}
	for _, k := range order {
		next, err := buildIP(by[k], func(i int) []netip.Prefix { return b.chains[i].PrefixRanges }, b.names)
		if err != nil {
			return nil, err
		}
		n.ports[k] = next
	}
	if len(none) > 0 {
		next, err := buildIP(none, func(i int) []netip.Prefix { return b.chains[i].PrefixRanges }, b.names)
		if err != nil {
			return nil, err
		}
		n.any = next
	}
	return n, nil
}

// buildIP builds an IP level from idx, whose chains' prefixes come from prefixes, and the
// next level of each group with next.
func buildIP[T any](idx []int, prefixes func(int) []netip.Prefix, next func([]int) (T, error)) (*ipNode[T], error) {
	by, order, none := group(idx, func(i int) []netip.Prefix {
		ps := prefixes(i)
		out := make([]netip.Prefix, len(ps))
		for j, p := range ps {
			out[j] = p.Masked()
		}
		return out
	})
	// Longest prefix first; equal lengths in a stable order (they cannot overlap).
	slices.SortStableFunc(order, func(a, b netip.Prefix) int { return b.Bits() - a.Bits() })
	n := &ipNode[T]{prefixes: order, next: make([]T, len(order))}
	for j, p := range order {
		t, err := next(by[p])
		if err != nil {
			return nil, err
		}
		n.next[j] = t
	}
	if len(none) > 0 {
		t, err := next(none)
		if err != nil {
			return nil, err
		}
		n.any = t
	}
	return n, nil
}

func (b *builder) names(idx []int) (*nameNode, error) {
	by, order, none := group(idx, func(i int) []string { return b.chains[i].ServerNames })
	n := &nameNode{}
	for _, k := range order {
		t, err := b.transports(by[k])
		if err != nil {
			return nil, err
		}
		if suffix, ok := strings.CutPrefix(k, "*."); ok {
			if n.wildcard == nil {
				n.wildcard = map[string]*transportNode{}
			}
			n.wildcard[suffix] = t
		} else {
			if n.exact == nil {
				n.exact = map[string]*transportNode{}
			}
			n.exact[k] = t
		}
	}
	if len(none) > 0 {
		t, err := b.transports(none)
		if err != nil {
			return nil, err
		}
		n.any = t
	}
	return n, nil
}

func (b *builder) transports(idx []int) (*transportNode, error) {
	by, order, none := group(idx, func(i int) []string {
		if t := b.chains[i].TransportProtocol; t != "" {
			return []string{t}
		}
		return nil
	})
	n := &transportNode{protos: make(map[string]*alpnNode, len(by))}
	for _, k := range order {
		t, err := b.alpn(by[k])
		if err != nil {
			return nil, err
		}
		n.protos[k] = t
	}
	if len(none) > 0 {
		t, err := b.alpn(none)
		if err != nil {
			return nil, err
		}
		n.any = t
	}
	return n, nil
}

func (b *builder) alpn(idx []int) (*alpnNode, error) {
	by, order, none := group(idx, func(i int) []string { return b.chains[i].ApplicationProtocols })
	n := &alpnNode{protos: make(map[string]*ipNode[*ipNode[*leaf]], len(by))}
	for _, k := range order {
		t, err := b.directSource(by[k])
		if err != nil {
			return nil, err
		}
		n.protos[k] = t
	}
	if len(none) > 0 {
		t, err := b.directSource(none)
		if err != nil {
			return nil, err
		}
		n.any = t
	}
	return n, nil
}

func (b *builder) directSource(idx []int) (*ipNode[*ipNode[*leaf]], error) {
	return buildIP(idx, func(i int) []netip.Prefix { return b.chains[i].DirectSourcePrefixRanges }, b.source)
}

func (b *builder) source(idx []int) (*ipNode[*leaf], error) {
	return buildIP(idx, func(i int) []netip.Prefix { return b.chains[i].SourcePrefixRanges }, b.leaf)
}

// leaf ends a path through the tree: exactly one chain may get there.
func (b *builder) leaf(idx []int) (*leaf, error) {
	if len(idx) > 1 {
		return nil, &DuplicateError{First: idx[0], Second: idx[1]}
	}
	return &leaf{chain: idx[0]}, nil
}

// DuplicateError reports two chains with the same matching rules (Envoy: "multiple filter
// chains with the same matching rules are defined").
type DuplicateError struct{ First, Second int }

func (e *DuplicateError) Error() string {
	return fmt.Sprintf("filter chains %d and %d have the same matching rules", e.First, e.Second)
}

// CheckServerName reports whether s is a valid server_names entry: a lower-case host name of
// LDH labels (letters, digits, hyphens, not at either end of a label), or "*." followed by
// one. A "*" anywhere else (partial wildcards like "*w.example") is an error, as in Envoy.
func CheckServerName(s string) error {
	name := strings.TrimPrefix(s, "*.")
	if name == "" {
		return fmt.Errorf("%q is not a host name", s)
	}
	if len(name) > 253 {
		return fmt.Errorf("%q is longer than 253 bytes", s)
	}
	for label := range strings.SplitSeq(name, ".") {
		if err := checkLabel(label); err != nil {
			return fmt.Errorf("%q: %w", s, err)
		}
	}
	return nil
}

func checkLabel(l string) error {
	switch {
	case l == "":
		return errors.New("empty label")
	case len(l) > 63:
		return fmt.Errorf("label %q is longer than 63 bytes", l)
	case l[0] == '-' || l[len(l)-1] == '-':
		return fmt.Errorf("label %q starts or ends with a hyphen", l)
	case strings.Contains(l, "*"):
		return errors.New(`partial wildcards are not supported (only "*." as the whole first label)`)
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			if 'A' <= c && c <= 'Z' {
				return fmt.Errorf("label %q is not lower case", l)
			}
			return fmt.Errorf("label %q has a character other than letters, digits and hyphens", l)
		}
	}
	return nil
}
