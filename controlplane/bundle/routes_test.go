package bundle

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	configv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/config/v1"
)

// backends are clusters for routing listeners to point at.
const backends = `
clusters:
  - { name: web, endpoints: ["192.0.2.10:443"] }
  - { name: ldap, proxy_protocol: v1, endpoints: ["192.0.2.20:636"] }
  - { name: fallback, proxy_protocol: v2, endpoints: ["192.0.2.30:443"] }
`

func TestValidateRouting(t *testing.T) {
	tests := []struct {
		name string
		yaml string   // listeners; backends are added
		want []string // error lines, in order; none for a valid bundle
	}{
		{name: "valid", yaml: `
listeners:
  - name: edge
    address: ":443"
    proxy_protocol: { trusted: ["127.0.0.1", "10.0.0.0/8", "2001:db8::/32"] }
    preread_timeout: 2s
    sni:
      - { names: [web.example, "*.web.example", "*.deep.web.example", WWW.Example], cluster: web }
    routes:
      - name: ldap-internal
        match: { sni: [ldap.example], alpn: [h2, http/1.1], transport: tls, source_cidrs: ["10.0.0.0/8"], server_addresses: ["10.1.2.3", "10.2.0.0/16"], server_port: 443 }
        cluster: ldap
      - { match: { sni: [ldap.example] }, cluster: ldap }
      - { match: { transport: raw }, cluster: fallback }
      - { match: { source_cidrs: ["192.0.2.0/24"] }, cluster: fallback }
      - { match: { source_cidrs: ["192.0.2.0/25"] }, cluster: fallback }
      - { name: web.example, match: { sni: [web.example], source_cidrs: ["192.0.2.0/24"] }, cluster: web }
    tcp: { cluster: fallback, idle_timeout: 10m, connect_attempts: 2 }
  - name: routes-only
    address: ":636"
    routes: [{ cluster: ldap }]
  - name: sni-only-with-settings
    address: ":8443"
    sni: [{ names: [a.example], cluster: web }]
    tcp: { idle_timeout: 1m }
  - name: proxy-only
    address: ":80"
    proxy_protocol: { trusted: ["::1"] }
    tcp: { cluster: web }
`},
		{name: "neither a route nor tcp.cluster", yaml: `
listeners:
  - { name: a, address: ":1" }
  - { name: b, address: ":2", tcp: { idle_timeout: 1m } }
  - { name: c, address: ":3", proxy_protocol: { trusted: ["10.0.0.0/8"] }, tcp: {} }
`, want: []string{
			`a.yaml: listeners[0].tcp: required: a listener needs tcp (a cluster to proxy to), udp, sni or routes`,
			`a.yaml: listeners[1].tcp.cluster: required: the name of a cluster to proxy to`,
			`a.yaml: listeners[2].tcp.cluster: required: the name of a cluster to proxy to`,
		}},
		{name: "clusters of routes", yaml: `
listeners:
  - name: a
    address: ":1"
    sni: [{ names: [a.example], cluster: nope }, { names: [b.example] }]
    routes: [{ match: { sni: [c.example] }, cluster: gone }, { match: { sni: [d.example] } }]
    tcp: { cluster: missing }
`, want: []string{
			`a.yaml: listeners[0].routes[0].cluster: unknown cluster "gone"`,
			`a.yaml: listeners[0].routes[1].cluster: required: the name of a cluster to proxy to`,
			`a.yaml: listeners[0].sni[0].cluster: unknown cluster "nope"`,
			`a.yaml: listeners[0].sni[1].cluster: required: the name of a cluster to proxy to`,
			`a.yaml: listeners[0].tcp.cluster: unknown cluster "missing"`,
		}},
		{name: "server names", yaml: `
listeners:
  - name: a
    address: ":1"
    sni:
      - names: ["", "*", "*.", "a..example", "-a.example", "a-.example", "*.*.example", "a.*.example", "a*.example", "a_b.example", "example.", "192.0.2.1", "` + strings.Repeat("a", 64) + `.example", "` + strings.Repeat("abcdefghi.", 25) + `example", "ok-1.example", "*.ok-1.example", "xn--bcher-kva.example"]
        cluster: web
      - { names: [], cluster: web }
      - { cluster: web }
    routes:
      - { match: { sni: ["bad name"] }, cluster: web }
`, want: []string{
			`a.yaml: listeners[0].routes[0].match.sni[0]: "bad name" is not a server name: ` + ServerNameRule,
			`a.yaml: listeners[0].sni[0].names[0]: required: a server name such as "example.com" or "*.example.com"`,
			`a.yaml: listeners[0].sni[0].names[1]: "*" is not a server name: ` + ServerNameRule,
			`a.yaml: listeners[0].sni[0].names[2]: "*." is not a server name: ` + ServerNameRule,
			`a.yaml: listeners[0].sni[0].names[3]: "a..example" is not a server name: ` + ServerNameRule,
			`a.yaml: listeners[0].sni[0].names[4]: "-a.example" is not a server name: ` + ServerNameRule,
			`a.yaml: listeners[0].sni[0].names[5]: "a-.example" is not a server name: ` + ServerNameRule,
			`a.yaml: listeners[0].sni[0].names[6]: "*.*.example" is not a server name: ` + ServerNameRule,
			`a.yaml: listeners[0].sni[0].names[7]: "a.*.example" is not a server name: ` + ServerNameRule,
			`a.yaml: listeners[0].sni[0].names[8]: "a*.example" is not a server name: ` + ServerNameRule,
			`a.yaml: listeners[0].sni[0].names[9]: "a_b.example" is not a server name: ` + ServerNameRule,
			`a.yaml: listeners[0].sni[0].names[10]: "example." is not a server name: ` + ServerNameRule,
			`a.yaml: listeners[0].sni[0].names[11]: "192.0.2.1" is an IP address: TLS clients never send one as SNI`,
			`a.yaml: listeners[0].sni[0].names[12]: "` + strings.Repeat("a", 64) + `.example" is not a server name: ` + ServerNameRule,
			`a.yaml: listeners[0].sni[0].names[13]: "` + strings.Repeat("abcdefghi.", 25) + `example" is too long: at most 253 characters`,
			`a.yaml: listeners[0].sni[1].names: required: at least one server name, such as "example.com" or "*.example.com"`,
			`a.yaml: listeners[0].sni[2].names: required: at least one server name, such as "example.com" or "*.example.com"`,
		}},
		{name: "same server name twice", yaml: `
listeners:
  - name: a
    address: ":1"
    sni:
      - { names: [a.example, "*.a.example", A.example], cluster: web }
      - { names: [b.example, "*.A.EXAMPLE"], cluster: web }
    routes:
      - { match: { sni: [c.example, C.Example] }, cluster: web }
`, want: []string{
			`a.yaml: listeners[0].routes[0].match.sni[1]: duplicate server name "C.Example": same as sni[0]`,
			`a.yaml: listeners[0].sni[0].names[2]: duplicate server name "A.example": already routed by sni[0].names[0]`,
			`a.yaml: listeners[0].sni[1].names[1]: duplicate server name "*.A.EXAMPLE": already routed by sni[0].names[1]`,
		}},
		{name: "identical matches", yaml: `
listeners:
  - name: a
    address: ":1"
    sni:
      - { names: [a.example, b.example], cluster: web }
    routes:
      - { name: r0, match: { sni: [b.example, c.example] }, cluster: web }
      - { name: r1, match: { transport: tls }, cluster: web }
      - { name: r2, match: { alpn: [h2] }, cluster: web }
      - { name: r3, match: { transport: tls, alpn: [http/1.1, h2] }, cluster: web }
      - { name: r4, match: { source_cidrs: ["10.0.0.0/8"], server_port: 1 }, cluster: web }
      - { name: r5, match: { source_cidrs: ["10.0.0.0/8", "10.0.0.0/16"], server_port: 1 }, cluster: web }
      - { name: r6, match: { source_cidrs: ["10.0.0.0/16"], server_port: 2 }, cluster: web }
      - { name: r7, match: { server_addresses: ["192.0.2.1"] }, cluster: web }
      - { name: r8, match: { server_addresses: ["192.0.2.1/32"] }, cluster: web }
      - { name: r9, match: { transport: raw }, cluster: web }
      - { name: r10, match: {}, cluster: web }
      - { name: r11, cluster: web }
`, want: []string{
			`a.yaml: listeners[0].routes[0].match: matches the same connections as sni[0] (both match server name "b.example", transport "tls"): Envoy refuses two filter chains with the same match`,
			`a.yaml: listeners[0].routes[3].match: matches the same connections as routes[2] (both match transport "tls", alpn "h2"): Envoy refuses two filter chains with the same match`,
			`a.yaml: listeners[0].routes[5].match: matches the same connections as routes[4] (both match server port "1", source "10.0.0.0/8"): Envoy refuses two filter chains with the same match`,
			`a.yaml: listeners[0].routes[8].match: matches the same connections as routes[7] (both match server address "192.0.2.1/32"): Envoy refuses two filter chains with the same match`,
			`a.yaml: listeners[0].routes[11].match: matches the same connections as routes[10] (both match every connection): Envoy refuses two filter chains with the same match`,
		}},
		{name: "an empty match and tcp.cluster", yaml: `
listeners:
  - { name: a, address: ":1", routes: [{ cluster: web }], tcp: { cluster: fallback } }
  - { name: b, address: ":2", routes: [{ match: {}, cluster: web }], tcp: { idle_timeout: 1m } }
`, want: []string{
			`a.yaml: listeners[0].routes[0].match: empty: this route takes every connection, like tcp.cluster (the default route); keep one of them`,
		}},
		{name: "cidrs", yaml: `
listeners:
  - name: a
    address: ":1"
    proxy_protocol: { trusted: ["10.0.0.1/8", "10.0.0.0/33", "fe80::1%eth0", "localhost", "", "10.0.0.0/8", "10.0.0.0/8", "::ffff:10.0.0.1"] }
    routes:
      - match: { source_cidrs: ["2001:db8::/32", "2001:db8:0::/32", "2001:db8::1/32", "x"], server_addresses: ["10.1.2.3", "10.1.2.3/32", "300.1.1.1"] }
        cluster: web
  - { name: b, address: ":2", proxy_protocol: {}, tcp: { cluster: web } }
  - { name: c, address: ":3", proxy_protocol: { trusted: [] }, tcp: { cluster: web } }
`, want: []string{
			`a.yaml: listeners[0].proxy_protocol.trusted[0]: "10.0.0.1/8" has bits set after the /8 prefix: write "10.0.0.0/8"`,
			`a.yaml: listeners[0].proxy_protocol.trusted[1]: "10.0.0.0/33" is not a CIDR such as "10.0.0.0/8" or an IP address`,
			`a.yaml: listeners[0].proxy_protocol.trusted[2]: "fe80::1%eth0" is not a CIDR such as "10.0.0.0/8" or an IP address`,
			`a.yaml: listeners[0].proxy_protocol.trusted[3]: "localhost" is not a CIDR such as "10.0.0.0/8" or an IP address`,
			`a.yaml: listeners[0].proxy_protocol.trusted[4]: required: a CIDR such as "10.0.0.0/8" or an IP address`,
			`a.yaml: listeners[0].proxy_protocol.trusted[6]: duplicate "10.0.0.0/8": same as [5]`,
			`a.yaml: listeners[0].routes[0].match.server_addresses[1]: duplicate "10.1.2.3/32": same as [0]`,
			`a.yaml: listeners[0].routes[0].match.server_addresses[2]: "300.1.1.1" is not a CIDR such as "10.0.0.0/8" or an IP address`,
			`a.yaml: listeners[0].routes[0].match.source_cidrs[1]: duplicate "2001:db8:0::/32": same as [0]`,
			`a.yaml: listeners[0].routes[0].match.source_cidrs[2]: "2001:db8::1/32" has bits set after the /32 prefix: write "2001:db8::/32"`,
			`a.yaml: listeners[0].routes[0].match.source_cidrs[3]: "x" is not a CIDR such as "10.0.0.0/8" or an IP address`,
			`a.yaml: listeners[1].proxy_protocol.trusted: required: the CIDRs of the peers allowed to send a PROXY header (connections from other peers are closed)`,
			`a.yaml: listeners[2].proxy_protocol.trusted: required: the CIDRs of the peers allowed to send a PROXY header (connections from other peers are closed)`,
		}},
		{name: "transport, alpn and server port", yaml: `
listeners:
  - name: a
    address: ":1"
    routes:
      - { match: { transport: TLS }, cluster: web }
      - { match: { transport: raw, sni: [a.example] }, cluster: web }
      - { match: { transport: raw, alpn: [h2] }, cluster: web }
      - { match: { transport: udp, server_port: 65536 }, cluster: web }
      - { match: { alpn: ["", h2, h2, "` + strings.Repeat("x", 256) + `"], server_port: 65535 }, cluster: web }
`, want: []string{
			`a.yaml: listeners[0].routes[0].match.transport: "TLS" is not a transport: use "tls" or "raw"`,
			`a.yaml: listeners[0].routes[1].match.transport: "raw" cannot be combined with sni or alpn, which only TLS connections have`,
			`a.yaml: listeners[0].routes[2].match.transport: "raw" cannot be combined with sni or alpn, which only TLS connections have`,
			`a.yaml: listeners[0].routes[3].match.server_port: 65536 is not a port: use 1 to 65535 (or leave it out for any port)`,
			`a.yaml: listeners[0].routes[3].match.transport: "udp" is not a transport: use "tls" or "raw"`,
			`a.yaml: listeners[0].routes[4].match.alpn[0]: required: an ALPN protocol such as "h2" or "http/1.1"`,
			`a.yaml: listeners[0].routes[4].match.alpn[2]: duplicate ALPN protocol "h2"`,
			`a.yaml: listeners[0].routes[4].match.alpn[3]: too long: at most 255 bytes`,
		}},
		{name: "route names", yaml: `
listeners:
  - name: a
    address: ":1"
    sni: [{ names: [a.example], cluster: web }]
    routes:
      - { name: Bad, match: { sni: [b.example] }, cluster: web }
      - { name: route-2, match: { sni: [c.example] }, cluster: web }
      - { match: { sni: [d.example] }, cluster: web }
      - { name: sni-0, match: { sni: [e.example] }, cluster: web }
      - { name: default, match: { sni: [f.example] }, cluster: web }
      - { name: x, match: { sni: [g.example] }, cluster: web }
      - { name: x, match: { sni: [h.example] }, cluster: web }
    tcp: { cluster: fallback }
  - name: b
    address: ":2"
    routes: [{ name: default, cluster: web }]
`, want: []string{
			`a.yaml: listeners[0].routes[0].name: "Bad" is not a valid name: ` + nameRule,
			`a.yaml: listeners[0].routes[2].name: duplicate default route name "route-2": already the name of the filter chain of routes[1]`,
			`a.yaml: listeners[0].routes[3].name: duplicate route name "sni-0": already the name of the filter chain of sni[0]`,
			`a.yaml: listeners[0].routes[4].name: duplicate route name "default": already the name of the filter chain of tcp.cluster`,
			`a.yaml: listeners[0].routes[6].name: duplicate route name "x": already the name of the filter chain of routes[5]`,
		}},
		{name: "preread timeout", yaml: `
listeners:
  - { name: a, address: ":1", preread_timeout: 1s, tcp: { cluster: web } }
  - { name: b, address: ":2", preread_timeout: 0s, sni: [{ names: [a.example], cluster: web }] }
  - { name: c, address: ":3", preread_timeout: -1s, proxy_protocol: { trusted: ["10.0.0.0/8"] }, tcp: { cluster: web } }
`, want: []string{
			`a.yaml: listeners[0].preread_timeout: has no effect: only listeners with sni, routes or proxy_protocol use it`,
			`a.yaml: listeners[1].preread_timeout: must be more than 0s (leave it out for the default)`,
			`a.yaml: listeners[2].preread_timeout: must not be negative, got -1s`,
		}},
		{name: "cluster proxy_protocol", yaml: `
clusters:
  - { name: a, proxy_protocol: v3, endpoints: ["192.0.2.1:1"] }
  - { name: b, proxy_protocol: V1, endpoints: ["192.0.2.1:1"] }
  - { name: c, proxy_protocol: "", endpoints: ["192.0.2.1:1"] }
`, want: []string{
			`a.yaml: clusters[0].proxy_protocol: "v3" is not a PROXY protocol version: use "v1" or "v2" (or leave it out to send none)`,
			`a.yaml: clusters[1].proxy_protocol: "V1" is not a PROXY protocol version: use "v1" or "v2" (or leave it out to send none)`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(parseAll(t, []file{{"a.yaml", tt.yaml}, {"backends.yaml", backends}}))
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected errors:\n%v", err)
				}
				return
			}
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("error %#v is not Errors", err)
			}
			if got := strings.Split(err.Error(), "\n"); !slices.Equal(got, tt.want) {
				t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestServerName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"example.com", "example.com"},
		{"Example.COM", "example.com"},
		{"*.Example.com", "*.example.com"},
		{"localhost", "localhost"},
		{"*.com", "*.com"},
		{"a-b.c0", "a-b.c0"},
	}
	for _, tt := range tests {
		if got, err := ServerName(tt.in); err != nil || got != tt.want {
			t.Errorf("ServerName(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestCIDR(t *testing.T) {
	tests := []struct{ in, want string }{
		{"10.0.0.0/8", "10.0.0.0/8"},
		{"10.1.2.3", "10.1.2.3/32"},
		{"::1", "::1/128"},
		{"2001:db8::/32", "2001:db8::/32"},
		{"0.0.0.0/0", "0.0.0.0/0"},
		{"::/0", "::/0"},
	}
	for _, tt := range tests {
		if got, err := CIDR(tt.in); err != nil || got != netip.MustParsePrefix(tt.want) {
			t.Errorf("CIDR(%q) = %v, %v; want %s", tt.in, got, err, tt.want)
		}
	}
}

func TestRouteTransport(t *testing.T) {
	tests := []struct {
		m    *configv1.StreamMatch
		want string
	}{
		{nil, ""},
		{&configv1.StreamMatch{SourceCidrs: []string{"10.0.0.0/8"}}, ""},
		{&configv1.StreamMatch{Sni: []string{"a.example"}}, "tls"},
		{&configv1.StreamMatch{Alpn: []string{"h2"}}, "tls"},
		{&configv1.StreamMatch{Transport: "tls"}, "tls"},
		{&configv1.StreamMatch{Transport: "raw"}, "raw_buffer"},
	}
	for _, tt := range tests {
		if got := RouteTransport(tt.m); got != tt.want {
			t.Errorf("RouteTransport(%v) = %q, want %q", tt.m, got, tt.want)
		}
	}
}
