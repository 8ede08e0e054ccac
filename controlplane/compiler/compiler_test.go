package compiler

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	udpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/udp/udp_proxy/v3"
	upstreamproxyprotocolv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/proxy_protocol/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/flotilla-proxy/flotilla/agent/accesslog"
	"github.com/flotilla-proxy/flotilla/agent/runtime"
	"github.com/flotilla-proxy/flotilla/controlplane/bundle"
	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
	configv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/config/v1"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// goldenCase is one bundle compiled for each of a few label sets; its
// expected output is testdata/<name>.golden.json.
type goldenCase struct {
	name   string
	inputs []string // files and directories, loaded with bundle.Load
	labels []map[string]string
}

// grpcCases are the golden cases compiled for proxyless gRPC clients
// (CompileGRPC) instead of agents.
var grpcCases = map[string]bool{"grpc": true}

// compile compiles b for labels the way tc asks.
func (tc goldenCase) compile(b *configv1.Bundle, labels map[string]string) (*Resources, error) {
	if grpcCases[tc.name] {
		return CompileGRPC(b, labels)
	}
	return Compile(b, labels)
}

var goldenCases = []goldenCase{
	{"quickstart", []string{"../../examples/quickstart.yaml"}, []map[string]string{{}}},
	{"nginx-stream", []string{"../../examples/nginx-stream"}, []map[string]string{{"dc": "ams", "role": "internal"}, {"dc": "fra"}}},
	{"selectors", []string{"testdata/selectors.yaml"}, []map[string]string{{"dc": "ams", "role": "edge"}, {}}},
	{"ipv6", []string{"testdata/ipv6.yaml"}, []map[string]string{{}}},
	{"defaults", []string{"testdata/defaults.yaml"}, []map[string]string{{"any": "label"}}},
	{"weights", []string{"testdata/weights.yaml"}, []map[string]string{{}}},
	{"sni-routing", []string{"../../examples/sni-routing"}, []map[string]string{{}}},
	{"sni", []string{"testdata/sni.yaml"}, []map[string]string{{}}},
	{"routes", []string{"testdata/routes.yaml"}, []map[string]string{{}}},
	{"proxy-protocol", []string{"testdata/proxy-protocol.yaml"}, []map[string]string{{"dc": "ams"}}},
	{"lb", []string{"testdata/lb.yaml"}, []map[string]string{{}}},
	{"health", []string{"testdata/health.yaml"}, []map[string]string{{}}},
	{"outlier", []string{"testdata/outlier.yaml"}, []map[string]string{{}}},
	{"udp", []string{"testdata/udp.yaml"}, []map[string]string{{}}},
	{"limits", []string{"testdata/limits.yaml"}, []map[string]string{{}}},
	{"accesslog", []string{"testdata/accesslog.yaml"}, []map[string]string{{}}},
	{"tls-termination", []string{"testdata/tls-termination.yaml"}, []map[string]string{{}, {"role": "edge"}}},
	{"tls-origination", []string{"testdata/tls-origination.yaml"}, []map[string]string{{}}},
	{"tls-example", []string{"../../examples/tls"}, []map[string]string{{}}},
	{"http", []string{"testdata/http.yaml"}, []map[string]string{{}, {"role": "edge"}}},
	{"http-example", []string{"../../examples/http.yaml"}, []map[string]string{{}}},
	{"grpc", []string{"testdata/grpc.yaml"}, []map[string]string{{}, {"app": "shop"}}},
	{"grpc-agents", []string{"testdata/grpc.yaml"}, []map[string]string{{"app": "shop"}}},
}

// load reads, validates and merges a case's bundle.
func load(t testing.TB, inputs ...string) *configv1.Bundle {
	t.Helper()
	files, err := bundle.Load(inputs...)
	if err != nil {
		t.Fatal(err)
	}
	if err := bundle.Validate(files); err != nil {
		t.Fatalf("invalid bundle:\n%v", err)
	}
	return bundle.Merge(files)
}

// goldenJSON renders compiled resources per label set as indented JSON.
// protojson's whitespace is deliberately unstable, so each resource is
// compacted and the whole re-indented by encoding/json.
func goldenJSON(t *testing.T, labels []map[string]string, res []*Resources) []byte {
	t.Helper()
	type entry struct {
		Labels    map[string]string `json:"labels"`
		Listeners []json.RawMessage `json:"listeners"`
		Clusters  []json.RawMessage `json:"clusters"`
		Endpoints []json.RawMessage `json:"endpoints"`
		Secrets   []json.RawMessage `json:"secrets,omitempty"`
		Routes    []json.RawMessage `json:"routes,omitempty"`
	}
	raw := func(m proto.Message) json.RawMessage {
		b, err := protojson.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, b); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	var out []entry
	for i, r := range res {
		e := entry{Labels: labels[i], Listeners: []json.RawMessage{}, Clusters: []json.RawMessage{}, Endpoints: []json.RawMessage{}}
		for _, l := range r.Listeners {
			e.Listeners = append(e.Listeners, raw(l))
		}
		for _, c := range r.Clusters {
			e.Clusters = append(e.Clusters, raw(c))
		}
		for _, c := range r.Endpoints {
			e.Endpoints = append(e.Endpoints, raw(c))
		}
		for _, s := range r.Secrets {
			e.Secrets = append(e.Secrets, raw(s))
		}
		for _, rc := range r.Routes {
			e.Routes = append(e.Routes, raw(rc))
		}
		out = append(out, e)
	}
	compact, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, compact, "", "  "); err != nil {
		t.Fatal(err)
	}
	buf.WriteByte('\n')
	return buf.Bytes()
}

func TestGolden(t *testing.T) {
	if *update {
		writeTestCerts(t)
	}
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			b := load(t, tc.inputs...)
			var res []*Resources
			for _, labels := range tc.labels {
				r, err := tc.compile(b, labels)
				if err != nil {
					t.Fatalf("Compile(%v): %v", labels, err)
				}
				res = append(res, r)
			}
			got := goldenJSON(t, tc.labels, res)
			path := filepath.Join("testdata", tc.name+".golden.json")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs (run go test -update and review the diff):\n%s", path, lineDiff(string(want), string(got)))
			}
		})
	}
}

// TestGoldenCoversTestdata keeps testdata honest: every input file is used
// by a case, and every golden file belongs to one. testdata/fuzz is the fuzz
// corpus (FuzzCompile), which go test reads by itself.
func TestGoldenCoversTestdata(t *testing.T) {
	used := map[string]bool{filepath.Join("testdata", "fuzz"): true, certsDir: true}
	for _, tc := range goldenCases {
		used[filepath.Join("testdata", tc.name+".golden.json")] = true
		for _, in := range tc.inputs {
			used[in] = true
		}
	}
	paths, err := filepath.Glob("testdata/*")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		if !used[p] {
			t.Errorf("%s is not used by any golden case", p)
		}
	}
}

// lineDiff shows the first differing lines of two texts.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			return fmt.Sprintf("line %d:\n- %s\n+ %s", i+1, wl, gl)
		}
	}
	return ""
}

// TestEnvoyValid checks the compiled resources against Envoy's own
// constraints (protoc-gen-validate rules) and go-control-plane's snapshot
// consistency check (every EDS cluster has its load assignment).
func TestEnvoyValid(t *testing.T) {
	for _, tc := range goldenCases {
		for _, labels := range tc.labels {
			t.Run(fmt.Sprintf("%s/%v", tc.name, labels), func(t *testing.T) {
				r, err := tc.compile(load(t, tc.inputs...), labels)
				if err != nil {
					t.Fatal(err)
				}
				checkEnvoy(t, r)
			})
		}
	}
}

func checkEnvoy(t testing.TB, r *Resources) {
	t.Helper()
	if err := envoyValid(r); err != nil {
		t.Error(err)
	}
}

// envoyValid runs Envoy's ValidateAll on every resource and on every typed
// config inside it (listener filters, network filters, transport sockets,
// which ValidateAll does not open), checks that every typed config is one
// the agent knows, and that the snapshot is consistent.
func envoyValid(r *Resources) error {
	res := map[resourcev3.Type][]types.Resource{}
	var errs []error
	add := func(typ resourcev3.Type, name string, m types.Resource) {
		if err := validateDeep(m); err != nil {
			errs = append(errs, fmt.Errorf("%s %q is not valid for Envoy: %w", typ, name, err))
		}
		res[typ] = append(res[typ], m)
	}
	for _, l := range r.Listeners {
		add(resourcev3.ListenerType, l.GetName(), l)
	}
	for _, c := range r.Clusters {
		add(resourcev3.ClusterType, c.GetName(), c)
	}
	for _, e := range r.Endpoints {
		add(resourcev3.EndpointType, e.GetClusterName(), e)
	}
	for _, s := range r.Secrets {
		add(resourcev3.SecretType, s.GetName(), s)
	}
	for _, rc := range r.Routes {
		add(resourcev3.RouteType, rc.GetName(), rc)
	}
	snap, err := cachev3.NewSnapshot("1", res)
	if err != nil {
		return err
	}
	if err := snap.Consistent(); err != nil && !apiListeners(r) {
		errs = append(errs, fmt.Errorf("snapshot not consistent: %w", err))
	}
	return errors.Join(errs...)
}

// apiListeners reports whether r holds api_listeners (gRPC clients'), whose
// route configurations go-control-plane's consistency check does not see:
// TestCompileGRPC checks those references itself.
func apiListeners(r *Resources) bool {
	return slices.ContainsFunc(r.Listeners, func(l *listenerv3.Listener) bool { return l.GetApiListener() != nil })
}

// validateDeep runs ValidateAll on m and on the message in every Any below
// it, recursively.
func validateDeep(m proto.Message) error {
	type validator interface{ ValidateAll() error }
	v, ok := m.(validator)
	if !ok {
		return fmt.Errorf("%s has no ValidateAll", m.ProtoReflect().Descriptor().FullName())
	}
	if err := v.ValidateAll(); err != nil {
		return err
	}
	var errs []error
	var walk func(protoreflect.Message)
	walk = func(pm protoreflect.Message) {
		if a, ok := pm.Interface().(*anypb.Any); ok {
			inner, err := a.UnmarshalNew()
			if err != nil {
				errs = append(errs, fmt.Errorf("typed config %s: %w", a.GetTypeUrl(), err))
			} else if err := validateDeep(inner); err != nil {
				errs = append(errs, fmt.Errorf("typed config %s: %w", a.GetTypeUrl(), err))
			}
			return
		}
		pm.Range(func(fd protoreflect.FieldDescriptor, val protoreflect.Value) bool {
			switch {
			case fd.Message() == nil || fd.IsMap():
			case fd.IsList():
				for i := range val.List().Len() {
					walk(val.List().Get(i).Message())
				}
			default:
				walk(val.Message())
			}
			return true
		})
	}
	walk(m.ProtoReflect())
	return errors.Join(errs...)
}

func names[T interface{ GetName() string }](xs []T) []string {
	out := []string{}
	for _, x := range xs {
		out = append(out, x.GetName())
	}
	return out
}

func TestCompileSelection(t *testing.T) {
	b := load(t, "testdata/selectors.yaml")
	tests := []struct {
		labels    map[string]string
		listeners []string
		clusters  []string
	}{
		{nil, []string{"everywhere"}, []string{"shared"}},
		{map[string]string{"dc": "ams"}, []string{"everywhere"}, []string{"shared"}},
		{map[string]string{"role": "edge"}, []string{"edge", "everywhere"}, []string{"shared"}},
		{map[string]string{"role": "edge", "dc": "ams"}, []string{"edge", "edge-ams", "everywhere"}, []string{"ams-only", "shared"}},
		{map[string]string{"role": "edge", "dc": "fra", "canary": "true"}, []string{"edge", "edge-canary", "everywhere", "fra"}, []string{"canary", "fra-only", "shared"}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.labels), func(t *testing.T) {
			r, err := Compile(b, tt.labels)
			if err != nil {
				t.Fatal(err)
			}
			var cla []string
			for _, e := range r.Endpoints {
				cla = append(cla, e.GetClusterName())
			}
			if got := names(r.Listeners); !slices.Equal(got, tt.listeners) {
				t.Errorf("listeners = %q, want %q", got, tt.listeners)
			}
			if got := names(r.Clusters); !slices.Equal(got, tt.clusters) {
				t.Errorf("clusters = %q, want %q", got, tt.clusters)
			}
			if !slices.Equal(cla, tt.clusters) {
				t.Errorf("load assignments = %q, want %q", cla, tt.clusters)
			}
		})
	}
}

func TestSelects(t *testing.T) {
	tests := []struct {
		selector, labels map[string]string
		want             bool
	}{
		{nil, nil, true},
		{nil, map[string]string{"dc": "ams"}, true},
		{map[string]string{"dc": "ams"}, nil, false},
		{map[string]string{"dc": "ams"}, map[string]string{"dc": "ams", "role": "edge"}, true},
		{map[string]string{"dc": "ams"}, map[string]string{"dc": "fra"}, false},
		{map[string]string{"dc": "ams", "role": "edge"}, map[string]string{"dc": "ams"}, false},
		{map[string]string{"dc": ""}, map[string]string{}, false}, // a key must be present
		{map[string]string{"dc": ""}, map[string]string{"dc": ""}, true},
	}
	for _, tt := range tests {
		if got := Selects(tt.selector, tt.labels); got != tt.want {
			t.Errorf("Selects(%v, %v) = %v, want %v", tt.selector, tt.labels, got, tt.want)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	good := func() *configv1.Bundle {
		return &configv1.Bundle{
			Listeners: []*configv1.Listener{{Name: "l", Address: ":1", Tcp: &configv1.TcpProxy{Cluster: "c"}}},
			Clusters:  []*configv1.Cluster{{Name: "c", Endpoints: []*configv1.Endpoint{{Address: "192.0.2.1:1"}}}},
		}
	}
	tests := []struct {
		name   string
		change func(b *configv1.Bundle)
		want   string
	}{
		{"unknown cluster", func(b *configv1.Bundle) { b.Listeners[0].Tcp.Cluster = "pacs" }, `listener "l": tcp.cluster: unknown cluster "pacs"`},
		{"no tcp", func(b *configv1.Bundle) { b.Listeners[0].Tcp = nil }, `listener "l": no tcp.cluster, udp.cluster, sni or routes: nowhere to send connections`},
		{"no tcp cluster", func(b *configv1.Bundle) { b.Listeners[0].Tcp.Cluster = "" }, `listener "l": no tcp.cluster, udp.cluster, sni or routes: nowhere to send connections`},
		{"bad listen address", func(b *configv1.Bundle) { b.Listeners[0].Address = "localhost:1" }, `listener "l": "localhost:1": host "localhost" is not an IP address (names are not resolved)`},
		{"bad endpoint", func(b *configv1.Bundle) { b.Clusters[0].Endpoints[0].Address = "192.0.2.1" }, `cluster "c": endpoints[0]: "192.0.2.1" is not host:port (write IPv6 in brackets: "[2001:db8::1]:4242")`},
		{"duplicate cluster", func(b *configv1.Bundle) { b.Clusters = append(b.Clusters, b.Clusters[0]) }, `cluster "c": defined twice`},
		{"unknown sni cluster", func(b *configv1.Bundle) {
			b.Listeners[0].Sni = []*configv1.SniRoute{{Names: []string{"a.example"}, Cluster: "nope"}}
		}, `listener "l": sni[0].cluster: unknown cluster "nope"`},
		{"unknown route cluster", func(b *configv1.Bundle) {
			b.Listeners[0].Routes = []*configv1.StreamRoute{{Cluster: "c"}, {Cluster: "nope"}}
		}, `listener "l": routes[1].cluster: unknown cluster "nope"`},
		{"bad server name", func(b *configv1.Bundle) {
			b.Listeners[0].Sni = []*configv1.SniRoute{{Names: []string{"a.example", "*"}, Cluster: "c"}}
		}, `listener "l": sni[0]: "*" is not a server name: ` + bundle.ServerNameRule},
		{"bad route server name", func(b *configv1.Bundle) {
			b.Listeners[0].Routes = []*configv1.StreamRoute{{Match: &configv1.StreamMatch{Sni: []string{"a b"}}, Cluster: "c"}}
		}, `listener "l": routes[0]: "a b" is not a server name: ` + bundle.ServerNameRule},
		{"bad source cidr", func(b *configv1.Bundle) {
			b.Listeners[0].Routes = []*configv1.StreamRoute{{Match: &configv1.StreamMatch{SourceCidrs: []string{"10.0.0.1/8"}}, Cluster: "c"}}
		}, `listener "l": routes[0]: source_cidrs: "10.0.0.1/8" has bits set after the /8 prefix: write "10.0.0.0/8"`},
		{"bad server address", func(b *configv1.Bundle) {
			b.Listeners[0].Routes = []*configv1.StreamRoute{{Match: &configv1.StreamMatch{ServerAddresses: []string{"x"}}, Cluster: "c"}}
		}, `listener "l": routes[0]: server_addresses: "x" is not a CIDR such as "10.0.0.0/8" or an IP address`},
		{"server port", func(b *configv1.Bundle) {
			b.Listeners[0].Routes = []*configv1.StreamRoute{{Match: &configv1.StreamMatch{ServerPort: 70000}, Cluster: "c"}}
		}, `listener "l": routes[0]: server_port 70000 is not a port`},
		{"empty trusted", func(b *configv1.Bundle) { b.Listeners[0].ProxyProtocol = &configv1.ProxyProtocolAccept{} },
			`listener "l": proxy_protocol.trusted: empty`},
		{"bad trusted", func(b *configv1.Bundle) {
			b.Listeners[0].ProxyProtocol = &configv1.ProxyProtocolAccept{Trusted: []string{"10.0.0.0/8", ""}}
		}, `listener "l": proxy_protocol.trusted: required: a CIDR such as "10.0.0.0/8" or an IP address`},
		{"bad proxy protocol version", func(b *configv1.Bundle) { b.Clusters[0].ProxyProtocol = "v3" }, `cluster "c": proxy_protocol "v3" is not v1 or v2`},
		{"udp and tcp", func(b *configv1.Bundle) { b.Listeners[0].Udp = &configv1.UdpProxy{Cluster: "c"} },
			`listener "l": udp with tcp, sni or routes: a listener is either TCP or UDP`},
		{"udp and sni", func(b *configv1.Bundle) {
			b.Listeners[0].Tcp = nil
			b.Listeners[0].Udp = &configv1.UdpProxy{Cluster: "c"}
			b.Listeners[0].Sni = []*configv1.SniRoute{{Names: []string{"a.example"}, Cluster: "c"}}
		}, `listener "l": udp with tcp, sni or routes: a listener is either TCP or UDP`},
		{"udp without cluster", func(b *configv1.Bundle) { b.Listeners[0].Tcp, b.Listeners[0].Udp = nil, &configv1.UdpProxy{} },
			`listener "l": no tcp.cluster, udp.cluster, sni or routes: nowhere to send connections`},
		{"unknown udp cluster", func(b *configv1.Bundle) {
			b.Listeners[0].Tcp, b.Listeners[0].Udp = nil, &configv1.UdpProxy{Cluster: "dns"}
		},
			`listener "l": udp.cluster: unknown cluster "dns"`},
		{"udp to proxy protocol", func(b *configv1.Bundle) {
			b.Listeners[0].Tcp, b.Listeners[0].Udp = nil, &configv1.UdpProxy{Cluster: "c"}
			b.Clusters[0].ProxyProtocol = "v2"
		}, `listener "l": udp.cluster: cluster "c" sends the PROXY protocol, which UDP cannot carry`},
		{"udp proxy_protocol", func(b *configv1.Bundle) {
			b.Listeners[0].Tcp, b.Listeners[0].Udp = nil, &configv1.UdpProxy{Cluster: "c"}
			b.Listeners[0].ProxyProtocol = &configv1.ProxyProtocolAccept{Trusted: []string{"10.0.0.0/8"}}
		}, `listener "l": sni, routes and proxy_protocol are only for tcp listeners`},
		{"udp max_connections", func(b *configv1.Bundle) {
			b.Listeners[0].Tcp, b.Listeners[0].Udp = nil, &configv1.UdpProxy{Cluster: "c"}
			b.Listeners[0].MaxConnections = 1
		}, `listener "l": max_connections is only for tcp listeners`},
		{"bad lb", func(b *configv1.Bundle) { b.Clusters[0].Lb = "leastconn" }, `cluster "c": lb "leastconn" is not a load-balancing policy`},
		{"empty health check", func(b *configv1.Bundle) { b.Clusters[0].HealthCheck = &configv1.HealthCheck{} },
			`cluster "c": health_check: needs exactly one of tcp and http`},
		{"expect without send", func(b *configv1.Bundle) {
			b.Clusters[0].HealthCheck = &configv1.HealthCheck{Tcp: &configv1.TcpHealthCheck{Expect: "x"}}
		}, `cluster "c": health_check: tcp.expect needs tcp.send`},
		{"http without path", func(b *configv1.Bundle) {
			b.Clusters[0].HealthCheck = &configv1.HealthCheck{Http: &configv1.HttpHealthCheck{}}
		}, `cluster "c": health_check: http.path: required`},
		{"bad status", func(b *configv1.Bundle) {
			b.Clusters[0].HealthCheck = &configv1.HealthCheck{Http: &configv1.HttpHealthCheck{Path: "/", ExpectedStatuses: []uint32{600}}}
		}, `cluster "c": health_check: http.expected_statuses: 600 is not an HTTP status`},
		{"http and tcp", func(b *configv1.Bundle) {
			b.Listeners[0].Http = &configv1.HttpListener{Routes: []*configv1.HttpRoute{{Cluster: "c"}}}
		}, `listener "l": http with tcp, udp, sni or routes: a listener has exactly one of tcp, udp and http`},
		{"unknown http cluster", func(b *configv1.Bundle) {
			b.Listeners[0].Tcp = nil
			b.Listeners[0].Http = &configv1.HttpListener{VirtualHosts: []*configv1.VirtualHost{{Domains: []string{"*"}, Routes: []*configv1.HttpRoute{
				{Cluster: "c"}, {WeightedClusters: []*configv1.WeightedCluster{{Cluster: "nope", Weight: 1}}},
			}}}}
		}, `listener "l": http.virtual_hosts[0].routes[1].weighted_clusters[0].cluster: unknown cluster "nope"`},
		{"unknown shorthand route cluster", func(b *configv1.Bundle) {
			b.Listeners[0].Tcp = nil
			b.Listeners[0].Http = &configv1.HttpListener{Routes: []*configv1.HttpRoute{{Cluster: "c"}, {Cluster: "nope"}}}
		}, `listener "l": http.routes[1].cluster: unknown cluster "nope"`},
		{"two actions", func(b *configv1.Bundle) {
			b.Listeners[0].Tcp = nil
			b.Listeners[0].Http = &configv1.HttpListener{Routes: []*configv1.HttpRoute{{Cluster: "c", DirectResponse: &configv1.DirectResponse{Status: 200}}}}
		}, `listener "l": http: routes[0]: needs exactly one of cluster, weighted_clusters, redirect and direct_response`},
		{"duplicate domain", func(b *configv1.Bundle) {
			b.Listeners[0].Tcp = nil
			b.Listeners[0].Http = &configv1.HttpListener{VirtualHosts: []*configv1.VirtualHost{
				{Domains: []string{"a.example"}, Routes: []*configv1.HttpRoute{{Cluster: "c"}}},
				{Domains: []string{"A.example"}, Routes: []*configv1.HttpRoute{{Cluster: "c"}}},
			}}
		}, `listener "l": http.virtual_hosts[1]: domains: "A.example" is served by two virtual hosts`},
		{"bad regex", func(b *configv1.Bundle) {
			b.Listeners[0].Tcp = nil
			b.Listeners[0].Http = &configv1.HttpListener{Routes: []*configv1.HttpRoute{{Match: &configv1.RouteMatch{Regex: "("}, Cluster: "c"}}}
		}, "listener \"l\": http: routes[0]: match: regex: error parsing regexp: missing closing ): `(`"},
		{"bad body size", func(b *configv1.Bundle) {
			b.Listeners[0].Tcp = nil
			b.Listeners[0].Http = &configv1.HttpListener{MaxRequestBody: "lots", Routes: []*configv1.HttpRoute{{Cluster: "c"}}}
		}, `listener "l": http.max_request_body: "lots" is not a size such as "10MiB", "512KiB", "1GB" or a number of bytes`},
		{"bad protocol", func(b *configv1.Bundle) { b.Clusters[0].Protocol = "h3" }, `cluster "c": protocol "h3" is not http1 or http2`},
		{"ejection percent", func(b *configv1.Bundle) {
			b.Clusters[0].OutlierDetection = &configv1.OutlierDetection{MaxEjectionPercent: 101}
		}, `cluster "c": outlier_detection.max_ejection_percent 101 is more than 100`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := good()
			if _, err := Compile(b, nil); err != nil {
				t.Fatalf("good bundle: %v", err)
			}
			tt.change(b)
			_, err := Compile(b, nil)
			if err == nil || err.Error() != tt.want {
				t.Errorf("err = %v, want %s", err, tt.want)
			}
		})
	}
	// A listener that is not selected is not compiled, so its errors do not
	// stop other groups.
	b := good()
	b.Listeners[0].Agents = map[string]string{"dc": "ams"}
	b.Listeners[0].Address = "bad"
	if r, err := Compile(b, map[string]string{"dc": "fra"}); err != nil || len(r.Listeners)+len(r.Clusters) != 0 {
		t.Errorf("unselected bad listener: %v, %v", r, err)
	}
}

// TestEnvoyValidCanFail shows that the checker behind TestEnvoyValid looks
// inside typed configs.
func TestEnvoyValidCanFail(t *testing.T) {
	tests := []struct {
		name   string
		change func(t *testing.T, r *Resources)
		want   string
	}{
		{"tcp_proxy without stat_prefix", func(t *testing.T, r *Resources) {
			a, err := anypb.New(&tcpproxyv3.TcpProxy{ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: "playnice"}})
			if err != nil {
				t.Fatal(err)
			}
			r.Listeners[0].FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
		}, "StatPrefix"},
		{"unknown typed config", func(t *testing.T, r *Resources) {
			r.Listeners[0].ListenerFilters[0].GetTypedConfig().TypeUrl = "type.googleapis.com/example.Unknown"
		}, "example.Unknown"},
		{"inner transport socket without a name", func(t *testing.T, r *Resources) {
			pp := &upstreamproxyprotocolv3.ProxyProtocolUpstreamTransport{}
			ts := r.Clusters[slices.IndexFunc(r.Clusters, func(c *clusterv3.Cluster) bool { return c.GetName() == "playnice" })].GetTransportSocket()
			if err := ts.GetTypedConfig().UnmarshalTo(pp); err != nil {
				t.Fatal(err)
			}
			pp.TransportSocket.Name = ""
			a, err := anypb.New(pp)
			if err != nil {
				t.Fatal(err)
			}
			ts.ConfigType = &corev3.TransportSocket_TypedConfig{TypedConfig: a}
		}, "TransportSocket.Name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Compile(load(t, "testdata/proxy-protocol.yaml"), nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := envoyValid(r); err != nil {
				t.Fatalf("valid before the change: %v", err)
			}
			tt.change(t, r)
			if err := envoyValid(r); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want one mentioning %s", err, tt.want)
			}
		})
	}
}

// TestCompileDoesNotAlias checks that changing the bundle after Compile does
// not change the resources (they may be cached and served for a long time).
func TestCompileDoesNotAlias(t *testing.T) {
	b := load(t, "testdata/defaults.yaml")
	r, err := Compile(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	before := proto.Clone(r.Clusters[0]).(*clusterv3.Cluster)
	lb := proto.Clone(r.Listeners[0]).(*listenerv3.Listener)
	for _, c := range b.GetClusters() {
		if c.GetConnectTimeout() != nil {
			c.ConnectTimeout.Seconds = 99
		}
	}
	for _, l := range b.GetListeners() {
		if l.GetTcp().GetIdleTimeout() != nil {
			l.Tcp.IdleTimeout.Seconds = 99
		}
		l.Name = "renamed"
	}
	if !proto.Equal(before, r.Clusters[0]) || !proto.Equal(lb, r.Listeners[0]) {
		t.Error("resources changed with the bundle")
	}
}

func TestCompileDefaults(t *testing.T) {
	r, err := Compile(load(t, "testdata/defaults.yaml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	proxies := map[string]*tcpproxyv3.TcpProxy{}
	for _, l := range r.Listeners {
		p := &tcpproxyv3.TcpProxy{}
		if err := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(p); err != nil {
			t.Fatal(err)
		}
		proxies[l.GetName()] = p
	}
	tests := []struct {
		listener string
		idle     time.Duration
		attempts uint32
	}{
		{"implicit", DefaultIdleTimeout, DefaultConnectAttempts},
		{"explicit", 90 * time.Second, 10},
		{"no-idle-timeout", 0, 1},
		{"go-durations", 90 * time.Minute, DefaultConnectAttempts},
	}
	for _, tt := range tests {
		p := proxies[tt.listener]
		if p.GetIdleTimeout() == nil || p.GetIdleTimeout().AsDuration() != tt.idle || p.GetMaxConnectAttempts().GetValue() != tt.attempts {
			t.Errorf("%s: idle %v attempts %v, want %v %v", tt.listener, p.GetIdleTimeout(), p.GetMaxConnectAttempts(), tt.idle, tt.attempts)
		}
		if p.GetStatPrefix() != tt.listener || p.GetCluster() == "" {
			t.Errorf("%s: stat_prefix %q cluster %q", tt.listener, p.GetStatPrefix(), p.GetCluster())
		}
	}
	timeouts := map[string]*durationpb.Duration{}
	for _, c := range r.Clusters {
		timeouts[c.GetName()] = c.GetConnectTimeout()
	}
	if timeouts["implicit"].AsDuration() != DefaultConnectTimeout || timeouts["explicit"].AsDuration() != 250*time.Millisecond {
		t.Errorf("connect timeouts = %v", timeouts)
	}
}

// bigBundle has n listeners, each with its own cluster of three endpoints.
func bigBundle(n int) *configv1.Bundle {
	b := &configv1.Bundle{}
	for i := range n {
		name := fmt.Sprintf("svc-%04d", i)
		b.Listeners = append(b.Listeners, &configv1.Listener{
			Name:    name,
			Address: fmt.Sprintf(":%d", 10000+i),
			Tcp:     &configv1.TcpProxy{Cluster: name},
		})
		c := &configv1.Cluster{Name: name}
		for j := range 3 {
			c.Endpoints = append(c.Endpoints, &configv1.Endpoint{Address: fmt.Sprintf("10.%d.%d.%d:%d", i/256, i%256, j+1, 8000+j)})
		}
		b.Clusters = append(b.Clusters, c)
	}
	return b
}

func TestCompileBig(t *testing.T) {
	r, err := Compile(bigBundle(1000), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Listeners) != 1000 || len(r.Clusters) != 1000 || len(r.Endpoints) != 1000 {
		t.Fatalf("got %d/%d/%d resources", len(r.Listeners), len(r.Clusters), len(r.Endpoints))
	}
	if !slices.IsSorted(names(r.Listeners)) || !slices.IsSorted(names(r.Clusters)) {
		t.Error("resources not sorted by name")
	}
	checkEnvoy(t, r)
}

func BenchmarkCompile1000Listeners(b *testing.B) {
	bb := bigBundle(1000)
	b.ReportAllocs()
	for b.Loop() {
		r, err := Compile(bb, nil)
		if err != nil {
			b.Fatal(err)
		}
		if len(r.Listeners) != 1000 {
			b.Fatal(len(r.Listeners))
		}
	}
}

// FuzzCompile feeds arbitrary files through the whole pipeline: whatever
// bundle.Parse and bundle.Validate accept must compile, for every label set,
// into resources Envoy accepts. Validation and compilation must agree.
func FuzzCompile(f *testing.F) {
	seeds, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		f.Fatal(err)
	}
	examples, err := filepath.Glob("../../examples/*/*.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, p := range append(append(seeds, "../../examples/quickstart.yaml"), examples...) {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	// Corners of the cluster policies, UDP and access logs that the golden
	// files do not hold: each valid or just off.
	for _, s := range []string{
		"listeners: [{name: u, address: ':53', udp: {cluster: c, idle_timeout: 1ms}, access_log: {path: '-', format: '${status}$status'}}]\nclusters: [{name: c, lb: maglev, max_connections: 1, endpoints: ['192.0.2.1:53']}]",
		"listeners: [{name: u, address: ':53', udp: {cluster: c}, tcp: {cluster: c}}]\nclusters: [{name: c, endpoints: ['192.0.2.1:53']}]",
		"listeners: [{name: u, address: ':53', udp: {cluster: c}}]\nclusters: [{name: c, proxy_protocol: v1, endpoints: ['192.0.2.1:53']}]",
		"listeners: [{name: t, address: ':1', max_connections: 4294967295, routes: [{cluster: c}], access_log: {path: /x, format: '%'}}]\nclusters: [{name: c, endpoints: ['192.0.2.1:1']}]",
		"listeners: [{name: t, address: ':1', tcp: {cluster: c}}]\nclusters: [{name: c, health_check: {interval: 1ns, timeout: 1ns, healthy_threshold: 4294967295, http: {path: /, host: h, expected_statuses: [100, 599]}}, outlier_detection: {max_ejection_percent: 100, consecutive_failures: 4294967295}, endpoints: ['192.0.2.1:1']}]",
		"listeners: [{name: t, address: ':1', tcp: {cluster: c}}]\nclusters: [{name: c, health_check: {tcp: {send: \"\\0\", expect: \"\\xff\"}}, endpoints: ['192.0.2.1:1']}]",
		// HTTP and gRPC corners.
		"listeners: [{name: h, address: ':80', max_connections: 1, proxy_protocol: {trusted: ['::1']}, http: {h2c: false, max_request_body: '1', compression: {level: 9}, routes: [{match: {regex: '.*', methods: [GET, PUT], headers: [{name: ':path', present: false}]}, weighted_clusters: [{cluster: c, weight: 4294967295}]}]}}]\nclusters: [{name: c, protocol: http2, http_idle_timeout: 0s, retry_budget: {percent: 100}, endpoints: ['192.0.2.1:1']}]",
		"listeners: [{name: h, address: ':80', http: {virtual_hosts: [{domains: ['*', 'a:1', '*.b', 'c*'], https_redirect: true, request_headers: {add: {x: '%%'}}, routes: [{redirect: {port: 65535, prefix_rewrite: /}}, {direct_response: {status: 599, body: x}}]}]}}]",
		"listeners: [{name: h, address: ':80', http: {routes: [{cluster: c, timeout: 0s, retries: {on: [5xx], attempts: 10, per_try_timeout: 1ns}, websocket: true, auto_host_rewrite: true}]}}]\nclusters: [{name: c, lb: maglev, endpoints: ['192.0.2.1:1']}]\ngrpc_services: [{name: 'g:1', cluster: c}]",
		"grpc_services: [{name: g, cluster: c, agents: {dc: ams}}, {name: h, cluster: c}]\nclusters: [{name: c, lb: ring_hash, endpoints: ['192.0.2.1:1', '[2001:db8::1]:2']}]",
	} {
		f.Add([]byte(s))
	}
	for _, s := range tlsFuzzSeeds(f) {
		f.Add(s)
	}
	labelSets := []map[string]string{nil, {"dc": "ams", "role": "edge"}, {"dc": "fra", "role": "internal", "canary": "true"}}
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := bundle.Parse("f.yaml", data)
		if err != nil {
			return
		}
		if bundle.Validate([]*adminv1.ConfigFile{file}) != nil {
			return
		}
		b := bundle.Merge([]*adminv1.ConfigFile{file})
		for _, labels := range labelSets {
			r, err := Compile(b, labels)
			if err != nil {
				t.Fatalf("valid bundle does not compile for %v: %v\n%s", labels, err, data)
			}
			if err := envoyValid(r); err != nil {
				t.Fatalf("compiled for %v, not valid for Envoy: %v\n%s", labels, err, data)
			}
			if err := agentAccepts(r); err != nil {
				t.Fatalf("compiled for %v: %v\n%s", labels, err, data)
			}
			g, err := CompileGRPC(b, labels)
			if err != nil {
				t.Fatalf("valid bundle does not compile for gRPC clients with %v: %v\n%s", labels, err, data)
			}
			if err := envoyValid(g); err != nil {
				t.Fatalf("compiled for gRPC clients with %v, not valid for Envoy: %v\n%s", labels, err, data)
			}
		}
	})
}

// TestCompileRandomRouting builds many routing listeners from small pools of
// good and bad values: whatever bundle.Validate accepts must compile into
// resources Envoy accepts, with one filter chain per sni entry and route.
func TestCompileRandomRouting(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func(pool []string) []string {
		var out []string
		for range rng.IntN(3) {
			out = append(out, pool[rng.IntN(len(pool))])
		}
		return out
	}
	names := []string{"a.example", "*.a.example", "B.example", "d.example", "*.example", "e.example", "*", "192.0.2.1"}
	cidrs := []string{"10.0.0.0/8", "10.0.0.1", "2001:db8::/32", "::1", "192.0.2.0/24", "0.0.0.0/0", "10.0.0.1/8", "x"}
	alpn := []string{"h2", "http/1.1", "smtp", ""}
	transports := []string{"", "", "tls", "raw", "udp"}
	ports := []uint32{0, 0, 443, 70000}
	clusterNames := []string{"c", "c", "pp", "pp", "nope"}
	valid := 0
	for i := range 3000 {
		l := &configv1.Listener{Name: "l", Address: ":443"}
		if rng.IntN(3) == 0 {
			l.ProxyProtocol = &configv1.ProxyProtocolAccept{Trusted: pick(cidrs)}
		}
		if rng.IntN(4) == 0 {
			l.PrereadTimeout = durationpb.New(time.Duration(rng.IntN(3)) * time.Second)
		}
		if rng.IntN(4) == 0 {
			l.MaxConnections = uint32(rng.IntN(3))
		}
		if rng.IntN(4) == 0 {
			l.AccessLog = &configv1.AccessLog{Path: []string{"-", "/var/log/a.log", "rel.log"}[rng.IntN(3)], Format: []string{"", "json", "$remote_addr $cluster", "$nope"}[rng.IntN(4)]}
		}
		for range rng.IntN(3) {
			l.Sni = append(l.Sni, &configv1.SniRoute{Names: pick(names), Cluster: clusterNames[rng.IntN(len(clusterNames))]})
		}
		for range rng.IntN(4) {
			r := &configv1.StreamRoute{Cluster: clusterNames[rng.IntN(len(clusterNames))]}
			if rng.IntN(4) != 0 {
				r.Match = &configv1.StreamMatch{
					Sni: pick(names), Alpn: pick(alpn), Transport: transports[rng.IntN(len(transports))],
					SourceCidrs: pick(cidrs), ServerAddresses: pick(cidrs), ServerPort: ports[rng.IntN(len(ports))],
				}
			}
			l.Routes = append(l.Routes, r)
		}
		if rng.IntN(2) == 0 {
			l.Tcp = &configv1.TcpProxy{Cluster: clusterNames[rng.IntN(len(clusterNames))]}
		}
		b := &configv1.Bundle{
			Listeners: []*configv1.Listener{l},
			Clusters: []*configv1.Cluster{
				{Name: "c", Lb: bundle.LBPolicies[rng.IntN(len(bundle.LBPolicies))], Endpoints: []*configv1.Endpoint{{Address: "192.0.2.1:1"}}},
				{Name: "pp", ProxyProtocol: []string{"v1", "v2"}[rng.IntN(2)], Endpoints: []*configv1.Endpoint{{Address: "192.0.2.2:1"}}},
			},
		}
		if bundle.Validate([]*adminv1.ConfigFile{{Path: "f.yaml", Bundle: b}}) != nil {
			continue
		}
		valid++
		r, err := Compile(b, nil)
		if err != nil {
			t.Fatalf("case %d: valid bundle does not compile: %v\n%v", i, err, b)
		}
		if err := envoyValid(r); err != nil {
			t.Fatalf("case %d: %v\n%v", i, err, b)
		}
		chains := len(r.Listeners[0].GetFilterChains())
		want := len(l.GetSni()) + len(l.GetRoutes())
		if l.GetProxyProtocol() != nil && l.GetTcp().GetCluster() != "" || !bundle.Routed(l) {
			want++
		}
		if chains != want {
			t.Fatalf("case %d: %d filter chains, want %d\n%v", i, chains, want, b)
		}
	}
	if valid < 100 {
		t.Errorf("only %d of 3000 random bundles were valid: the generator needs better odds", valid)
	}
	t.Logf("%d valid bundles compiled", valid)
}

// TestAccessLogsParseOnTheAgent checks that every access log the compiler
// emits is one the agent's parser (accesslog.ParseEnvoyFormat) accepts, and
// that "json" carries a key per variable of the agent's JSON lines.
func TestAccessLogsParseOnTheAgent(t *testing.T) {
	r, err := Compile(load(t, "testdata/accesslog.yaml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	var logs []*accesslogv3.AccessLog
	for _, l := range r.Listeners {
		for _, lf := range l.GetListenerFilters() {
			udp := &udpproxyv3.UdpProxyConfig{}
			if lf.GetTypedConfig().UnmarshalTo(udp) == nil {
				logs = append(logs, udp.GetAccessLog()...)
			}
		}
		chains := append(slices.Clone(l.GetFilterChains()), l.GetDefaultFilterChain())
		for _, c := range chains {
			for _, f := range c.GetFilters() {
				tp := &tcpproxyv3.TcpProxy{}
				if f.GetTypedConfig().UnmarshalTo(tp) == nil {
					logs = append(logs, tp.GetAccessLog()...)
				}
			}
		}
	}
	if len(logs) != 4 { // dns, edge's two chains, web
		t.Fatalf("%d access logs, want 4", len(logs))
	}
	for i, al := range logs {
		fl := &filev3.FileAccessLog{}
		if err := al.GetTypedConfig().UnmarshalTo(fl); err != nil {
			t.Fatal(err)
		}
		var js map[string]string
		if st := fl.GetLogFormat().GetJsonFormat(); st != nil {
			js = map[string]string{}
			for k, v := range st.GetFields() {
				js[k] = v.GetStringValue()
			}
			if _, ok := js["remote_addr"]; !ok || len(js) < 18 {
				t.Errorf("log %d: json_format %v lacks variables", i, js)
			}
		}
		text := fl.GetLogFormat().GetTextFormatSource().GetInlineString()
		if js == nil && !strings.HasSuffix(text, "\n") {
			t.Errorf("log %d: text format %q does not end a line", i, text)
		}
		if _, err := accesslog.ParseEnvoyFormat(text, js); err != nil {
			t.Errorf("log %d (%s): the agent refuses it: %v", i, fl.GetPath(), err)
		}
	}
}

// TestDocsOperatorTable keeps the access-log variable table of
// docs/config.md equal to the one table the compiler uses.
func TestDocsOperatorTable(t *testing.T) {
	data, err := os.ReadFile("../../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := 0
	for line := range strings.SplitSeq(string(data), "\n") {
		cells := strings.Split(line, "|")
		if len(cells) != 5 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`$") {
			continue
		}
		rows++
		v := strings.Trim(strings.TrimSpace(cells[1]), "`")
		op := strings.Trim(strings.TrimSpace(cells[3]), "`")
		if want, ok := accesslog.EnvoyOperator(v); !ok || op != want {
			t.Errorf("docs/config.md: %s is sent as %s, but the compiler sends %q (known: %v)", v, op, want, ok)
		}
	}
	if rows < 19 {
		t.Errorf("docs/config.md lists %d access-log variables, want every one (at least 19)", rows)
	}
}

// TestAgentAccepts runs every golden case through the agent's own
// validation and graph building (runtime.Build): whatever the compiler
// emits, flotilla-agent must take without a NACK.
func TestAgentAccepts(t *testing.T) {
	for _, tc := range goldenCases {
		if grpcCases[tc.name] {
			continue // for gRPC clients, never sent to agents
		}
		for _, labels := range tc.labels {
			t.Run(fmt.Sprintf("%s/%v", tc.name, labels), func(t *testing.T) {
				r, err := Compile(load(t, tc.inputs...), labels)
				if err != nil {
					t.Fatal(err)
				}
				if err := agentAccepts(r); err != nil {
					t.Error(err)
				}
			})
		}
	}
}

// agentAccepts runs r through the agent's graph building (runtime.Build).
func agentAccepts(r *Resources) error {
	rr := &runtime.Resources{
		Listeners: map[string]*listenerv3.Listener{},
		Clusters:  map[string]*clusterv3.Cluster{},
		Endpoints: map[string]*endpointv3.ClusterLoadAssignment{},
		Secrets:   map[string]*tlsv3.Secret{},
		Routes:    map[string]*routev3.RouteConfiguration{},
	}
	for _, l := range r.Listeners {
		rr.Listeners[l.GetName()] = l
	}
	for _, c := range r.Clusters {
		rr.Clusters[c.GetName()] = c
	}
	for _, e := range r.Endpoints {
		rr.Endpoints[e.GetClusterName()] = e
	}
	for _, s := range r.Secrets {
		rr.Secrets[s.GetName()] = s
	}
	for _, rc := range r.Routes {
		rr.Routes[rc.GetName()] = rc
	}
	if _, err := runtime.Build(rr); err != nil {
		return fmt.Errorf("the agent refuses it: %w", err)
	}
	return nil
}
