package bundle

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
	configv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/config/v1"
)

// file is one YAML file of a test bundle.
type file struct{ path, yaml string }

func parseAll(t *testing.T, files []file) []*adminv1.ConfigFile {
	t.Helper()
	var out []*adminv1.ConfigFile
	for _, f := range files {
		out = append(out, mustParse(t, f.path, f.yaml))
	}
	return out
}

// pacs is a cluster for listeners to point at.
const pacs = "clusters: [{name: pacs, endpoints: ['192.0.2.3:4242']}]\n"

func TestValidate(t *testing.T) {
	tests := []struct {
		name  string
		files []file
		want  []string // error lines, in order; none for a valid bundle
	}{
		{name: "valid", files: []file{{"a.yaml", `
listeners:
  - { name: dicom, address: "[::]:4242", tcp: { cluster: pacs, idle_timeout: 0s, connect_attempts: 10 } }
  - { name: mysql.internal_1, address: "192.0.2.1:3306", agents: { role: db, topology.example/zone: "a-1" }, tcp: { cluster: pacs } }
clusters:
  - name: pacs
    connect_timeout: 1s
    endpoints: ["192.0.2.3:4242", { address: "[2001:db8::3]:4242", weight: 128 }, { address: "192.0.2.4:4242", weight: 0 }]
  - { name: unused, endpoints: ["192.0.2.9:1"] }
`}}},
		{name: "empty bundle", files: []file{{"a.yaml", ""}}},
		{name: "no files"},
		{name: "unknown cluster", files: []file{{"examples/a.yaml", "listeners: [{name: dicom, address: ':4242', tcp: {cluster: pacs}}]\n"}},
			want: []string{`examples/a.yaml: listeners[0].tcp.cluster: unknown cluster "pacs"`}},
		{name: "cluster in another file", files: []file{
			{"a.yaml", "listeners: [{name: dicom, address: ':4242', tcp: {cluster: pacs}}]\n"},
			{"b.yaml", pacs},
		}},
		{name: "names", files: []file{{"a.yaml", `
listeners:
  - { address: ":1", tcp: { cluster: pacs } }
  - { name: Dicom, address: ":2", tcp: { cluster: pacs } }
  - { name: -x, address: ":3", tcp: { cluster: pacs } }
  - { name: ` + strings.Repeat("a", 64) + `, address: ":4", tcp: { cluster: pacs } }
clusters:
  - { name: "pacs", endpoints: ["192.0.2.3:4242"] }
  - { name: "a b", endpoints: ["192.0.2.3:4242"] }
`}}, want: []string{
			`a.yaml: clusters[1].name: "a b" is not a valid name: use 1 to 63 characters: lowercase letters, digits, '.', '_' or '-', starting with a letter or digit`,
			`a.yaml: listeners[0].name: required`,
			`a.yaml: listeners[1].name: "Dicom" is not a valid name: use 1 to 63 characters: lowercase letters, digits, '.', '_' or '-', starting with a letter or digit`,
			`a.yaml: listeners[2].name: "-x" is not a valid name: use 1 to 63 characters: lowercase letters, digits, '.', '_' or '-', starting with a letter or digit`,
			`a.yaml: listeners[3].name: "` + strings.Repeat("a", 64) + `" is not a valid name: use 1 to 63 characters: lowercase letters, digits, '.', '_' or '-', starting with a letter or digit`,
		}},
		{name: "duplicates across files", files: []file{
			{"a.yaml", "listeners: [{name: dicom, address: ':4242', tcp: {cluster: pacs}}]\n" + pacs},
			{"b.yaml", "listeners: [{name: other, address: ':1', tcp: {cluster: pacs}}, {name: dicom, address: ':4243', tcp: {cluster: pacs}}]\n" + pacs},
		}, want: []string{
			`b.yaml: clusters[0].name: duplicate cluster name "pacs": already defined in a.yaml clusters[0]`,
			`b.yaml: listeners[1].name: duplicate listener name "dicom": already defined in a.yaml listeners[0]`,
		}},
		{name: "a listener and a cluster may share a name", files: []file{{"a.yaml", "listeners: [{name: pacs, address: ':4242', tcp: {cluster: pacs}}]\n" + pacs}}},
		{name: "addresses", files: []file{{"a.yaml", `
listeners:
  - { name: a, tcp: { cluster: pacs } }
  - { name: b, address: "4242", tcp: { cluster: pacs } }
  - { name: c, address: "localhost:80", tcp: { cluster: pacs } }
  - { name: d, address: "192.0.2.1:0", tcp: { cluster: pacs } }
  - { name: e, address: "192.0.2.1:65536", tcp: { cluster: pacs } }
  - { name: f, address: "192.0.2.1:http", tcp: { cluster: pacs } }
  - { name: g, address: "[fe80::1%eth0]:80", tcp: { cluster: pacs } }
  - { name: h, address: "::1:80", tcp: { cluster: pacs } }
  - { name: i, address: "[::1]:65535", tcp: { cluster: pacs } }
` + pacs}}, want: []string{
			`a.yaml: listeners[0].address: required: host:port, such as ":4242" (every address), "0.0.0.0:4242" or "127.0.0.1:4242"`,
			`a.yaml: listeners[1].address: "4242" is not host:port (write IPv6 in brackets: "[2001:db8::1]:4242")`,
			`a.yaml: listeners[2].address: "localhost:80": host "localhost" is not an IP address (names are not resolved)`,
			`a.yaml: listeners[3].address: "192.0.2.1:0": port "0" is not a number from 1 to 65535`,
			`a.yaml: listeners[4].address: "192.0.2.1:65536": port "65536" is not a number from 1 to 65535`,
			`a.yaml: listeners[5].address: "192.0.2.1:http": port "http" is not a number from 1 to 65535`,
			`a.yaml: listeners[6].address: "[fe80::1%eth0]:80": IPv6 zones are not supported`,
			`a.yaml: listeners[7].address: "::1:80" is not host:port (write IPv6 in brackets: "[2001:db8::1]:4242")`,
		}},
		{name: "protocol block", files: []file{{"a.yaml", "listeners: [{name: a, address: ':1'}, {name: b, address: ':2', tcp: {}}]\n"}},
			want: []string{
				`a.yaml: listeners[0].tcp: required: a listener needs tcp (a cluster to proxy to), udp, sni or routes`,
				`a.yaml: listeners[1].tcp.cluster: required: the name of a cluster to proxy to`,
			}},
		{name: "tcp limits", files: []file{{"a.yaml", `
listeners:
  - { name: a, address: ":1", tcp: { cluster: pacs, connect_attempts: 11 } }
  - { name: b, address: ":2", tcp: { cluster: pacs, idle_timeout: -1s } }
` + pacs}}, want: []string{
			`a.yaml: listeners[0].tcp.connect_attempts: 11 is too many: at most 10 (0 means the default, 3)`,
			`a.yaml: listeners[1].tcp.idle_timeout: must not be negative, got -1s`,
		}},
		{name: "endpoints", files: []file{{"a.yaml", `
clusters:
  - { name: a }
  - { name: b, endpoints: [] }
  - name: c
    connect_timeout: 0s
    endpoints:
      - "192.0.2.1:80"
      - "pacs.example:80"
      - ":80"
      - "0.0.0.0:80"
      - "[::]:80"
      - { address: "192.0.2.2:80", weight: 129 }
      - { weight: 2 }
      - "[2001:db8::1]:80"
      - "[2001:db8:0::1]:80"
      - "192.0.2.1:80"
      - "192.0.2.1:81"
  - { name: d, connect_timeout: -2s, endpoints: ["192.0.2.1:80"] }
`}}, want: []string{
			`a.yaml: clusters[0].endpoints: a cluster needs at least one endpoint`,
			`a.yaml: clusters[1].endpoints: a cluster needs at least one endpoint`,
			`a.yaml: clusters[2].connect_timeout: must be more than 0s (leave it out for the default)`,
			`a.yaml: clusters[2].endpoints[1].address: "pacs.example:80": host "pacs.example" is not an IP address (names are not resolved)`,
			`a.yaml: clusters[2].endpoints[2].address: ":80" has no IP address: an endpoint is ip:port`,
			`a.yaml: clusters[2].endpoints[3].address: "0.0.0.0:80" is not a specific IP address`,
			`a.yaml: clusters[2].endpoints[4].address: "[::]:80" is not a specific IP address`,
			`a.yaml: clusters[2].endpoints[5].weight: 129 is out of range: use 1 to 128 (0 means 1)`,
			`a.yaml: clusters[2].endpoints[6].address: required: ip:port, such as "192.0.2.10:4242" or "[2001:db8::10]:4242"`,
			`a.yaml: clusters[2].endpoints[8].address: duplicate endpoint "[2001:db8:0::1]:80": same as endpoints[7]`,
			`a.yaml: clusters[2].endpoints[9].address: duplicate endpoint "192.0.2.1:80": same as endpoints[0]`,
			`a.yaml: clusters[3].connect_timeout: must not be negative, got -2s`,
		}},
		{name: "selectors", files: []file{{"a.yaml", `
listeners:
  - { name: a, address: ":1", agents: { "bad key": x, ok: "", dc: "-ams", zone: "a/b" }, tcp: { cluster: pacs } }
` + pacs}}, want: []string{
			`a.yaml: listeners[0].agents: "bad key" is not a valid label key: use 1 to 63 characters: letters, digits, '.', '_' or '-' (and '/' in keys), starting and ending with a letter or digit`,
			`a.yaml: listeners[0].agents.dc: "-ams" is not a valid label value: use 1 to 63 characters: letters, digits, '.', '_' or '-' (and '/' in keys), starting and ending with a letter or digit`,
			`a.yaml: listeners[0].agents.ok: "" is not a valid label value: use 1 to 63 characters: letters, digits, '.', '_' or '-' (and '/' in keys), starting and ending with a letter or digit`,
			`a.yaml: listeners[0].agents.zone: "a/b" is not a valid label value: use 1 to 63 characters: letters, digits, '.', '_' or '-' (and '/' in keys), starting and ending with a letter or digit`,
		}},
		{name: "port clashes", files: []file{
			{"a.yaml", `
listeners:
  - { name: all, address: ":80", tcp: { cluster: pacs } }
  - { name: lo, address: "127.0.0.1:80", tcp: { cluster: pacs } }
  - { name: lo2, address: "127.0.0.2:8080", tcp: { cluster: pacs } }
  - { name: lo3, address: "127.0.0.3:8080", tcp: { cluster: pacs } }
  - { name: v4any, address: "0.0.0.0:9090", tcp: { cluster: pacs } }
  - { name: v6one, address: "[2001:db8::1]:9090", tcp: { cluster: pacs } }
  - { name: ams, address: ":389", agents: { dc: ams }, tcp: { cluster: pacs } }
  - { name: fra, address: ":389", agents: { dc: fra }, tcp: { cluster: pacs } }
  - { name: edge, address: ":389", agents: { role: edge }, tcp: { cluster: pacs } }
  - { name: mapped, address: "[::ffff:127.0.0.3]:8080", tcp: { cluster: pacs } }
` + pacs},
			{"b.yaml", `
listeners:
  - { name: other, address: "[::]:4242", agents: { dc: ams, role: edge }, tcp: { cluster: pacs } }
  - { name: fine, address: ":81", tcp: { cluster: pacs } }
`},
			{"c.yaml", `
listeners:
  - { name: dicom, address: "0.0.0.0:4242", agents: { role: edge }, tcp: { cluster: pacs } }
`},
		}, want: []string{
			`a.yaml: listeners[1].address: port 80 of "127.0.0.1:80" clashes with listener "all" (a.yaml listeners[0], address ":80"): an agent matching both selectors cannot listen on both`,
			`a.yaml: listeners[5].address: port 9090 of "[2001:db8::1]:9090" clashes with listener "v4any" (a.yaml listeners[4], address "0.0.0.0:9090"): an agent matching both selectors cannot listen on both`,
			`a.yaml: listeners[8].address: port 389 of ":389" clashes with listener "ams" (a.yaml listeners[6], address ":389"): an agent matching both selectors cannot listen on both`,
			`a.yaml: listeners[8].address: port 389 of ":389" clashes with listener "fra" (a.yaml listeners[7], address ":389"): an agent matching both selectors cannot listen on both`,
			`a.yaml: listeners[9].address: port 8080 of "[::ffff:127.0.0.3]:8080" clashes with listener "lo3" (a.yaml listeners[3], address "127.0.0.3:8080"): an agent matching both selectors cannot listen on both`,
			`c.yaml: listeners[0].address: port 4242 of "0.0.0.0:4242" clashes with listener "other" (b.yaml listeners[0], address "[::]:4242"): an agent matching both selectors cannot listen on both`,
		}},
		{name: "sorted by file then field, numbers as numbers", files: []file{
			{"b.yaml", "listeners: [{name: b, address: ':1', tcp: {cluster: x}}]\n"},
			{"a.yaml", "listeners:\n" + listenersWithBadAddress(12) + pacs},
		}, want: append(badAddressErrors("a.yaml", 12), `b.yaml: listeners[0].tcp.cluster: unknown cluster "x"`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(parseAll(t, tt.files))
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
			got := strings.Split(err.Error(), "\n")
			if !slices.Equal(got, tt.want) {
				t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			if len(es) != len(tt.want) {
				t.Errorf("%d errors, want %d", len(es), len(tt.want))
			}
		})
	}
}

func listenersWithBadAddress(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "  - {name: l%d, address: 'x', tcp: {cluster: pacs}}\n", i)
	}
	return b.String()
}

func badAddressErrors(file string, n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf(`%s: listeners[%d].address: "x" is not host:port (write IPv6 in brackets: "[2001:db8::1]:4242")`, file, i))
	}
	return out
}

func TestValidateProgrammatic(t *testing.T) {
	// Files built in code (as the admin API receives them) may have nil
	// bundles, nil list entries and no path.
	files := []*adminv1.ConfigFile{
		nil,
		{Path: "nil-bundle.yaml"},
		{Bundle: &configv1.Bundle{Listeners: []*configv1.Listener{nil}}},
	}
	err := Validate(files)
	want := []string{
		`listeners[0].address: required: host:port, such as ":4242" (every address), "0.0.0.0:4242" or "127.0.0.1:4242"`,
		`listeners[0].name: required`,
		`listeners[0].tcp: required: a listener needs tcp (a cluster to proxy to), udp, sni or routes`,
	}
	if err == nil || !slices.Equal(strings.Split(err.Error(), "\n"), want) {
		t.Errorf("errors:\n%v\nwant:\n%s", err, strings.Join(want, "\n"))
	}
}

func TestNaturalCompare(t *testing.T) {
	in := []string{"listeners[10].name", "clusters[2]", "listeners[2].tcp", "listeners[2].address", "listeners[1]", "listeners[02].b", "a"}
	slices.SortFunc(in, naturalCompare)
	want := []string{"a", "clusters[2]", "listeners[1]", "listeners[2].address", "listeners[02].b", "listeners[2].tcp", "listeners[10].name"}
	if !slices.Equal(in, want) {
		t.Errorf("sorted = %q, want %q", in, want)
	}
}

// FuzzParse checks that Parse and Validate never panic, and that whatever
// Parse accepts survives a protojson round trip unchanged.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"", "listeners: []", pacs,
		"listeners: [{name: a, address: ':1', agents: {dc: x}, tcp: {cluster: pacs, idle_timeout: 1h}}]\n" + pacs,
		`{"clusters": [{"name": "a", "endpoints": ["192.0.2.1:1", {"address": "[::1]:2", "weight": 3}]}]}`,
		"listeners: {a: [1, {b: c}]}", "- 1", "a: &x [*x]",
		`
listeners:
  - name: edge
    address: ":443"
    proxy_protocol: { trusted: ["10.0.0.0/8", "::1"] }
    preread_timeout: 2s
    sni: [{ names: [a.example, "*.a.example"], cluster: web }]
    routes:
      - { name: r, match: { sni: [b.example], alpn: [h2], transport: tls, source_cidrs: ["192.0.2.0/24"], server_addresses: ["10.1.2.3"], server_port: 443 }, cluster: ldap }
      - { match: { transport: raw }, cluster: fallback }
    tcp: { cluster: fallback }
` + backends,
		`
listeners:
  - { name: dns, address: "[::]:53", udp: { cluster: web, idle_timeout: 10s }, access_log: { path: "-", format: '$remote_addr ${status}' } }
  - { name: t, address: ":1", max_connections: 10, tcp: { cluster: web }, access_log: { path: /var/log/t.log } }
` + backends + `
  - name: policies
    lb: ring_hash
    max_connections: 10
    health_check: { interval: 1s, timeout: 1s, healthy_threshold: 1, unhealthy_threshold: 1, tcp: { send: "PING\r\n", expect: "+PONG" } }
    outlier_detection: { consecutive_failures: 1, base_ejection_time: 1s, max_ejection_percent: 50, interval: 1s }
    endpoints: ["192.0.2.1:1"]
  - { name: http, health_check: { http: { path: /healthz, host: h, expected_statuses: [200] } }, endpoints: ["192.0.2.1:1"] }
`,
		`
listeners:
  - name: web
    address: ":8080"
    http:
      max_request_body: 1048576
      virtual_hosts:
        - domains: ["*.a.example", "*"]
          request_headers: { add: { X-A: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%" }, remove: [x-b] }
          routes:
            - { match: { prefix: /a, methods: [GET], headers: [{ name: x, present: true }] }, cluster: web, retries: { on: [5xx], attempts: 2 } }
            - { redirect: { scheme: https, code: 308 } }
grpc_services: [{ name: "g:50051", cluster: web, agents: { app: shop } }]
` + backends,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cf, err := Parse("f.yaml", data)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v is not a FieldError", err)
			}
			return
		}
		if err := Validate([]*adminv1.ConfigFile{cf}); err != nil {
			var es Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("Validate error %#v is not a non-empty Errors", err)
			}
		}
		js, err := protojson.Marshal(cf.GetBundle())
		if err != nil {
			t.Fatal(err)
		}
		again, err := Parse("f.json", js)
		if err != nil {
			t.Fatalf("Parse of %s: %v", js, err)
		}
		if !proto.Equal(again.GetBundle(), cf.GetBundle()) {
			t.Fatalf("round trip changed the bundle:\n%v\n%v", cf.GetBundle(), again.GetBundle())
		}
	})
}
