package flotctl

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/flotilla-proxy/flotilla/controlplane/admin"
	"github.com/flotilla-proxy/flotilla/controlplane/compiler"
	"github.com/flotilla-proxy/flotilla/controlplane/store"
	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
)

// fleet is the admin service's Publisher in these tests: it records the
// versions the service publishes and serves a fixed list of agents (the real
// one, the xDS server, needs real agents; the e2e tests run those).
type fleet struct {
	mu       sync.Mutex
	versions []uint64
	agents   []*adminv1.Agent
}

func (f *fleet) SetVersion(n uint64, _ []*adminv1.ConfigFile) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.versions = append(f.versions, n)
	return nil
}

func (f *fleet) Check([]*adminv1.ConfigFile) error { return nil }

func (f *fleet) Agents(selector map[string]string) []*adminv1.Agent {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*adminv1.Agent
	for _, a := range f.agents {
		if compiler.Selects(selector, a.GetLabels()) {
			out = append(out, a)
		}
	}
	return out
}

func (f *fleet) published() []uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]uint64(nil), f.versions...)
}

// startAdmin serves the real AdminService over gRPC on a loopback port, with a
// bbolt store in a temporary directory.
func startAdmin(t *testing.T, agents ...*adminv1.Agent) (string, *fleet) {
	t.Helper()
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "flotilla.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := &fleet{agents: agents}
	svc, err := admin.New(context.Background(), st, f, nil)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	adminv1.RegisterAdminServiceServer(srv, svc)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String(), f
}

// result is what one run of flotctl produced.
type result struct {
	stdout, stderr string
	code           int
}

// flotctl runs Main against server with a fixed author.
func flotctl(t *testing.T, server string, args ...string) result {
	t.Helper()
	env := map[string]string{"FLOTILLA_SERVER": server, "FLOTILLA_AUTHOR": "tester@example.com"}
	var stdout, stderr bytes.Buffer
	code := Main(context.Background(), args, &stdout, &stderr, func(k string) string { return env[k] })
	return result{stdout.String(), stderr.String(), code}
}

// writeFile writes content to dir/name and returns the path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const listenersYAML = `
listeners:
  - name: echo
    address: "127.0.0.1:10000"
    tcp: { cluster: echo }
`

func clustersYAML(endpoint string) string {
	return "clusters:\n  - name: echo\n    endpoints: [\"" + endpoint + "\"]\n"
}

// step is one flotctl run and what it must produce.
type step struct {
	name       string
	args       []string
	wantCode   int
	wantOut    []string // substrings of stdout
	wantErr    []string // substrings of stderr
	wantNoErr  bool     // stderr must be empty
	wantLines  int      // if > 0, stderr has exactly this many lines
	wantNotOut []string // substrings stdout must not contain
}

func (s step) check(t *testing.T, r result) {
	t.Helper()
	if r.code != s.wantCode {
		t.Errorf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, s.wantCode, r.stdout, r.stderr)
	}
	for _, w := range s.wantOut {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("stdout does not contain %q:\n%s", w, r.stdout)
		}
	}
	for _, w := range s.wantNotOut {
		if strings.Contains(r.stdout, w) {
			t.Errorf("stdout contains %q:\n%s", w, r.stdout)
		}
	}
	for _, w := range s.wantErr {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("stderr does not contain %q:\n%s", w, r.stderr)
		}
	}
	if s.wantNoErr && r.stderr != "" {
		t.Errorf("stderr is not empty:\n%s", r.stderr)
	}
	if n := strings.Count(r.stderr, "\n"); s.wantLines > 0 && n != s.wantLines {
		t.Errorf("stderr has %d lines, want %d:\n%s", n, s.wantLines, r.stderr)
	}
	for _, bad := range []string{"goroutine ", "rpc error:", "desc ="} {
		if strings.Contains(r.stderr, bad) {
			t.Errorf("stderr shows internals (%q):\n%s", bad, r.stderr)
		}
	}
}

// TestVersionLifecycle drives validate, diff, apply, get, history and
// rollback against the real admin service, in order: each step sees what the
// previous ones stored.
func TestVersionLifecycle(t *testing.T) {
	server, fl := startAdmin(t)
	dir := t.TempDir()
	v1 := filepath.Join(dir, "v1")
	writeFile(t, v1, "listeners.yaml", listenersYAML)
	writeFile(t, v1, "clusters.yaml", clustersYAML("127.0.0.1:9001"))
	v2 := filepath.Join(dir, "v2")
	writeFile(t, v2, "listeners.yaml", listenersYAML)
	writeFile(t, v2, "clusters.yaml", clustersYAML("127.0.0.1:9002"))
	bad := writeFile(t, dir, "bad/bad.yaml", `
listeners:
  - name: echo
    address: "127.0.0.1:10000"
    tcp: { cluster: nowhere }
  - name: other
    address: "127.0.0.1:99999"
    tcp: { cluster: nowhere }
`)
	steps := []step{
		{name: "validate a valid bundle", args: []string{"validate", v1}, wantOut: []string{"valid: 1 listener, 1 cluster in 2 files\n"}, wantNoErr: true},
		{name: "validate an invalid bundle", args: []string{"validate", bad}, wantCode: 1, wantLines: 3,
			wantErr: []string{`bad.yaml: listeners[0].tcp.cluster: unknown cluster "nowhere"`, "listeners[1].address"}},
		{name: "get before any version", args: []string{"get"}, wantCode: 1, wantLines: 1, wantErr: []string{"error: the control plane has no version yet"}},
		{name: "diff against an empty control plane", args: []string{"diff", v1}, wantCode: 1,
			wantOut: []string{"--- /dev/null\n+++ local/listeners/echo\n", "+++ local/clusters/echo", "2 changes against an empty control plane (no version yet): 2 added"}, wantNoErr: true},
		{name: "apply needs a message", args: []string{"apply", v1}, wantCode: 2, wantLines: 1, wantErr: []string{"apply needs a message"}},
		{name: "apply an invalid bundle fails locally", args: []string{"apply", bad, "-m", "bad"}, wantCode: 1, wantErr: []string{`unknown cluster "nowhere"`}},
		{name: "apply v1", args: []string{"apply", v1, "-m", "first"}, wantOut: []string{"applied version 1 (sha256 "}, wantNoErr: true},
		{name: "apply v1 again", args: []string{"apply", v1, "-m", "again"}, wantOut: []string{"unchanged: latest version 1 already has this content\n"}, wantNoErr: true},
		{name: "diff without changes", args: []string{"diff", v1}, wantOut: []string{"no changes against version 1\n"}, wantNoErr: true},
		{name: "diff with a changed endpoint", args: []string{"diff", v2}, wantCode: 1, wantNoErr: true,
			wantOut:    []string{"--- v1/clusters/echo\n+++ local/clusters/echo\n", "-- address: 127.0.0.1:9001\n+- address: 127.0.0.1:9002\n", "1 change against version 1: 1 changed\n"},
			wantNotOut: []string{"listeners/echo"}},
		{name: "diff of an invalid bundle", args: []string{"diff", bad}, wantCode: 2, wantErr: []string{`unknown cluster "nowhere"`}},
		{name: "diff of a missing file", args: []string{"diff", filepath.Join(dir, "missing.yaml")}, wantCode: 2, wantErr: []string{"missing.yaml"}},
		{name: "dry run stores nothing", args: []string{"apply", v2, "--dry-run"}, wantOut: []string{"dry run: would store version 2"}, wantNoErr: true},
		{name: "apply with a stale expected version", args: []string{"apply", v2, "-m", "move", "--expect-version", "0"}, wantCode: 1, wantLines: 1,
			wantErr: []string{"error: the control plane refused: latest version is 1, not 0 as expected"}},
		{name: "apply v2 with the right expected version", args: []string{"apply", v2, "-m", "move to 9002", "--expect-version", "1"}, wantOut: []string{"applied version 2 (sha256 "}, wantNoErr: true},
		{name: "history", args: []string{"history"}, wantNoErr: true,
			wantOut: []string{"VERSION  CREATED", "\n2  ", "tester@example.com", "move to 9002\n", "\n1  ", "first\n"}},
		{name: "history --limit 1", args: []string{"history", "--limit", "1"}, wantOut: []string{"move to 9002"}, wantNotOut: []string{"first"}},
		{name: "get the latest", args: []string{"get"}, wantOut: []string{"# version 2\n", "# message: move to 9002\n", "address: 127.0.0.1:9002"}, wantNoErr: true},
		{name: "get version 1", args: []string{"get", "--version", "1"}, wantOut: []string{"# version 1\n", "address: 127.0.0.1:9001"}, wantNoErr: true},
		{name: "get a version that does not exist", args: []string{"get", "--version", "9"}, wantCode: 1, wantLines: 1, wantErr: []string{"error: version 9 does not exist"}},
		{name: "rollback needs a number", args: []string{"rollback", "one", "-m", "x"}, wantCode: 2, wantLines: 1, wantErr: []string{`"one" is not a version number`}},
		{name: "rollback to a version that does not exist", args: []string{"rollback", "9", "-m", "x"}, wantCode: 1, wantLines: 1, wantErr: []string{"error: version 9 does not exist"}},
		{name: "rollback to version 1", args: []string{"rollback", "1", "-m", "9002 is down"}, wantOut: []string{"rolled back: version 3 restores version 1\n"}, wantNoErr: true},
		{name: "rollback to what already runs", args: []string{"rollback", "1", "-m", "again"}, wantCode: 1, wantLines: 1, wantErr: []string{"already has the content of version 1"}},
		{name: "history shows the rollback", args: []string{"history", "--limit", "1"}, wantOut: []string{"rollback of 1: 9002 is down"}},
		{name: "diff after the rollback", args: []string{"diff", v1}, wantOut: []string{"no changes against version 3"}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) { s.check(t, flotctl(t, server, s.args...)) })
	}

	t.Run("the rollback has version 1's content", func(t *testing.T) {
		r := flotctl(t, server, "history", "-o", "json")
		var h adminv1.ListVersionsResponse
		if err := protojson.Unmarshal([]byte(r.stdout), &h); err != nil {
			t.Fatalf("history -o json: %v\n%s", err, r.stdout)
		}
		if len(h.Versions) != 3 {
			t.Fatalf("history has %d versions, want 3", len(h.Versions))
		}
		v3, v2, v1 := h.Versions[0], h.Versions[1], h.Versions[2]
		if v3.GetHash() != v1.GetHash() || v3.GetRollbackOf() != 1 || v2.GetHash() == v1.GetHash() {
			t.Errorf("hashes v1 %s v2 %s v3 %s (rollback of %d): want v3 = v1 ≠ v2", v1.GetHash(), v2.GetHash(), v3.GetHash(), v3.GetRollbackOf())
		}
		if v1.GetAuthor() != "tester@example.com" {
			t.Errorf("author %q, want tester@example.com from $FLOTILLA_AUTHOR", v1.GetAuthor())
		}
	})
	t.Run("get -o yaml and -o json print the version record", func(t *testing.T) {
		for _, format := range []string{"json", "yaml"} {
			r := flotctl(t, server, "get", "-o", format)
			if r.code != 0 || !strings.Contains(r.stdout, "rollback_of") || !strings.Contains(r.stdout, "clusters.yaml") {
				t.Errorf("get -o %s: code %d\n%s%s", format, r.code, r.stdout, r.stderr)
			}
		}
	})
	if got := fl.published(); len(got) != 3 || got[0] != 1 || got[1] != 2 || got[2] != 3 {
		t.Errorf("published versions %v, want [1 2 3]", got)
	}
}

func TestAgents(t *testing.T) {
	since := timestamppb.New(time.Now().Add(-90 * time.Second))
	server, _ := startAdmin(t,
		&adminv1.Agent{NodeId: "a1", Labels: map[string]string{"dc": "ams"}, ConnectedSince: since, Resources: []*adminv1.ResourceStatus{
			{TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster", Short: "CDS", State: adminv1.SyncState_SYNC_STATE_SYNCED, Desired: "2", Sent: "2", Acked: "2"},
			{TypeUrl: "type.googleapis.com/envoy.config.listener.v3.Listener", Short: "LDS", State: adminv1.SyncState_SYNC_STATE_NACKED, Desired: "2", Sent: "2", Acked: "1",
				LastNack: &adminv1.Nack{Version: "2", Message: "bind: address already in use"}},
		}},
		&adminv1.Agent{NodeId: "a2", Labels: map[string]string{"dc": "fra"}, ConnectedSince: since},
	)
	steps := []step{
		{name: "table", args: []string{"agents"}, wantNoErr: true, wantOut: []string{
			"NODE  LABELS  CDS          EDS       LDS          CONNECTED\n",
			"a1    dc=ams  SYNCED (v2)  NOT_SENT  NACKED (v2)  9", // 90s or 91s
			"a2    dc=fra  NOT_SENT     NOT_SENT  NOT_SENT     9",
			"\na1 LDS v2 rejected: bind: address already in use\n",
		}},
		{name: "selector", args: []string{"agents", "--selector", "dc=fra"}, wantOut: []string{"a2"}, wantNotOut: []string{"a1"}},
		{name: "bad selector", args: []string{"agents", "-l", "dc"}, wantCode: 2, wantLines: 1, wantErr: []string{"key=value"}},
		{name: "yaml", args: []string{"agents", "-o", "yaml"}, wantOut: []string{"node_id: a1", "message: 'bind: address already in use'", "state: SYNC_STATE_NACKED"}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) { s.check(t, flotctl(t, server, s.args...)) })
	}
	t.Run("json", func(t *testing.T) {
		r := flotctl(t, server, "agents", "-o", "json")
		var resp adminv1.ListAgentsResponse
		if err := protojson.Unmarshal([]byte(r.stdout), &resp); err != nil {
			t.Fatalf("agents -o json: %v\n%s", err, r.stdout)
		}
		if len(resp.Agents) != 2 || resp.Agents[0].GetResources()[1].GetLastNack().GetMessage() != "bind: address already in use" {
			t.Errorf("agents -o json lost data:\n%s", r.stdout)
		}
	})
}

// TestUnreachable checks the sentence for a control plane that is not there,
// and that diff reports it with exit code 2.
func TestUnreachable(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := lis.Addr().String()
	lis.Close() // nothing listens there now
	file := writeFile(t, t.TempDir(), "c.yaml", listenersYAML+clustersYAML("127.0.0.1:9001"))
	want := "error: cannot reach the control plane at " + server + ": connection refused\n"
	tests := []struct {
		args []string
		code int
	}{
		{[]string{"history"}, 1},
		{[]string{"get"}, 1},
		{[]string{"agents"}, 1},
		{[]string{"apply", file, "-m", "x"}, 1},
		{[]string{"rollback", "1", "-m", "x"}, 1},
		{[]string{"diff", file}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.args[0], func(t *testing.T) {
			r := flotctl(t, server, tt.args...)
			if r.code != tt.code || r.stderr != want || r.stdout != "" {
				t.Errorf("exit %d, stderr %q, stdout %q; want exit %d, stderr %q", r.code, r.stderr, r.stdout, tt.code, want)
			}
		})
	}
}

// TestTimeout checks --timeout against a server that accepts connections and
// never answers.
func TestTimeout(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	start := time.Now()
	r := flotctl(t, lis.Addr().String(), "history", "--timeout", "300ms")
	want := "error: the control plane at " + lis.Addr().String() + " did not answer within 300ms\n"
	if r.code != 1 || r.stderr != want {
		t.Errorf("exit %d, stderr %q; want exit 1, stderr %q", r.code, r.stderr, want)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v with --timeout 300ms", d)
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown command", []string{"deploy"}, `unknown command "deploy"`},
		{"unknown flag", []string{"history", "--colour"}, "unknown flag: --colour"},
		{"bad flag value", []string{"history", "--limit", "many"}, `invalid argument "many"`},
		{"unknown output format", []string{"history", "-o", "xml"}, `unknown output format "xml"`},
		{"no paths", []string{"validate"}, "validate needs at least one file or directory"},
		{"no paths for diff", []string{"diff"}, "diff needs at least one file or directory"},
		{"arguments where none are taken", []string{"history", "x"}, "history takes no arguments, got 1 argument"},
		{"rollback without a version", []string{"rollback", "-m", "x"}, "rollback takes one version number, got 0 arguments"},
		{"rollback without a message", []string{"rollback", "3"}, "rollback needs a message"},
		{"negative timeout", []string{"history", "--timeout", "-1s"}, "--timeout must be positive"},
		{"negative ack wait", []string{"rollout", "start", "2", "--ack-wait", "-1s"}, "--ack-wait must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The server is never called: a usage error stops before.
			r := flotctl(t, "127.0.0.1:1", tt.args...)
			if r.code != ExitUsage || !strings.HasPrefix(r.stderr, "error: ") || !strings.Contains(r.stderr, tt.want) || strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("exit %d, stderr %q; want exit 2 and one line containing %q", r.code, r.stderr, tt.want)
			}
			if !strings.Contains(r.stderr, "--help") {
				t.Errorf("stderr %q does not point to --help", r.stderr)
			}
		})
	}
}

func TestExplain(t *testing.T) {
	c := &client{server: "cp:18001", timeout: 10 * time.Second, dialer: &dialer{}}
	tests := []struct {
		name      string
		err       error
		notFound  string
		wantMsg   string
		wantLines []string
	}{
		{"unavailable without a dial error", grpcstatus.Error(codes.Unavailable, "server shutting down"), "", "cannot reach the control plane at cp:18001: server shutting down", nil},
		{"deadline", grpcstatus.Error(codes.DeadlineExceeded, "context deadline exceeded"), "", "the control plane at cp:18001 did not answer within 10s", nil},
		{"one validation error", grpcstatus.Error(codes.InvalidArgument, "a.yaml: listeners[0].name: required"), "", "the control plane rejected the config: a.yaml: listeners[0].name: required", nil},
		{"several validation errors", grpcstatus.Error(codes.InvalidArgument, "a.yaml: x: bad\nb.yaml: y: bad"), "", "the control plane rejected the config (2 errors):", []string{"a.yaml: x: bad", "b.yaml: y: bad"}},
		{"conflict", grpcstatus.Error(codes.FailedPrecondition, "latest version is 5, not 4 as expected"), "", "the control plane refused: latest version is 5, not 4 as expected", nil},
		{"not found with the caller's sentence", grpcstatus.Error(codes.NotFound, "version not found"), "version 9 does not exist", "version 9 does not exist", nil},
		{"not found without one", grpcstatus.Error(codes.NotFound, "version not found"), "", "not found: version not found", nil},
		{"unimplemented", grpcstatus.Error(codes.Unimplemented, "unknown method Rollback"), "", "the control plane at cp:18001 does not support this command: unknown method Rollback", nil},
		{"internal", grpcstatus.Error(codes.Internal, "store: disk full"), "", "the control plane at cp:18001 failed: store: disk full", nil},
		{"not a status", errors.New("boom"), "", "the control plane at cp:18001 failed: boom", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ee := c.explain(tt.err, tt.notFound)
			if ee.code != ExitFailure || ee.msg != tt.wantMsg || strings.Join(ee.lines, "|") != strings.Join(tt.wantLines, "|") {
				t.Errorf("explain() = {%d %q %q}, want {1 %q %q}", ee.code, ee.msg, ee.lines, tt.wantMsg, tt.wantLines)
			}
		})
	}
}

func TestAuthor(t *testing.T) {
	env := map[string]string{"FLOTILLA_AUTHOR": "env@example.com"}
	a := &app{getenv: func(k string) string { return env[k] }}
	if got := a.author("flag@example.com"); got != "flag@example.com" {
		t.Errorf("author with --author = %q, want the flag", got)
	}
	if got := a.author(""); got != "env@example.com" {
		t.Errorf("author with $FLOTILLA_AUTHOR = %q, want the variable", got)
	}
	delete(env, "FLOTILLA_AUTHOR")
	if got := a.author(""); got == "" || !strings.Contains(got, "@") {
		t.Errorf("author without flag or variable = %q, want an email-like fallback", got)
	}
}
