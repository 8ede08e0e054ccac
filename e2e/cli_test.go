package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/flotilla-proxy/flotilla/controlplane/bundle"
	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
)

// TestCLIContract checks flotctl's promises against a real control plane:
// diff's exit codes, compare-and-set conflicts, history and rollback.
func TestCLIContract(t *testing.T) {
	t.Parallel()
	cp := startControlPlane(t)
	v1 := config{
		listeners: []listener{{name: "echo", address: freeAddr(t), cluster: "echo"}},
		clusters:  map[string][]string{"echo": {"127.0.0.1:9001"}},
	}
	v2 := v1
	v2.clusters = map[string][]string{"echo": {"127.0.0.1:9002"}}
	v1Path, v2Path := v1.write(t, "v1.yaml"), v2.write(t, "v2.yaml")
	invalid := filepath.Join(t.TempDir(), "invalid.yaml")
	if err := os.WriteFile(invalid, []byte("listeners:\n  - name: echo\n    address: \"127.0.0.1:70000\"\n    tcp: { cluster: nowhere }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	unreachable := freeAddr(t) // nothing listens there

	expect := func(t *testing.T, r cliResult, code int, stdout, stderr string) {
		t.Helper()
		if r.code != code || !strings.Contains(r.stdout, stdout) || !strings.Contains(r.stderr, stderr) {
			t.Errorf("want exit %d, stdout with %q, stderr with %q; got %s", code, stdout, stderr, r)
		}
		if strings.Contains(r.stderr, "rpc error") || strings.Contains(r.stderr, "goroutine") {
			t.Errorf("stderr shows internals:\n%s", r.stderr)
		}
	}

	t.Run("validate", func(t *testing.T) {
		expect(t, cp.flotctl(t, "validate", v1Path), 0, "valid: 1 listener, 1 cluster in 1 file", "")
		r := cp.flotctl(t, "validate", invalid)
		expect(t, r, 1, "", `unknown cluster "nowhere"`)
		if n := strings.Count(r.stderr, "\n"); n != 2 {
			t.Errorf("validate printed %d lines, want one per error (2):\n%s", n, r.stderr)
		}
	})
	t.Run("diff exit codes", func(t *testing.T) {
		expect(t, cp.flotctl(t, "diff", v1Path), 1, "2 added", "")
		if v := cp.apply(t, v1Path, "first"); v != 1 {
			t.Fatalf("apply stored version %d, want 1", v)
		}
		expect(t, cp.flotctl(t, "diff", v1Path), 0, "no changes against version 1", "")
		r := cp.flotctl(t, "diff", v2Path)
		expect(t, r, 1, "-- address: 127.0.0.1:9001\n+- address: 127.0.0.1:9002\n", "")
		expect(t, cp.flotctl(t, "diff", invalid), 2, "", `unknown cluster "nowhere"`)
		expect(t, cp.flotctl(t, "diff", filepath.Join(t.TempDir(), "missing.yaml")), 2, "", "missing.yaml")
		expect(t, runFlotctl(t, unreachable, "diff", v1Path), 2, "",
			"error: cannot reach the control plane at "+unreachable+": connection refused\n")
	})
	t.Run("apply --expect-version", func(t *testing.T) {
		r := cp.flotctl(t, "apply", v2Path, "-m", "stale", "--expect-version", "0")
		expect(t, r, 1, "", "latest version is 1, not 0 as expected")
		if strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("a conflict is one line on stderr, got:\n%s", r.stderr)
		}
		expect(t, cp.flotctl(t, "apply", v2Path, "-m", "move to 9002", "--expect-version", "1"), 0, "applied version 2 (sha256 ", "")
		expect(t, cp.flotctl(t, "apply", v2Path, "-m", "again"), 0, "unchanged: latest version 2 already has this content", "")
	})
	t.Run("history and rollback", func(t *testing.T) {
		r := cp.flotctl(t, "history")
		expect(t, r, 0, "VERSION", "")
		if !strings.Contains(lineWith(r.stdout, "2 "), "move to 9002") || !strings.Contains(lineWith(r.stdout, "1 "), "first") {
			t.Errorf("history:\n%s", r)
		}
		expect(t, cp.flotctl(t, "rollback", "1", "-m", "9002 is down", "--expect-version", "2"), 0, "rolled back: version 3 restores version 1", "")
		expect(t, cp.flotctl(t, "history", "--limit", "1"), 0, "rollback of 1: 9002 is down", "")
		expect(t, cp.flotctl(t, "diff", v1Path), 0, "no changes against version 3", "")

		// Version 3 has version 1's content: the same hash and the same bundle.
		v1Got, v3Got := getVersion(t, cp, "1"), getVersion(t, cp, "3")
		if v3Got.GetInfo().GetHash() != v1Got.GetInfo().GetHash() || v3Got.GetInfo().GetRollbackOf() != 1 {
			t.Errorf("version 3 (hash %s, rollback of %d), want hash %s of version 1", v3Got.GetInfo().GetHash(), v3Got.GetInfo().GetRollbackOf(), v1Got.GetInfo().GetHash())
		}
		if !proto.Equal(bundle.Merge(v3Got.GetFiles()), bundle.Merge(v1Got.GetFiles())) {
			t.Errorf("version 3's content differs from version 1's")
		}
		expect(t, cp.flotctl(t, "get", "--version", "9"), 1, "", "error: version 9 does not exist")
		expect(t, cp.flotctl(t, "rollback", "9", "-m", "x"), 1, "", "error: version 9 does not exist")
	})
	t.Run("unreachable control plane", func(t *testing.T) {
		for _, args := range [][]string{{"history"}, {"agents"}, {"apply", v1Path, "-m", "x"}} {
			expect(t, runFlotctl(t, unreachable, args...), 1, "",
				"error: cannot reach the control plane at "+unreachable+": connection refused\n")
		}
	})
}

// getVersion returns a version as `flotctl get -o json` prints it.
func getVersion(t *testing.T, cp *controlPlane, n string) *adminv1.Version {
	t.Helper()
	r := cp.flotctl(t, "get", "--version", n, "-o", "json")
	if r.code != 0 {
		t.Fatalf("flotctl get --version %s: %s", n, r)
	}
	var v adminv1.Version
	if err := protojson.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatalf("flotctl get -o json: %v\n%s", err, r.stdout)
	}
	return &v
}
