package bundle

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
	configv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/config/v1"
)

// writeFiles creates files (path relative to dir → content) under dir.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func paths(files []*adminv1.ConfigFile) []string {
	var out []string
	for _, f := range files {
		out = append(out, f.GetPath())
	}
	return out
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"b.yaml":               "clusters: [{name: b, endpoints: ['192.0.2.1:1']}]\n",
		"a.yml":                "clusters: [{name: a, endpoints: ['192.0.2.1:1']}]\n",
		"c.json":               `{"clusters": [{"name": "c", "endpoints": ["192.0.2.1:1"]}]}`,
		"README.md":            "not config",
		"notes.txt":            "not config",
		".hidden.yaml":         "garbage: [",
		".git/config.yaml":     "garbage: [",
		"sub/d.yaml":           "clusters: [{name: d, endpoints: ['192.0.2.1:1']}]\n",
		"sub/.hid/e.yaml":      "garbage: [",
		"sub/deeper/e.YAML":    "clusters: [{name: e, endpoints: ['192.0.2.1:1']}]\n",
		"other/explicit.conf":  "clusters: [{name: f, endpoints: ['192.0.2.1:1']}]\n",
		"other/.explicit.yaml": "clusters: [{name: g, endpoints: ['192.0.2.1:1']}]\n",
	})
	t.Chdir(dir)

	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"directory", []string{"."}, []string{"a.yml", "b.yaml", "c.json", "sub/d.yaml", "sub/deeper/e.YAML"}},
		{"directory as named", []string{"sub/"}, []string{"sub/d.yaml", "sub/deeper/e.YAML"}},
		{"explicit files whatever their names", []string{"other/explicit.conf", "other/.explicit.yaml"}, []string{"other/explicit.conf", "other/.explicit.yaml"}},
		{"order of arguments kept", []string{"sub", "a.yml"}, []string{"sub/d.yaml", "sub/deeper/e.YAML", "a.yml"}},
		{"a file named twice is read once", []string{"a.yml", "./a.yml", "."}, []string{"a.yml", "b.yaml", "c.json", "sub/d.yaml", "sub/deeper/e.YAML"}},
		{"absolute", []string{filepath.Join(dir, "sub")}, []string{filepath.Join(dir, "sub/d.yaml"), filepath.Join(dir, "sub/deeper/e.YAML")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files, err := Load(tt.args...)
			if err != nil {
				t.Fatal(err)
			}
			if got := paths(files); !slices.Equal(got, tt.want) {
				t.Errorf("paths = %q, want %q", got, tt.want)
			}
			for _, f := range files {
				if len(f.GetBundle().GetClusters()) != 1 {
					t.Errorf("%s: bundle not parsed: %v", f.GetPath(), f.GetBundle())
				}
			}
		})
	}

	t.Run("missing path", func(t *testing.T) {
		_, err := Load("nope.yaml")
		if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "nope.yaml") {
			t.Errorf("err = %v, want a not-exist error naming the file", err)
		}
	})
	t.Run("parse error names the file", func(t *testing.T) {
		writeFiles(t, dir, map[string]string{"bad/x.yaml": "listeners: [{nam: x}]\n"})
		_, err := Load("bad")
		var fe *FieldError
		if !errors.As(err, &fe) || fe.File != "bad/x.yaml" || fe.Field != "listeners[0].nam" {
			t.Errorf("err = %#v, want a FieldError for bad/x.yaml listeners[0].nam", err)
		}
	})
}

func TestParse(t *testing.T) {
	full := &configv1.Bundle{
		Listeners: []*configv1.Listener{{
			Name:    "dicom",
			Address: "[::]:4242",
			Agents:  map[string]string{"dc": "ams", "canary": "true"},
			Tcp:     &configv1.TcpProxy{Cluster: "pacs", IdleTimeout: durationpb.New(90 * time.Minute), ConnectAttempts: 2},
		}},
		Clusters: []*configv1.Cluster{{
			Name:           "pacs",
			ConnectTimeout: durationpb.New(250 * time.Millisecond),
			Endpoints: []*configv1.Endpoint{
				{Address: "192.0.2.3:4242"},
				{Address: "[2001:db8::3]:4242", Weight: 3},
			},
		}},
	}
	tests := []struct {
		name, in string
		want     *configv1.Bundle
	}{
		{"empty", "", &configv1.Bundle{}},
		{"only comments", "# nothing yet\n", &configv1.Bundle{}},
		{"empty document marker", "---\n", &configv1.Bundle{}},
		{"empty lists", "listeners: []\nclusters: []\n", &configv1.Bundle{}},
		{"yaml with shorthands", `
listeners:
  - name: dicom
    address: "[::]:4242"
    agents: { dc: ams, canary: "true" }
    tcp: { cluster: pacs, idle_timeout: 1h30m, connect_attempts: 2 }
clusters:
  - name: pacs
    connect_timeout: 250ms
    endpoints:
      - "192.0.2.3:4242"
      - { address: "[2001:db8::3]:4242", weight: 3 }
`, full},
		{"protojson forms", `
listeners:
  - name: dicom
    address: "[::]:4242"
    agents: { dc: ams, canary: "true" }
    tcp: { cluster: pacs, idleTimeout: 5400s, connectAttempts: 2 }
clusters:
  - name: pacs
    connectTimeout: 0.250s
    endpoints: [{ address: "192.0.2.3:4242" }, { address: "[2001:db8::3]:4242", weight: 3 }]
`, full},
		{"json", `{"listeners": [{"name": "dicom", "address": "[::]:4242", "agents": {"dc": "ams", "canary": "true"},
			"tcp": {"cluster": "pacs", "idle_timeout": "5400s", "connect_attempts": 2}}],
			"clusters": [{"name": "pacs", "connect_timeout": "0.25s", "endpoints": ["192.0.2.3:4242", {"address": "[2001:db8::3]:4242", "weight": 3}]}]}`, full},
		{"zero and negative durations", "listeners: [{name: a, tcp: {idle_timeout: 0s}}]\nclusters: [{name: b, connect_timeout: -1.5s}]\n",
			&configv1.Bundle{
				Listeners: []*configv1.Listener{{Name: "a", Tcp: &configv1.TcpProxy{IdleTimeout: &durationpb.Duration{}}}},
				Clusters:  []*configv1.Cluster{{Name: "b", ConnectTimeout: &durationpb.Duration{Seconds: -1, Nanos: -5e8}}},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Parse("f.yaml", []byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if f.GetPath() != "f.yaml" {
				t.Errorf("path = %q", f.GetPath())
			}
			if !proto.Equal(f.GetBundle(), tt.want) {
				t.Errorf("bundle = %v\nwant %v", f.GetBundle(), tt.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, in string
		want     string // the whole error message
	}{
		{"unknown top-level field", "listener: []\n",
			`f.yaml: listener: unknown field "listener" (known fields: listeners, clusters, grpc_services)`},
		{"unknown nested field", "listeners:\n  - name: a\n    tcp: { clustr: x }\n",
			`f.yaml: listeners[0].tcp.clustr: unknown field "clustr" (known fields: cluster, idle_timeout, connect_attempts)`},
		{"unknown field in a later element", "clusters:\n  - name: a\n  - name: b\n    endpoints: [{address: '192.0.2.1:1', wieght: 2}]\n",
			`f.yaml: clusters[1].endpoints[0].wieght: unknown field "wieght" (known fields: address, weight)`},
		{"weight not a number", "clusters: [{name: a, endpoints: ['192.0.2.1:1', {address: '192.0.2.2:1', weight: heavy}]}]\n",
			`f.yaml: clusters[0].endpoints[1].weight: must be a whole number, got "heavy"`},
		{"negative attempts", "listeners: [{name: a, tcp: {cluster: b, connect_attempts: -1}}]\n",
			`f.yaml: listeners[0].tcp.connect_attempts: must be a whole number, got -1`},
		{"yes is a bool in YAML", "listeners: [{name: a, agents: {canary: yes}}]\n",
			`f.yaml: listeners[0].agents.canary: must be a string, got true (in YAML, quote values such as yes, no, on, off and numbers)`},
		{"number for a string", "listeners: [{name: a, address: 4242}]\n",
			`f.yaml: listeners[0].address: must be a string, got 4242 (in YAML, quote values such as yes, no, on, off and numbers)`},
		{"duration without unit", "clusters: [{name: a, connect_timeout: 5}]\n",
			`f.yaml: clusters[0].connect_timeout: must be a duration such as "30s", "1m30s" or "1h", got 5`},
		{"bad duration", "clusters: [{name: a, connect_timeout: soon}]\n",
			`f.yaml: clusters[0].connect_timeout: must be a duration such as "30s", "1m30s" or "1h", got "soon"`},
		{"list expected", "clusters: [{name: a, endpoints: '192.0.2.1:1'}]\n",
			`f.yaml: clusters[0].endpoints: must be a list, got "192.0.2.1:1"`},
		{"mapping expected", "listeners: [{name: a, tcp: pacs}]\n",
			`f.yaml: listeners[0].tcp: must be a mapping, got "pacs"`},
		{"listeners as a mapping", "listeners: {a: 1}\n",
			`f.yaml: listeners: must be a list, got a mapping`},
		{"top level is a list", "- name: a\n",
			`f.yaml: the file must be a mapping with listeners and clusters at the top`},
		{"two documents", "listeners: []\n---\nclusters: []\n",
			`f.yaml: the file holds several YAML documents (---); put each in its own file`},
		{"duplicate key", "listeners: []\nlisteners: []\n",
			"f.yaml: yaml: unmarshal errors:\n  line 2: key \"listeners\" already set in map"},
		{"syntax error", "listeners: [\n",
			`f.yaml: yaml: line 1: did not find expected node content`},
		{"json syntax error", `{"listeners": [}`,
			`f.yaml: yaml: did not find expected node content`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("f.yaml", []byte(tt.in))
			if err == nil {
				t.Fatal("no error")
			}
			if err.Error() != tt.want {
				t.Errorf("error:\n got %s\nwant %s", err, tt.want)
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.File != "f.yaml" {
				t.Errorf("error %#v is not a FieldError for f.yaml", err)
			}
		})
	}
}

func TestMerge(t *testing.T) {
	a := mustParse(t, "a.yaml", "listeners: [{name: z, tcp: {cluster: x}}, {name: m, tcp: {cluster: x}}]\nclusters: [{name: x, endpoints: ['192.0.2.1:1']}]\n")
	b := mustParse(t, "b.yaml", "listeners: [{name: b, tcp: {cluster: c}}]\nclusters: [{name: c, endpoints: ['192.0.2.2:1']}, {name: a, endpoints: ['192.0.2.3:1']}]\n")
	m := Merge([]*adminv1.ConfigFile{a, b})
	var ls, cs []string
	for _, l := range m.GetListeners() {
		ls = append(ls, l.GetName())
	}
	for _, c := range m.GetClusters() {
		cs = append(cs, c.GetName())
	}
	if !slices.Equal(ls, []string{"b", "m", "z"}) || !slices.Equal(cs, []string{"a", "c", "x"}) {
		t.Errorf("merged listeners %q clusters %q", ls, cs)
	}
	m.Listeners[0].Name = "changed"
	if b.GetBundle().GetListeners()[0].GetName() != "b" {
		t.Error("Merge shares messages with the files")
	}
	if got := Merge(nil); len(got.GetListeners())+len(got.GetClusters()) != 0 {
		t.Errorf("Merge(nil) = %v", got)
	}
	// Same content spread differently over files merges equally.
	ab := mustParse(t, "all.yaml", "clusters: [{name: a, endpoints: ['192.0.2.3:1']}, {name: x, endpoints: ['192.0.2.1:1']}, {name: c, endpoints: ['192.0.2.2:1']}]\n"+
		"listeners: [{name: m, tcp: {cluster: x}}, {name: b, tcp: {cluster: c}}, {name: z, tcp: {cluster: x}}]\n")
	if x, y := Merge([]*adminv1.ConfigFile{b, a}), Merge([]*adminv1.ConfigFile{ab}); !proto.Equal(x, y) {
		t.Errorf("merges differ:\n%v\n%v", x, y)
	}
}

func mustParse(t *testing.T, path, content string) *adminv1.ConfigFile {
	t.Helper()
	f, err := Parse(path, []byte(content))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestExamples loads and validates every bundle under examples/: the whole
// tree, and each directory on its own, as users apply them.
func TestExamples(t *testing.T) {
	root := filepath.Join("..", "..", "examples")
	sets := [][]string{{root}}
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		sets = append(sets, []string{filepath.Join(root, e.Name())})
	}
	for _, set := range sets {
		t.Run(filepath.Base(set[0]), func(t *testing.T) {
			files, err := Load(set...)
			if err != nil {
				t.Fatal(err)
			}
			if len(files) == 0 {
				t.Fatal("no files loaded")
			}
			if err := Validate(files); err != nil {
				t.Fatalf("invalid:\n%v", err)
			}
		})
	}

	t.Run("quickstart content", func(t *testing.T) {
		files, err := Load(filepath.Join(root, "quickstart.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		want := &configv1.Bundle{
			Listeners: []*configv1.Listener{{Name: "echo", Address: "127.0.0.1:10000", Tcp: &configv1.TcpProxy{Cluster: "echo"}}},
			Clusters:  []*configv1.Cluster{{Name: "echo", Endpoints: []*configv1.Endpoint{{Address: "127.0.0.1:9001"}, {Address: "127.0.0.1:9002"}}}},
		}
		if got := Merge(files); !proto.Equal(got, want) {
			t.Errorf("quickstart = %v, want %v", got, want)
		}
	})
	t.Run("nginx-stream has UDP DNS, and lb, health_check and access_log on mysql", func(t *testing.T) {
		files, err := Load(filepath.Join(root, "nginx-stream"))
		if err != nil {
			t.Fatal(err)
		}
		m := Merge(files)
		listeners := map[string]*configv1.Listener{}
		for _, l := range m.GetListeners() {
			listeners[l.GetName()] = l
		}
		clusters := map[string]*configv1.Cluster{}
		for _, c := range m.GetClusters() {
			clusters[c.GetName()] = c
		}
		dns, dnsTCP := listeners["dns"], listeners["dns-tcp"]
		if dns.GetUdp().GetCluster() != "resolvers" || dns.GetAddress() != "[::]:53" || dns.GetTcp() != nil ||
			dnsTCP.GetTcp().GetCluster() != "resolvers" || dnsTCP.GetAddress() != dns.GetAddress() {
			t.Errorf("dns listeners = %v, %v", dns, dnsTCP)
		}
		if c := clusters["resolvers"]; c.GetLb() != LBRingHash || c.GetHealthCheck().GetTcp() == nil {
			t.Errorf("resolvers = %v", c)
		}
		if l := listeners["mysql"]; l.GetAccessLog().GetPath() == "" || !strings.Contains(l.GetAccessLog().GetFormat(), "$upstream_addr") {
			t.Errorf("mysql listener = %v", l)
		}
		if c := clusters["mysql"]; c.GetLb() != LBLeastRequest || c.GetHealthCheck().GetTcp() == nil {
			t.Errorf("mysql cluster = %v", c)
		}
	})
	t.Run("sni-routing has the ssl_preread seed", func(t *testing.T) {
		files, err := Load(filepath.Join(root, "sni-routing"))
		if err != nil {
			t.Fatal(err)
		}
		m := Merge(files)
		if len(m.GetListeners()) != 1 {
			t.Fatalf("listeners = %v", m.GetListeners())
		}
		l := m.GetListeners()[0]
		if l.GetAddress() != ":443" || len(l.GetSni()) != 2 || l.GetTcp().GetCluster() != "fallback" ||
			!slices.Equal(l.GetSni()[0].GetNames(), []string{"playnice.example", "*.playnice.example"}) || l.GetSni()[0].GetCluster() != "playnice" {
			t.Errorf("edge listener = %v", l)
		}
		for _, c := range m.GetClusters() {
			if c.GetProxyProtocol() == "" {
				t.Errorf("cluster %s sends no PROXY header (nginx proxy_protocol on)", c.GetName())
			}
		}
	})
	t.Run("nginx-stream has the DICOM seed", func(t *testing.T) {
		files, err := Load(filepath.Join(root, "nginx-stream"))
		if err != nil {
			t.Fatal(err)
		}
		m := Merge(files)
		var ports []string
		for _, l := range m.GetListeners() {
			ports = append(ports, l.GetAddress())
			if l.GetName() == "dicom" && (l.GetAddress() != "[::]:4242" || l.GetTcp().GetCluster() != "pacs") {
				t.Errorf("dicom listener = %v", l)
			}
		}
		for _, want := range []string{"[::]:4242", ":3306", ":389"} {
			if !slices.Contains(ports, want) {
				t.Errorf("no listener on %s (have %q)", want, ports)
			}
		}
	})
}

func TestCleanProtoError(t *testing.T) {
	// protojson positions refer to JSON generated from YAML, which the user
	// never saw: they are dropped, as is the "proto:" prefix.
	tests := []struct{ json, want string }{
		{`{"listeners": [{"name": true}]}`, "invalid value for string field name: true"},
		{`{"listeners": 3}`, "syntax error: unexpected token 3"},
	}
	for _, tt := range tests {
		err := protojson.Unmarshal([]byte(tt.json), &configv1.Bundle{})
		if err == nil {
			t.Fatalf("%s: no error", tt.json)
		}
		if got := cleanProtoError(err); got != tt.want {
			t.Errorf("cleanProtoError(%q) = %q, want %q", err, got, tt.want)
		}
	}
}

func TestDurationJSON(t *testing.T) {
	tests := []struct{ in, want string }{
		{"1h", "3600s"},
		{"1m30s", "90s"},
		{"250ms", "0.250000000s"},
		{"-1.5s", "-1.500000000s"},
		{"0", "0s"},
		{"3600s", "3600s"},
		{"1.5", "1.5"},   // no unit: left for protojson to refuse
		{"soon", "soon"}, // not a duration: left alone
		{"0.250s", "0.250000000s"},
	}
	for _, tt := range tests {
		if got := durationJSON(tt.in); got != tt.want {
			t.Errorf("durationJSON(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
