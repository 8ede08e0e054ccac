package compiler

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/flotilla-proxy/flotilla/controlplane/bundle"
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
// by a case, and every golden file belongs to one.
func TestGoldenCoversTestdata(t *testing.T) {
	used := make(map[string]bool)
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
	type validator interface{ ValidateAll() error }
	res := map[resourcev3.Type][]types.Resource{}
	add := func(typ resourcev3.Type, m types.Resource) {
		if err := m.(validator).ValidateAll(); err != nil {
			t.Errorf("%s is not valid for Envoy: %v", typ, err)
		}
		res[typ] = append(res[typ], m)
	}
	for _, l := range r.Listeners {
		add(resourcev3.ListenerType, l)
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				p := &tcpproxyv3.TcpProxy{}
				if err := f.GetTypedConfig().UnmarshalTo(p); err != nil {
					t.Errorf("listener %s: filter %s: %v", l.GetName(), f.GetName(), err)
				} else if err := p.ValidateAll(); err != nil {
					t.Errorf("listener %s: tcp_proxy is not valid for Envoy: %v", l.GetName(), err)
				}
			}
		}
	}
	for _, c := range r.Clusters {
		add(resourcev3.ClusterType, c)
	}
	for _, e := range r.Endpoints {
		add(resourcev3.EndpointType, e)
	}
	snap, err := cachev3.NewSnapshot("1", res)
	if err != nil {
		t.Fatal(err)
	}
	if err := snap.Consistent(); err != nil {
		t.Errorf("snapshot not consistent: %v", err)
	}
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
		{"unknown cluster", func(b *configv1.Bundle) { b.Listeners[0].Tcp.Cluster = "pacs" }, `listener "l": unknown cluster "pacs"`},
		{"no tcp", func(b *configv1.Bundle) { b.Listeners[0].Tcp = nil }, `listener "l": no protocol block (tcp)`},
		{"bad listen address", func(b *configv1.Bundle) { b.Listeners[0].Address = "localhost:1" }, `listener "l": "localhost:1": host "localhost" is not an IP address (names are not resolved)`},
		{"bad endpoint", func(b *configv1.Bundle) { b.Clusters[0].Endpoints[0].Address = "192.0.2.1" }, `cluster "c": endpoints[0]: "192.0.2.1" is not host:port (write IPv6 in brackets: "[2001:db8::1]:4242")`},
		{"duplicate cluster", func(b *configv1.Bundle) { b.Clusters = append(b.Clusters, b.Clusters[0]) }, `cluster "c": defined twice`},
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
