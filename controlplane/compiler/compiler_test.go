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

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	upstreamproxyprotocolv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/proxy_protocol/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

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
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			b := load(t, tc.inputs...)
			var res []*Resources
			for _, labels := range tc.labels {
				r, err := Compile(b, labels)
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
	used := map[string]bool{filepath.Join("testdata", "fuzz"): true}
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
				r, err := Compile(load(t, tc.inputs...), labels)
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
	snap, err := cachev3.NewSnapshot("1", res)
	if err != nil {
		return err
	}
	if err := snap.Consistent(); err != nil {
		errs = append(errs, fmt.Errorf("snapshot not consistent: %w", err))
	}
	return errors.Join(errs...)
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
		{"no tcp", func(b *configv1.Bundle) { b.Listeners[0].Tcp = nil }, `listener "l": no tcp.cluster, sni or routes: nowhere to send connections`},
		{"no tcp cluster", func(b *configv1.Bundle) { b.Listeners[0].Tcp.Cluster = "" }, `listener "l": no tcp.cluster, sni or routes: nowhere to send connections`},
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
				{Name: "c", Endpoints: []*configv1.Endpoint{{Address: "192.0.2.1:1"}}},
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
