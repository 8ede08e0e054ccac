package bundle

import (
	"slices"
	"strings"
	"testing"
)

// upstreams are clusters for the listeners of TestValidatePolicies.
const upstreams = `
  - { name: dns, endpoints: ["192.0.2.53:53"] }
  - { name: pp, proxy_protocol: v2, endpoints: ["192.0.2.10:443"] }
`

func TestValidatePolicies(t *testing.T) {
	tests := []struct {
		name string
		yaml string   // a file; upstreams are appended to its clusters
		want []string // error lines, in order; none for a valid bundle
	}{
		{name: "valid", yaml: `
listeners:
  - { name: dns, address: "[::]:53", udp: { cluster: dns, idle_timeout: 30s }, access_log: { path: "-" } }
  - { name: dns-tcp, address: "[::]:53", tcp: { cluster: dns }, max_connections: 10000 }
  - { name: web, address: ":443", max_connections: 1, sni: [{ names: [a.example], cluster: pp }], access_log: { path: /var/log/web.log, format: json } }
clusters:
  - name: all
    lb: least_request
    max_connections: 5
    health_check: { interval: 1s, timeout: 500ms, healthy_threshold: 1, unhealthy_threshold: 10, tcp: {} }
    outlier_detection: { consecutive_failures: 1, base_ejection_time: 1s, max_ejection_percent: 100, interval: 1s }
    endpoints: ["192.0.2.1:1"]
  - { name: rr, lb: round_robin, health_check: { tcp: { send: "PING\r\n", expect: "+PONG" } }, endpoints: ["192.0.2.1:1"] }
  - { name: rh, lb: ring_hash, health_check: { http: { path: /healthz, host: db.example, expected_statuses: [200, 204, 301] } }, endpoints: ["192.0.2.1:1"] }
  - { name: mg, lb: maglev, health_check: { http: { path: "/" } }, outlier_detection: {}, endpoints: ["192.0.2.1:1"] }
  - { name: rn, lb: random, endpoints: ["192.0.2.1:1"] }
  - { name: tcp-send-only, health_check: { tcp: { send: "\u0000\u0001" } }, endpoints: ["192.0.2.1:1"] }`},
		{name: "lb", yaml: `
clusters:
  - { name: a, lb: leastconn, endpoints: ["192.0.2.1:1"] }
  - { name: b, lb: ROUND_ROBIN, endpoints: ["192.0.2.1:1"] }`, want: []string{
			`a.yaml: clusters[0].lb: "leastconn" is not a load-balancing policy: use "round_robin", "least_request", "ring_hash", "maglev" or "random" (or leave it out for round_robin)`,
			`a.yaml: clusters[1].lb: "ROUND_ROBIN" is not a load-balancing policy: use "round_robin", "least_request", "ring_hash", "maglev" or "random" (or leave it out for round_robin)`,
		}},
		{name: "health check", yaml: `
clusters:
  - { name: none, health_check: {}, endpoints: ["192.0.2.1:1"] }
  - { name: both, health_check: { tcp: {}, http: { path: / } }, endpoints: ["192.0.2.1:1"] }
  - { name: expect, health_check: { tcp: { expect: "+PONG" } }, endpoints: ["192.0.2.1:1"] }
  - { name: times, health_check: { interval: 0s, timeout: -1s, tcp: {} }, endpoints: ["192.0.2.1:1"] }
  - name: http
    health_check: { http: { path: healthz, host: "a b", expected_statuses: [99, 200, 600, 200] } }
    endpoints: ["192.0.2.1:1"]
  - { name: nopath, health_check: { http: {} }, endpoints: ["192.0.2.1:1"] }
  - { name: badpath, health_check: { http: { path: "/a\tb" } }, endpoints: ["192.0.2.1:1"] }`, want: []string{
			`a.yaml: clusters[0].health_check: needs exactly one of tcp (connect, or send bytes and expect a reply) and http (a GET whose status is checked)`,
			`a.yaml: clusters[1].health_check: needs exactly one of tcp (connect, or send bytes and expect a reply) and http (a GET whose status is checked)`,
			`a.yaml: clusters[2].health_check.tcp.expect: needs send: the check reads a reply only after sending something`,
			`a.yaml: clusters[3].health_check.interval: must be more than 0s (leave it out for the default)`,
			`a.yaml: clusters[3].health_check.timeout: must not be negative, got -1s`,
			`a.yaml: clusters[4].health_check.http.expected_statuses[0]: 99 is not an HTTP status: use 100 to 599`,
			`a.yaml: clusters[4].health_check.http.expected_statuses[2]: 600 is not an HTTP status: use 100 to 599`,
			`a.yaml: clusters[4].health_check.http.expected_statuses[3]: duplicate status 200: same as expected_statuses[1]`,
			`a.yaml: clusters[4].health_check.http.host: "a b" must not contain spaces or control characters`,
			`a.yaml: clusters[4].health_check.http.path: "healthz" must start with "/"`,
			`a.yaml: clusters[5].health_check.http.path: required: the path to GET, such as "/healthz"`,
			`a.yaml: clusters[6].health_check.http.path: "/a\tb" must not contain spaces or control characters`,
		}},
		{name: "outlier detection", yaml: `
clusters:
  - { name: a, outlier_detection: { max_ejection_percent: 101, base_ejection_time: 0s, interval: -1s }, endpoints: ["192.0.2.1:1"] }`, want: []string{
			`a.yaml: clusters[0].outlier_detection.base_ejection_time: must be more than 0s (leave it out for the default)`,
			`a.yaml: clusters[0].outlier_detection.interval: must not be negative, got -1s`,
			`a.yaml: clusters[0].outlier_detection.max_ejection_percent: 101 is more than 100 (0 means the default, 10)`,
		}},
		{name: "udp and tcp", yaml: `
listeners:
  - { name: a, address: ":53", udp: { cluster: dns }, tcp: { cluster: dns } }
  - name: b
    address: ":54"
    udp: { cluster: dns }
    sni: [{ names: [a.example], cluster: dns }]
    routes: [{ cluster: dns }]
    proxy_protocol: { trusted: ["10.0.0.0/8"] }
    preread_timeout: 1s
    max_connections: 10
clusters:`, want: []string{
			`a.yaml: listeners[0].udp: cannot be combined with tcp: a listener is either TCP or UDP`,
			`a.yaml: listeners[1].max_connections: only with tcp: a UDP listener's sessions are limited by its cluster's max_connections`,
			`a.yaml: listeners[1].preread_timeout: has no effect: only listeners with sni, routes or proxy_protocol use it`,
			`a.yaml: listeners[1].proxy_protocol: only with tcp: the PROXY protocol is not read from UDP datagrams`,
			`a.yaml: listeners[1].routes: only with tcp: a UDP listener sends every datagram to udp.cluster`,
			`a.yaml: listeners[1].sni: only with tcp: a UDP listener sends every datagram to udp.cluster`,
		}},
		{name: "udp block", yaml: `
listeners:
  - { name: a, address: ":53", udp: {} }
  - { name: b, address: ":54", udp: { cluster: nope } }
  - { name: c, address: ":55", udp: { cluster: pp } }
  - { name: d, address: ":56", udp: { cluster: dns, idle_timeout: 0s } }
clusters:`, want: []string{
			`a.yaml: listeners[0].udp.cluster: required: the name of a cluster to proxy to`,
			`a.yaml: listeners[1].udp.cluster: unknown cluster "nope"`,
			`a.yaml: listeners[2].udp.cluster: cluster "pp" sends the PROXY protocol (proxy_protocol: v2), which a UDP listener cannot: use a cluster without it`,
			`a.yaml: listeners[3].udp.idle_timeout: must be more than 0s (leave it out for the default)`,
		}},
		{name: "udp port clashes only with udp", yaml: `
listeners:
  - { name: udp-all, address: ":53", udp: { cluster: dns } }
  - { name: tcp-all, address: ":53", tcp: { cluster: dns } }
  - { name: udp-one, address: "127.0.0.1:53", udp: { cluster: dns } }
  - { name: tcp-one, address: "127.0.0.1:53", tcp: { cluster: dns } }
clusters:`, want: []string{
			`a.yaml: listeners[2].address: UDP port 53 of "127.0.0.1:53" clashes with listener "udp-all" (a.yaml listeners[0], address ":53"): an agent matching both selectors cannot listen on both`,
			`a.yaml: listeners[3].address: port 53 of "127.0.0.1:53" clashes with listener "tcp-all" (a.yaml listeners[1], address ":53"): an agent matching both selectors cannot listen on both`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			y := tt.yaml
			if !strings.Contains(y, "\nclusters:") {
				y += "\nclusters:"
			}
			err := Validate(parseAll(t, []file{{"a.yaml", y + upstreams}}))
			var got []string
			if err != nil {
				got = strings.Split(err.Error(), "\n")
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestValidateAccessLog(t *testing.T) {
	tests := []struct {
		name string
		log  string // the access_log of a TCP listener, as YAML
		want string // the error line; "" for a valid access_log
	}{
		{"stdout dash", `{ path: "-" }`, ""},
		{"stdout word", `{ path: stdout, format: json }`, ""},
		{"file with format", `{ path: /var/log/a.log, format: '$remote_addr ${status}x [$time_local] "$ssl_preread_server_name"' }`, ""},
		{"no path", `{ format: json }`, `a.yaml: listeners[0].access_log.path: required: a file such as "/var/log/flotilla/access.log", or "-" for the agent's standard output`},
		{"relative path", `{ path: logs/a.log }`, `a.yaml: listeners[0].access_log.path: "logs/a.log" is not an absolute path (write "-" or "stdout" for the agent's standard output)`},
		{"unknown variable", `{ path: "-", format: "$remote_addr $nope" }`, `a.yaml: listeners[0].access_log.format: unknown variable $nope at offset 13`},
		{"dollar alone", `{ path: "-", format: "cost: $ 5" }`, `a.yaml: listeners[0].access_log.format: '$' at offset 6 is not followed by a variable name`},
		{"unclosed brace", `{ path: "-", format: "${status" }`, `a.yaml: listeners[0].access_log.format: missing '}' after ${status at offset 0`},
		{"percent", `{ path: "-", format: "100% $status" }`, `a.yaml: listeners[0].access_log.format: a literal % cannot be sent to Envoy in "100% $status"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			y := "listeners: [{ name: a, address: ':1', tcp: { cluster: dns }, access_log: " + tt.log + " }]\nclusters:" + upstreams
			err := Validate(parseAll(t, []file{{"a.yaml", y}}))
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tt.want {
				t.Errorf("errors:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
	// One file, one format, on any agent two listeners can share (found by FuzzCompile).
	shared := []struct {
		name, second, want string
	}{
		{"same file, other format", `{ name: b, address: ':2', tcp: { cluster: dns }, access_log: { path: stdout, format: "$status" } }`,
			`a.yaml: listeners[1].access_log: /dev/stdout is also the access log of listener "a" (a.yaml listeners[0]) in another format: an agent writes a file in one format; use the same format (an HTTP listener's json has more fields than a TCP one's) or another file`},
		{"HTTP json is another format", `{ name: b, address: ':2', http: { routes: [{ cluster: dns }] }, access_log: { path: "-" } }`,
			`a.yaml: listeners[1].access_log: /dev/stdout is also the access log of listener "a" (a.yaml listeners[0]) in another format: an agent writes a file in one format; use the same format (an HTTP listener's json has more fields than a TCP one's) or another file`},
		{"same format", `{ name: b, address: ':2', udp: { cluster: dns }, access_log: { path: stdout, format: json } }`, ""},
		{"agents apart", `{ name: b, address: ':2', agents: { dc: fra }, tcp: { cluster: dns }, access_log: { path: "-", format: "$status" } }`, ""},
	}
	for _, tt := range shared {
		t.Run(tt.name, func(t *testing.T) {
			y := "listeners: [{ name: a, address: ':1', agents: { dc: ams }, udp: { cluster: dns }, access_log: { path: '-' } }, " + tt.second + "]\nclusters:" + upstreams
			got := ""
			if err := Validate(parseAll(t, []file{{"a.yaml", y}})); err != nil {
				got = err.Error()
			}
			if got != tt.want {
				t.Errorf("errors:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
	// A UDP listener's access log is validated too.
	y := "listeners: [{ name: a, address: ':1', udp: { cluster: dns }, access_log: { path: x } }]\nclusters:" + upstreams
	want := `a.yaml: listeners[0].access_log.path: "x" is not an absolute path (write "-" or "stdout" for the agent's standard output)`
	if err := Validate(parseAll(t, []file{{"a.yaml", y}})); err == nil || err.Error() != want {
		t.Errorf("udp access log: %v, want %s", err, want)
	}
}
