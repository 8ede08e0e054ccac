package match

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func pfx(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

// in returns a connection to 10.0.0.1:443 from 192.0.2.1 with the given SNI, TLS.
func in(sni string, edit func(*Input)) *Input {
	i := &Input{
		DestinationIP: ip("10.0.0.1"), DestinationPort: 443,
		ServerName: sni, TransportProtocol: "tls",
		DirectSourceIP: ip("192.0.2.1"), SourceIP: ip("192.0.2.1"),
	}
	if sni == "" {
		i.TransportProtocol = "raw_buffer"
	}
	if edit != nil {
		edit(i)
	}
	return i
}

func TestMatch(t *testing.T) {
	tests := []struct {
		name   string
		chains []Conditions
		in     *Input
		want   int
	}{
		{"no chains", nil, in("a.example", nil), -1},
		{"empty match takes everything", []Conditions{{}}, in("", nil), 0},
		// Envoy's documented order of specificity for SNI www.example.com: www.example.com,
		// then *.example.com, then *.com, then chains without server_names.
		{"exact beats wildcard", []Conditions{
			{}, {ServerNames: []string{"*.com"}}, {ServerNames: []string{"*.example.com"}}, {ServerNames: []string{"www.example.com"}},
		}, in("www.example.com", nil), 3},
		{"longer wildcard beats shorter", []Conditions{
			{}, {ServerNames: []string{"*.com"}}, {ServerNames: []string{"*.example.com"}},
		}, in("www.example.com", nil), 2},
		{"shortest wildcard", []Conditions{{}, {ServerNames: []string{"*.com"}}}, in("www.example.com", nil), 1},
		{"no name matches: fallback", []Conditions{{}, {ServerNames: []string{"*.org"}}}, in("www.example.com", nil), 0},
		{"wildcard matches any depth", []Conditions{{ServerNames: []string{"*.example.com"}}}, in("a.b.c.example.com", nil), 0},
		{"wildcard does not match its suffix", []Conditions{{ServerNames: []string{"*.example.com"}}}, in("example.com", nil), -1},
		{"no SNI goes to fallback", []Conditions{{ServerNames: []string{"a.example"}}, {}}, in("", nil), 1},
		{"no SNI and no fallback", []Conditions{{ServerNames: []string{"a.example"}}}, in("", nil), -1},
		{"one chain of several names", []Conditions{{ServerNames: []string{"a.example", "*.b.example"}}, {ServerNames: []string{"c.example"}}}, in("x.b.example", nil), 0},

		{"exact port beats any", []Conditions{{}, {DestinationPort: 443}}, in("", nil), 1},
		{"other port falls back", []Conditions{{}, {DestinationPort: 8443}}, in("", nil), 0},
		{"port only, no fallback", []Conditions{{DestinationPort: 8443}}, in("", nil), -1},

		{"longest destination prefix", []Conditions{
			{PrefixRanges: pfx("10.0.0.0/8")}, {PrefixRanges: pfx("10.0.0.0/24")}, {},
		}, in("", nil), 1},
		{"destination prefix misses", []Conditions{{PrefixRanges: pfx("10.1.0.0/16")}, {}}, in("", nil), 1},
		{"IPv4-mapped destination", []Conditions{{PrefixRanges: pfx("10.0.0.1/32")}}, in("", func(i *Input) { i.DestinationIP = ip("::ffff:10.0.0.1") }), 0},
		{"IPv6 destination", []Conditions{{PrefixRanges: pfx("10.0.0.0/8")}, {PrefixRanges: pfx("2001:db8::/32")}}, in("", func(i *Input) { i.DestinationIP = ip("2001:db8::1") }), 1},

		{"transport exact beats any", []Conditions{{}, {TransportProtocol: "tls"}}, in("a.example", nil), 1},
		{"raw_buffer", []Conditions{{TransportProtocol: "tls"}, {TransportProtocol: "raw_buffer"}}, in("", nil), 1},

		{"ALPN: the client's first protocol a chain names", []Conditions{
			{ApplicationProtocols: []string{"http/1.1"}}, {ApplicationProtocols: []string{"h2"}}, {},
		}, in("a.example", func(i *Input) { i.ApplicationProtocols = []string{"h3", "h2", "http/1.1"} }), 1},
		{"ALPN: none matches", []Conditions{{ApplicationProtocols: []string{"h2"}}, {}}, in("a.example", func(i *Input) { i.ApplicationProtocols = []string{"imap"} }), 1},
		{"ALPN: none offered", []Conditions{{ApplicationProtocols: []string{"h2"}}}, in("a.example", nil), -1},

		{"direct source longest prefix", []Conditions{
			{DirectSourcePrefixRanges: pfx("192.0.2.0/24")}, {DirectSourcePrefixRanges: pfx("192.0.2.0/28")},
		}, in("", nil), 1},
		{"direct source untrusted", []Conditions{{DirectSourcePrefixRanges: pfx("127.0.0.0/8")}}, in("", nil), -1},
		{"source prefix and fallback", []Conditions{{SourcePrefixRanges: pfx("198.51.100.0/24")}, {}}, in("", func(i *Input) { i.SourceIP = ip("198.51.100.7") }), 0},
		{"source prefix misses", []Conditions{{SourcePrefixRanges: pfx("198.51.100.0/24")}, {}}, in("", nil), 1},
		{"source 0.0.0.0/0 beats empty", []Conditions{{}, {SourcePrefixRanges: pfx("0.0.0.0/0")}}, in("", nil), 1},

		// No backtracking: the SNI level picks chain 0's exact name; its transport does not
		// match, and chain 1 (which would match everything) is not considered.
		{"no backtracking across levels", []Conditions{
			{ServerNames: []string{"a.example"}, TransportProtocol: "raw_buffer"},
			{ServerNames: []string{"*.example"}},
		}, in("a.example", nil), -1},
		{"no backtracking: port level wins first", []Conditions{
			{DestinationPort: 443, ServerNames: []string{"b.example"}},
			{ServerNames: []string{"a.example"}},
		}, in("a.example", nil), -1},
		{"no backtracking: destination IP before SNI", []Conditions{
			{PrefixRanges: pfx("10.0.0.0/8")},
			{ServerNames: []string{"a.example"}},
		}, in("a.example", nil), 0},
		{"trusted peers on every chain", []Conditions{
			{ServerNames: []string{"a.example"}, DirectSourcePrefixRanges: pfx("127.0.0.0/8")},
			{DirectSourcePrefixRanges: pfx("127.0.0.0/8")},
		}, in("b.example", func(i *Input) { i.DirectSourceIP = ip("127.0.0.1") }), 1},
		{"all levels", []Conditions{
			{DestinationPort: 443, PrefixRanges: pfx("10.0.0.0/8"), ServerNames: []string{"ldap.example"}, TransportProtocol: "tls",
				ApplicationProtocols: []string{"ldap"}, DirectSourcePrefixRanges: pfx("192.0.2.0/24"), SourcePrefixRanges: pfx("192.0.2.1/32")},
			{DestinationPort: 443, PrefixRanges: pfx("10.0.0.0/8"), ServerNames: []string{"ldap.example"}, TransportProtocol: "tls",
				ApplicationProtocols: []string{"ldap"}, DirectSourcePrefixRanges: pfx("192.0.2.0/24")},
		}, in("ldap.example", func(i *Input) { i.ApplicationProtocols = []string{"ldap"} }), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Compile(tt.chains)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			if got := m.Match(tt.in); got != tt.want {
				t.Errorf("Match = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name   string
		chains []Conditions
		want   string
	}{
		{"two empty matches", []Conditions{{}, {}}, "filter chains 0 and 1 have the same matching rules"},
		{"same name", []Conditions{{ServerNames: []string{"a.example"}}, {ServerNames: []string{"b.example", "a.example"}}}, "filter chains 0 and 1 have the same matching rules"},
		{"same masked prefix", []Conditions{{PrefixRanges: pfx("10.0.0.1/8")}, {PrefixRanges: pfx("10.0.0.0/8")}}, "filter chains 0 and 1 have the same matching rules"},
		{"same everything", []Conditions{{}, {DestinationPort: 1}, {DestinationPort: 1}}, "filter chains 1 and 2 have the same matching rules"},
		{"partial wildcard", []Conditions{{ServerNames: []string{"*w.example"}}}, `chain 0: server_names: "*w.example": partial wildcards are not supported`},
		{"inner wildcard", []Conditions{{ServerNames: []string{"a.*.example"}}}, `partial wildcards are not supported`},
		{"bare star", []Conditions{{ServerNames: []string{"*"}}}, `partial wildcards are not supported`},
		{"empty name", []Conditions{{ServerNames: []string{""}}}, `"" is not a host name`},
		{"empty label", []Conditions{{ServerNames: []string{"a..example"}}}, `empty label`},
		{"trailing dot", []Conditions{{ServerNames: []string{"a.example."}}}, `empty label`},
		{"hyphen", []Conditions{{ServerNames: []string{"-a.example"}}}, `starts or ends with a hyphen`},
		{"underscore", []Conditions{{ServerNames: []string{"a_b.example"}}}, `other than letters, digits and hyphens`},
		{"upper case", []Conditions{{ServerNames: []string{"A.example"}}}, `not lower case`},
		{"long label", []Conditions{{ServerNames: []string{strings.Repeat("a", 64) + ".example"}}}, `longer than 63 bytes`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compile(tt.chains)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Compile error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
	var de *DuplicateError
	if _, err := Compile([]Conditions{{}, {}}); !errors.As(err, &de) || de.First != 0 || de.Second != 1 {
		t.Errorf("Compile error = %v, want a *DuplicateError for chains 0 and 1", err)
	}
}

func TestMatchAllocs(t *testing.T) {
	m, i := benchMatcher(t)
	if n := testing.AllocsPerRun(100, func() { m.Match(i) }); n != 0 {
		t.Errorf("Match allocates %v times per call, want 0", n)
	}
}

// benchMatcher is a listener of 100 SNI chains, 10 wildcard ones, a raw chain and trusted
// peers, matched with a wildcard name.
func benchMatcher(t testing.TB) (*Matcher, *Input) {
	var chains []Conditions
	trusted := pfx("127.0.0.0/8", "10.0.0.0/8")
	for i := range 100 {
		chains = append(chains, Conditions{ServerNames: []string{"host" + string(rune('a'+i%26)) + string(rune('a'+i/26)) + ".example"},
			TransportProtocol: "tls", DirectSourcePrefixRanges: trusted})
	}
	for i := range 10 {
		chains = append(chains, Conditions{ServerNames: []string{"*.zone" + string(rune('a'+i)) + ".example"},
			TransportProtocol: "tls", DirectSourcePrefixRanges: trusted})
	}
	chains = append(chains, Conditions{TransportProtocol: "raw_buffer", DirectSourcePrefixRanges: trusted})
	m, err := Compile(chains)
	if err != nil {
		t.Fatal(err)
	}
	i := in("a.b.zonej.example", func(i *Input) {
		i.DirectSourceIP = ip("10.1.2.3")
		i.ApplicationProtocols = []string{"h2", "http/1.1"}
	})
	if got := m.Match(i); got != 109 {
		t.Fatalf("Match = %d, want 109", got)
	}
	return m, i
}

func BenchmarkMatch(b *testing.B) {
	m, i := benchMatcher(b)
	b.ReportAllocs()
	for b.Loop() {
		m.Match(i)
	}
}
