package bundle

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// httpBackends are clusters for HTTP listeners to point at.
const httpBackends = `
clusters:
  - { name: api, protocol: http1, http_idle_timeout: 90s, retry_budget: { percent: 25, min_concurrency: 5 }, endpoints: ["192.0.2.10:8080"] }
  - { name: grpc, protocol: http2, endpoints: ["192.0.2.20:50051"] }
  - { name: static, endpoints: ["192.0.2.30:80"] }
  - { name: maglev, lb: maglev, endpoints: ["192.0.2.40:80"] }
  - { name: pp, proxy_protocol: v2, endpoints: ["192.0.2.50:80"] }
`

func TestValidateHTTP(t *testing.T) {
	tests := []struct {
		name string
		yaml string   // listeners (and grpc_services); httpBackends are added
		want []string // error lines, in order; none for a valid bundle
	}{
		{name: "valid", yaml: `
listeners:
  - name: web
    address: ":8080"
    max_connections: 100
    proxy_protocol: { trusted: ["10.0.0.0/8"] }
    preread_timeout: 1s
    access_log: { path: "-", format: combined }
    http:
      xff_trusted_hops: 1
      real_ip_header: false
      idle_timeout: 0s
      request_headers_timeout: 5s
      request_timeout: 1m
      stream_idle_timeout: 10m
      max_request_headers_kb: 96
      max_request_body: 10MiB
      h2c: false
      compression: { content_types: [text/html, application/json], min_length: 1024, level: 6 }
      server_name: "flotilla edge"
      virtual_hosts:
        - name: api
          domains: ["api.example.com", "*.api.example.com", "API.example.com:8080", "api.*"]
          https_redirect: true
          request_headers: { add: { X-Foo: bar, X-Client: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%" }, remove: [X-Debug] }
          response_headers: { add: { Strict-Transport-Security: "max-age=31536000" }, remove: [Server] }
          routes:
            - name: v1
              match: { regex: "^/v[0-9]+/.*", methods: [GET, POST], headers: [{ name: x-canary, exact: "1" }, { name: x-foo, present: true }, { name: x-bar, prefix: a }, { name: x-baz, regex: "[a-z]+" }, { name: x-q, suffix: z }, { name: x-c, contains: c }, { name: ":authority", exact: a }] }
              weighted_clusters: [{ cluster: api, weight: 90 }, { cluster: static, weight: 10 }]
              host_rewrite: internal.example
              timeout: 0s
              idle_timeout: 1h
              retries: { on: [connect-failure, 5xx, reset, gateway-error], attempts: 2, per_try_timeout: 2s }
            - match: { prefix: /api, grpc: true }
              cluster: grpc
              prefix_rewrite: /
              auto_host_rewrite: true
              websocket: true
              request_headers: { add: { X-Route: api } }
            - { match: { path: /old }, redirect: { scheme: https, host: x.example, port: 443, path: /new, strip_query: true, code: 308 } }
            - { match: { prefix: /moved }, redirect: { prefix_rewrite: /here } }
            - { match: { path: /healthz }, direct_response: { status: 200, body: "ok\n" } }
        - { domains: ["*"], routes: [{ cluster: static }] }
  - name: shorthand
    address: ":8081"
    http:
      max_request_body: 1048576
      routes: [{ cluster: static }]
grpc_services:
  - { name: greeter, cluster: grpc, agents: { app: shop } }
  - { name: "greeter.shop:50051", cluster: api }
`},
		{name: "listener kinds", yaml: `
listeners:
  - { name: a, address: ":1", tcp: { cluster: api }, http: { routes: [{ cluster: api }] } }
  - { name: b, address: ":2", udp: { cluster: api }, http: { routes: [{ cluster: api }] } }
  - name: c
    address: ":3"
    sni: [{ names: [a.example], cluster: api }]
    routes: [{ cluster: api }]
    preread_timeout: 1s
    http: { routes: [{ cluster: api }], virtual_hosts: [{ domains: ["*"], routes: [{ cluster: api }] }] }
  - { name: d, address: ":4", http: {} }
`, want: []string{
			`a.yaml: listeners[0].http: cannot be combined with tcp: a listener has exactly one of tcp, udp and http`,
			`a.yaml: listeners[1].http: cannot be combined with udp: a listener has exactly one of tcp, udp and http`,
			`a.yaml: listeners[2].http.routes: cannot be combined with virtual_hosts: routes is the shorthand for one virtual host with domains ["*"]`,
			`a.yaml: listeners[2].preread_timeout: has no effect: an HTTP listener uses it only with proxy_protocol`,
			`a.yaml: listeners[2].routes: only with tcp: an HTTP listener routes requests with http.virtual_hosts or http.routes`,
			`a.yaml: listeners[2].sni: only with tcp: an HTTP listener routes requests with http.virtual_hosts or http.routes`,
			`a.yaml: listeners[3].http: needs routes (one site) or virtual_hosts (sites by Host)`,
		}},
		{name: "listener settings", yaml: `
listeners:
  - name: a
    address: ":1"
    access_log: { path: "-", format: "$nope" }
    http:
      xff_trusted_hops: 33
      idle_timeout: -1s
      max_request_headers_kb: 8193
      max_request_body: 10 parsecs
      compression: { content_types: ["text/html; charset=utf-8", text/html, TEXT/HTML], level: 10 }
      server_name: "a\nb"
      routes: [{ cluster: api }]
  - { name: b, address: ":2", http: { max_request_body: "0", routes: [{ cluster: api }] } }
  - { name: c, address: ":3", http: { max_request_body: 5GiB, routes: [{ cluster: api }] } }
`, want: []string{
			`a.yaml: listeners[0].access_log.format: unknown variable $nope at offset 0`,
			`a.yaml: listeners[0].http.compression.content_types[0]: "text/html; charset=utf-8" is not a media type such as "text/html" (no parameters)`,
			`a.yaml: listeners[0].http.compression.content_types[2]: duplicate media type "TEXT/HTML": same as content_types[1]`,
			`a.yaml: listeners[0].http.compression.level: 10 is out of range: use 1 (fastest) to 9 (smallest), or leave it out for 6`,
			`a.yaml: listeners[0].http.idle_timeout: must not be negative, got -1s`,
			`a.yaml: listeners[0].http.max_request_body: "10 parsecs" is not a size such as "10MiB", "512KiB", "1GB" or a number of bytes`,
			`a.yaml: listeners[0].http.max_request_headers_kb: 8193 is out of range: use 1 to 8192 (0 means the default, 60)`,
			`a.yaml: listeners[0].http.server_name: "a\nb" must not contain control characters`,
			`a.yaml: listeners[0].http.xff_trusted_hops: 33 is too many: at most 32`,
			`a.yaml: listeners[1].http.max_request_body: must be more than 0 bytes (leave it out for no limit)`,
			`a.yaml: listeners[2].http.max_request_body: "5GiB" is too large: at most 4GiB - 1 byte`,
		}},
		{name: "virtual hosts", yaml: `
listeners:
  - name: a
    address: ":1"
    http:
      virtual_hosts:
        - { name: one, domains: [a.example, "*.a.example"], routes: [{ cluster: api }] }
        - { name: one, domains: [A.Example, "b.*.example", "*b*", "a b"], routes: [{ cluster: api }] }
        - { name: Bad, domains: [], routes: [] }
`, want: []string{
			`a.yaml: listeners[0].http.virtual_hosts[1].domains[0]: duplicate domain "A.Example": already served by http.virtual_hosts[0].domains[0] (Envoy refuses a domain in two virtual hosts)`,
			`a.yaml: listeners[0].http.virtual_hosts[1].domains[1]: "b.*.example": a wildcard is one "*" at the start ("*.example.com") or the end ("api.*")`,
			`a.yaml: listeners[0].http.virtual_hosts[1].domains[2]: "*b*": a wildcard is one "*" at the start ("*.example.com") or the end ("api.*")`,
			`a.yaml: listeners[0].http.virtual_hosts[1].domains[3]: "a b" is not a host: use letters, digits, '.', '-' and an optional ":port"`,
			`a.yaml: listeners[0].http.virtual_hosts[1].name: duplicate virtual host name "one": already the name of http.virtual_hosts[0]`,
			`a.yaml: listeners[0].http.virtual_hosts[2].domains: required: the hosts this site serves, such as ["example.com", "*.example.com"] or ["*"]`,
			`a.yaml: listeners[0].http.virtual_hosts[2].name: "Bad" is not a valid name: ` + nameRule,
			`a.yaml: listeners[0].http.virtual_hosts[2].routes: required: at least one route`,
		}},
		{name: "matches", yaml: `
listeners:
  - name: a
    address: ":1"
    http:
      routes:
        - { match: { prefix: /a, path: /b }, cluster: api }
        - { match: { prefix: a, path: "/a b" }, cluster: api }
        - { match: { regex: "(" }, cluster: api }
        - { match: { path: "/x?y", methods: [get, "G T", POST, POST] }, cluster: api }
        - { match: { headers: [{ exact: a }, { name: "x y", present: true }, { name: ":status", exact: "1" }, { name: x, exact: a, prefix: b }, { name: yy }, { name: z, regex: "[" }] }, cluster: api }
        - { match: { methods: [GET], headers: [{ name: ":method", exact: GET }] }, cluster: api }
`, want: []string{
			`a.yaml: listeners[0].http.routes[0].match: needs at most one of prefix, path and regex`,
			`a.yaml: listeners[0].http.routes[1].match: needs at most one of prefix, path and regex`,
			`a.yaml: listeners[0].http.routes[1].match.path: "/a b" must not contain spaces or control characters`,
			`a.yaml: listeners[0].http.routes[1].match.prefix: "a" must start with "/"`,
			`a.yaml: listeners[0].http.routes[2].match.regex: "(" is not a valid RE2 regular expression: missing closing ): ` + "`(`",
			`a.yaml: listeners[0].http.routes[3].match.methods[0]: "get": methods are case-sensitive, write "GET"`,
			`a.yaml: listeners[0].http.routes[3].match.methods[1]: "G T" is not a method such as GET or POST`,
			`a.yaml: listeners[0].http.routes[3].match.methods[3]: duplicate method "POST": same as methods[2]`,
			`a.yaml: listeners[0].http.routes[3].match.path: "/x?y" contains '?': paths are matched without the query`,
			`a.yaml: listeners[0].http.routes[4].match.headers[0].name: required: a header name such as "x-canary"`,
			`a.yaml: listeners[0].http.routes[4].match.headers[1].name: "x y" is not a header name (letters, digits and !#$%&'*+-.^_` + "`" + `|~)`,
			`a.yaml: listeners[0].http.routes[4].match.headers[2].name: ":status" is not a pseudo-header a route can match: use ":authority", ":method", ":path" or ":scheme"`,
			`a.yaml: listeners[0].http.routes[4].match.headers[3]: needs exactly one of exact, prefix, suffix, contains, regex and present`,
			`a.yaml: listeners[0].http.routes[4].match.headers[4]: needs exactly one of exact, prefix, suffix, contains, regex and present`,
			`a.yaml: listeners[0].http.routes[4].match.headers[5].regex: "[" is not a valid RE2 regular expression: missing closing ]: ` + "`[`",
			`a.yaml: listeners[0].http.routes[5].match.headers[0].name: ":method" cannot be combined with methods`,
		}},
		{name: "actions", yaml: `
listeners:
  - name: a
    address: ":1"
    http:
      routes:
        - { name: x, match: { prefix: /a } }
        - { name: x, cluster: api, direct_response: { status: 200 } }
        - { cluster: nope }
        - weighted_clusters: [{ cluster: api, weight: 0 }, { cluster: api, weight: 1 }, { weight: 1 }]
        - { match: { regex: "/.*" }, cluster: api, prefix_rewrite: /, host_rewrite: h, auto_host_rewrite: true }
        - { direct_response: { status: 200 }, websocket: true, prefix_rewrite: /, timeout: 1s, retries: {} }
        - { direct_response: { status: 600 } }
        - { cluster: api, retries: { on: [timeout, 5xx, 5xx], attempts: 11, per_try_timeout: 0s } }
        - { redirect: { scheme: ftp, host: "a/b", port: 70000, path: p, prefix_rewrite: /q, code: 200 } }
        - { cluster: pp }
        - { weighted_clusters: [{ cluster: api, weight: 1 }, { cluster: pp, weight: 1 }] }
        - { cluster: api, prefix_rewrite: v2/, host_rewrite: "internal/v1" }
        - { cluster: api, host_rewrite: "*" }
        - { cluster: api, prefix_rewrite: "/x%zz/" }
`, want: []string{
			`a.yaml: listeners[0].http.routes[0]: needs exactly one of cluster, weighted_clusters, redirect and direct_response`,
			`a.yaml: listeners[0].http.routes[1]: needs exactly one of cluster, weighted_clusters, redirect and direct_response`,
			`a.yaml: listeners[0].http.routes[1].name: duplicate route name "x": already the name of http.routes[0]`,
			`a.yaml: listeners[0].http.routes[2].cluster: unknown cluster "nope"`,
			`a.yaml: listeners[0].http.routes[3].weighted_clusters[0].weight: required: a weight of at least 1`,
			`a.yaml: listeners[0].http.routes[3].weighted_clusters[1].cluster: duplicate cluster "api": same as weighted_clusters[0]`,
			`a.yaml: listeners[0].http.routes[3].weighted_clusters[2].cluster: required: the name of a cluster to proxy to`,
			`a.yaml: listeners[0].http.routes[4].host_rewrite: cannot be combined with auto_host_rewrite`,
			`a.yaml: listeners[0].http.routes[4].prefix_rewrite: cannot be combined with match.regex: there is no prefix to replace`,
			`a.yaml: listeners[0].http.routes[5].prefix_rewrite: only with cluster or weighted_clusters: it rewrites the path sent upstream`,
			`a.yaml: listeners[0].http.routes[5].retries: only with cluster or weighted_clusters: only proxied requests are retried`,
			`a.yaml: listeners[0].http.routes[5].timeout: only with cluster or weighted_clusters: it bounds the wait for the upstream`,
			`a.yaml: listeners[0].http.routes[5].websocket: only with cluster or weighted_clusters: a WebSocket is proxied to a cluster`,
			`a.yaml: listeners[0].http.routes[6].direct_response.status: 600 is out of range: use 200 to 599 (redirects are written with redirect)`,
			`a.yaml: listeners[0].http.routes[7].retries.attempts: 11 is too many: at most 10 (0 means the default, 1)`,
			`a.yaml: listeners[0].http.routes[7].retries.on[0]: "timeout" is not a retry condition: use "connect-failure", "reset", "5xx" or "gateway-error"`,
			`a.yaml: listeners[0].http.routes[7].retries.on[2]: duplicate "5xx": same as on[1]`,
			`a.yaml: listeners[0].http.routes[7].retries.per_try_timeout: must be more than 0s (leave it out for the default)`,
			`a.yaml: listeners[0].http.routes[8].redirect.code: 200 is not a redirect status: use 301 (the default), 302, 303, 307 or 308`,
			`a.yaml: listeners[0].http.routes[8].redirect.host: "a/b" is not a host name (no spaces, control characters, non-ASCII or any of / ? # @ *)`,
			`a.yaml: listeners[0].http.routes[8].redirect.path: "p" must start with "/"`,
			`a.yaml: listeners[0].http.routes[8].redirect.port: 70000 is not a port: use 1 to 65535`,
			`a.yaml: listeners[0].http.routes[8].redirect.prefix_rewrite: cannot be combined with path: path replaces the whole path`,
			`a.yaml: listeners[0].http.routes[8].redirect.scheme: "ftp" is not a scheme: use "http" or "https" (or leave it out to keep the request's)`,
			`a.yaml: listeners[0].http.routes[9].cluster: cluster "pp" sends the PROXY protocol (proxy_protocol: v2), which HTTP routes do not: they pass the client's address in X-Forwarded-For and X-Real-IP; use a cluster without it`,
			`a.yaml: listeners[0].http.routes[10].weighted_clusters[1].cluster: cluster "pp" sends the PROXY protocol (proxy_protocol: v2), which HTTP routes do not: they pass the client's address in X-Forwarded-For and X-Real-IP; use a cluster without it`,
			`a.yaml: listeners[0].http.routes[11].host_rewrite: "internal/v1" is not a host name (no spaces, control characters, non-ASCII or any of / ? # @ *)`,
			`a.yaml: listeners[0].http.routes[11].prefix_rewrite: "v2/" must start with "/"`,
			`a.yaml: listeners[0].http.routes[12].host_rewrite: "*" is not a host name (no spaces, control characters, non-ASCII or any of / ? # @ *)`,
			`a.yaml: listeners[0].http.routes[13].prefix_rewrite: "/x%zz/" is not a valid escaped path: invalid URL escape "%zz"`,
		}},
		{name: "header ops", yaml: `
listeners:
  - name: a
    address: ":1"
    http:
      virtual_hosts:
        - domains: ["*"]
          request_headers: { add: { Host: x, "a b": x, X-A: "50%", x-b: "1", X-B: "2", X-C: "a\u0001", X-E: "" }, remove: [":path", x-a, X-D, x-d] }
          response_headers: { add: { Host: nope, X-F: "%%" }, remove: [host, X-F] }
          routes: [{ cluster: api }]
`, want: []string{
			`a.yaml: listeners[0].http.virtual_hosts[0].request_headers.add.Host: Host cannot be changed here: use the route's host_rewrite or auto_host_rewrite`,
			`a.yaml: listeners[0].http.virtual_hosts[0].request_headers.add.X-A: "50%": '%' not followed by a command operator in "%" (a '%' must start an operator such as %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%; a literal '%' cannot be sent)`,
			`a.yaml: listeners[0].http.virtual_hosts[0].request_headers.add.X-C: "a\x01" must not contain control characters`,
			`a.yaml: listeners[0].http.virtual_hosts[0].request_headers.add.X-E: empty: to delete a header, list it in remove`,
			`a.yaml: listeners[0].http.virtual_hosts[0].request_headers.add.a b: "a b" is not a header name (letters, digits and !#$%&'*+-.^_` + "`" + `|~)`,
			`a.yaml: listeners[0].http.virtual_hosts[0].request_headers.add.x-b: duplicate header "x-b": same as "X-B" (names are case-insensitive)`,
			`a.yaml: listeners[0].http.virtual_hosts[0].request_headers.remove[0]: ":path" is not a header name (letters, digits and !#$%&'*+-.^_` + "`" + `|~)`,
			`a.yaml: listeners[0].http.virtual_hosts[0].request_headers.remove[1]: "x-a" is also in add: add replaces its value already`,
			`a.yaml: listeners[0].http.virtual_hosts[0].request_headers.remove[3]: duplicate header "x-d": same as remove[2]`,
			`a.yaml: listeners[0].http.virtual_hosts[0].response_headers.add.Host: Host cannot be changed here: use the route's host_rewrite or auto_host_rewrite`,
			`a.yaml: listeners[0].http.virtual_hosts[0].response_headers.add.X-F: "%%": '%' not followed by a command operator in "%%" (a '%' must start an operator such as %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%; a literal '%' cannot be sent)`,
			`a.yaml: listeners[0].http.virtual_hosts[0].response_headers.remove[0]: Host cannot be changed here: use the route's host_rewrite or auto_host_rewrite`,
			`a.yaml: listeners[0].http.virtual_hosts[0].response_headers.remove[1]: "X-F" is also in add: add replaces its value already`,
		}},
		{name: "clusters and grpc services", yaml: `
clusters:
  - { name: h3, protocol: http3, http_idle_timeout: -1s, retry_budget: { percent: 101 }, panic_threshold: 101, endpoints: ["192.0.2.50:80"] }
grpc_services:
  - { name: greeter, cluster: maglev }
  - { name: greeter, cluster: nope }
  - { name: "xds:///greeter", cluster: api, agents: { "bad key!": x } }
  - { cluster: api }
`, want: []string{
			`a.yaml: clusters[0].http_idle_timeout: must not be negative, got -1s`,
			`a.yaml: clusters[0].panic_threshold: 101 is more than 100 (a percentage of healthy endpoints; 0 turns panic mode off)`,
			`a.yaml: clusters[0].protocol: "http3" is not an upstream protocol: use "http1" (the default) or "http2"`,
			`a.yaml: clusters[0].retry_budget.percent: 101 is more than 100 (0 means the default, 20)`,
			`a.yaml: grpc_services[0].cluster: cluster "maglev" uses lb "maglev", which gRPC clients do not implement: use "round_robin", "least_request" or "ring_hash"`,
			`a.yaml: grpc_services[1].cluster: unknown cluster "nope"`,
			`a.yaml: grpc_services[1].name: duplicate gRPC service name "greeter": already defined in a.yaml grpc_services[0]`,
			`a.yaml: grpc_services[2].agents: "bad key!" is not a valid label key: ` + labelRule,
			`a.yaml: grpc_services[2].name: "xds:///greeter" is not a valid gRPC service name: a host name of letters, digits, '.', '_' or '-', optionally with ":port"`,
			`a.yaml: grpc_services[3].name: required: the name clients dial as "xds:///<name>"`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(parseAll(t, []file{{"a.yaml", tt.yaml}, {"backends.yaml", httpBackends}}))
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

func TestByteSize(t *testing.T) {
	tests := []struct {
		in   string
		want uint64
		err  bool
	}{
		{"1", 1, false},
		{"1048576", 1 << 20, false},
		{"10MiB", 10 << 20, false},
		{"512KiB", 512 << 10, false},
		{"512kib", 512 << 10, false},
		{"1GB", 1e9, false},
		{"1.5MB", 1.5e6, false},
		{"2M", 2 << 20, false},
		{"100b", 100, false},
		{"4GiB", 0, true},
		{"1.5", 0, true},
		{"", 0, true},
		{"MiB", 0, true},
		{"-1", 0, true},
		{"1e3", 0, true},
		{"NaN", 0, true},
	}
	for _, tt := range tests {
		got, err := ByteSize(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("ByteSize(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestMergeGRPCServices(t *testing.T) {
	files := parseAll(t, []file{
		{"b.yaml", "grpc_services: [{ name: zeta, cluster: c }]"},
		{"a.yaml", "grpc_services: [{ name: alpha, cluster: c }]"},
	})
	b := Merge(files)
	var got []string
	for _, g := range b.GetGrpcServices() {
		got = append(got, g.GetName())
	}
	if !slices.Equal(got, []string{"alpha", "zeta"}) {
		t.Errorf("merged grpc_services = %q", got)
	}
}
