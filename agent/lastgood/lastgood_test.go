package lastgood_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/flotilla-proxy/flotilla/agent/lastgood"
	"github.com/flotilla-proxy/flotilla/agent/runtime"
	"github.com/flotilla-proxy/flotilla/agent/runtime/runtimetest"
	"github.com/flotilla-proxy/flotilla/agent/xdsclient"
	agentv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/agent/v1"
)

var (
	lds = xdsclient.ListenerType
	cds = xdsclient.ClusterType
	eds = xdsclient.EndpointType
)

func sampleSet() (*runtime.Resources, map[string]string) {
	set := &runtime.Resources{}
	xdsclient.Put(set, lds, map[string]proto.Message{
		"web": runtimetest.Listener("web", "127.0.0.1", 10001, "backend"),
		"db":  runtimetest.Listener("db", "::1", 10002, "backend"),
	})
	xdsclient.Put(set, cds, map[string]proto.Message{"backend": runtimetest.EDSCluster("backend")})
	xdsclient.Put(set, eds, map[string]proto.Message{"backend": runtimetest.LoadAssignment("backend", runtimetest.Endpoint("127.0.0.1:20001", 1), runtimetest.Endpoint("[::1]:20002", 1))})
	return set, map[string]string{lds: "v7", cds: "v6", eds: "v5"}
}

func sampleSnapshot(t *testing.T) *agentv1.Snapshot {
	t.Helper()
	set, versions := sampleSet()
	s, err := lastgood.FromResources("agent-1", set, versions, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), lastgood.FileName)
	want := sampleSnapshot(t)
	if err := lastgood.Save(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := lastgood.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got, want) {
		t.Fatalf("Load = %v\nwant %v", got, want)
	}
	if got.GetNodeId() != "agent-1" || !got.GetSavedAt().AsTime().Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Errorf("node/saved_at = %q/%v", got.GetNodeId(), got.GetSavedAt().AsTime())
	}

	set, versions, err := lastgood.ToResources(got)
	if err != nil {
		t.Fatal(err)
	}
	wantSet, wantVersions := sampleSet()
	for _, typ := range xdsclient.Types {
		if versions[typ] != wantVersions[typ] {
			t.Errorf("%s version = %q, want %q", xdsclient.ShortName(typ), versions[typ], wantVersions[typ])
		}
		g, w := xdsclient.Get(set, typ), xdsclient.Get(wantSet, typ)
		if len(g) != len(w) {
			t.Errorf("%s: %v, want %v", xdsclient.ShortName(typ), xdsclient.SortedNames(g), xdsclient.SortedNames(w))
		}
		for n, m := range w {
			if !proto.Equal(g[n], m) {
				t.Errorf("%s %q differs after the round trip", xdsclient.ShortName(typ), n)
			}
		}
	}

	// Saving again replaces the file and leaves nothing else behind.
	want.NodeId = "agent-2"
	if err := lastgood.Save(path, want); err != nil {
		t.Fatal(err)
	}
	if got, err := lastgood.Load(path); err != nil || got.GetNodeId() != "agent-2" {
		t.Fatalf("Load after second Save = %v, %v", got.GetNodeId(), err)
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Errorf("directory holds %d entries, want just the snapshot", len(entries))
	}
}

func TestFromResourcesOnlyVersionedTypes(t *testing.T) {
	set, _ := sampleSet()
	s, err := lastgood.FromResources("n", set, map[string]string{cds: "1", lds: "2"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, ts := range s.GetTypes() {
		types = append(types, xdsclient.ShortName(ts.GetTypeUrl()))
	}
	if strings.Join(types, ",") != "cds,lds" {
		t.Errorf("types = %v, want cds,lds", types)
	}
	_, versions, err := lastgood.ToResources(s)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := versions[eds]; ok || len(versions) != 2 {
		t.Errorf("versions = %v", versions)
	}
}

func TestLoadMissing(t *testing.T) {
	_, err := lastgood.Load(filepath.Join(t.TempDir(), lastgood.FileName))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Load = %v, want os.ErrNotExist", err)
	}
	if errors.Is(err, lastgood.ErrCorrupt) {
		t.Error("a missing file is reported as corrupt")
	}
}

func TestLoadCorrupt(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.pb")
	if err := lastgood.Save(good, sampleSnapshot(t)); err != nil {
		t.Fatal(err)
	}
	valid, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	flipped := append([]byte(nil), valid...)
	flipped[len(flipped)-3] ^= 0x40
	version := append([]byte(nil), valid...)
	version[6] = 9

	for _, tc := range []struct {
		name    string
		content []byte
		want    string
	}{
		{"empty", nil, "not a snapshot file"},
		{"other file", []byte("listeners:\n  - name: web\n"), "not a snapshot file"},
		{"bare protobuf", mustMarshal(t, sampleSnapshot(t)), "not a snapshot file"},
		{"truncated", valid[:len(valid)/2], "checksum mismatch"},
		{"flipped bit", flipped, "checksum mismatch"},
		{"future format", version, "format version 9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
			if err := os.WriteFile(path, tc.content, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := lastgood.Load(path)
			if !errors.Is(err, lastgood.ErrCorrupt) {
				t.Fatalf("Load = %v, want ErrCorrupt", err)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file and say %q", err, tc.want)
			}
		})
	}
}

// A crash between writing the temp file and renaming it leaves the temp file
// behind, maybe half written; Load keeps reading the last complete snapshot,
// and the next Save sweeps the leftover away.
func TestLeftoverTempFileIsHarmless(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, lastgood.FileName)
	want := sampleSnapshot(t)
	if err := lastgood.Save(path, want); err != nil {
		t.Fatal(err)
	}
	valid, _ := os.ReadFile(path)
	leftover := filepath.Join(dir, "."+lastgood.FileName+".tmp-123456")
	if err := os.WriteFile(leftover, valid[:len(valid)/3], 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := lastgood.Load(path)
	if err != nil || !proto.Equal(got, want) {
		t.Fatalf("Load with a leftover temp file = %v, %v", got, err)
	}
	if err := lastgood.Save(path, want); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(leftover); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("leftover temp file still there: %v", err)
	}
}

func TestSaveFailsWithoutDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", lastgood.FileName)
	if err := lastgood.Save(path, sampleSnapshot(t)); err == nil {
		t.Fatal("Save into a missing directory succeeded")
	}
}

func TestToResourcesRejects(t *testing.T) {
	bad := runtimetest.Listener("web", "127.0.0.1", 1, "c")
	bad.ListenerFilters = []*listenerv3.ListenerFilter{{Name: "envoy.filters.listener.tls_inspector"}}
	badAny, _ := anypb.New(bad)
	for _, tc := range []struct {
		name  string
		types []*agentv1.TypeSnapshot
		want  string
	}{
		{"unknown type", []*agentv1.TypeSnapshot{{TypeUrl: "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration"}}, "not supported"},
		{"duplicate type", []*agentv1.TypeSnapshot{{TypeUrl: lds, Version: "1"}, {TypeUrl: lds, Version: "2"}}, "twice"},
		{"invalid resource", []*agentv1.TypeSnapshot{{TypeUrl: lds, Version: "3", Resources: []*anypb.Any{badAny}}}, "listener_filters"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := lastgood.ToResources(&agentv1.Snapshot{Types: tc.types})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ToResources = %v, want an error about %q", err, tc.want)
			}
		})
	}
}

func mustMarshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSecretsSavedPrivately: SDS secrets go into the snapshot and come back; the file is
// readable by its owner only.
func TestSecretsSavedPrivately(t *testing.T) {
	ca := runtimetest.NewCA("snapshot ca")
	sec := runtimetest.CertSecret(ca.Issue("db", false, "db.example"))
	l := runtimetest.Listener("db-tls", "127.0.0.1", 10003, "db")
	l.FilterChains[0].TransportSocket = runtimetest.TLSSocket(runtimetest.DownstreamTLSContext(nil, sec.GetName()))
	set := &runtime.Resources{}
	xdsclient.Put(set, lds, map[string]proto.Message{"db-tls": l})
	xdsclient.Put(set, cds, map[string]proto.Message{"db": runtimetest.StaticCluster("db", runtimetest.Endpoint("127.0.0.1:20003", 1))})
	xdsclient.Put(set, xdsclient.SecretType, map[string]proto.Message{sec.GetName(): sec})
	versions := map[string]string{lds: "v1", cds: "v1", xdsclient.SecretType: "v1"}
	snap, err := lastgood.FromResources("agent-1", set, versions, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), lastgood.FileName)
	if err := lastgood.Save(path, snap); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode != 0o600 {
		t.Errorf("snapshot mode = %v, want 0600", mode)
	}
	loaded, err := lastgood.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	got, gotVersions, err := lastgood.ToResources(loaded)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got.Secrets[sec.GetName()], sec) || gotVersions[xdsclient.SecretType] != "v1" {
		t.Fatalf("secret did not survive the round trip: %v %v", got.Secrets, gotVersions)
	}
	if _, err := runtime.Build(got); err != nil {
		t.Errorf("loaded set does not build: %v", err)
	}
}
