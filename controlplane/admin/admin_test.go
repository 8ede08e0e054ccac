package admin

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/flotilla-proxy/flotilla/controlplane/store"
	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
	configv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/config/v1"
)

// recorder is a Publisher that remembers what it was given.
type recorder struct{ published []uint64 }

func (r *recorder) SetVersion(n uint64, _ []*adminv1.ConfigFile) error {
	r.published = append(r.published, n)
	return nil
}
func (r *recorder) Agents(map[string]string) []*adminv1.Agent { return nil }
func (r *recorder) Check([]*adminv1.ConfigFile) error         { return nil }

func bundleFiles(endpoint string) []*adminv1.ConfigFile {
	return []*adminv1.ConfigFile{{Path: "a.yaml", Bundle: &configv1.Bundle{
		Listeners: []*configv1.Listener{{Name: "l", Address: "127.0.0.1:7000", Tcp: &configv1.TcpProxy{Cluster: "c"}}},
		Clusters:  []*configv1.Cluster{{Name: "c", Endpoints: []*configv1.Endpoint{{Address: endpoint}}}},
	}}}
}

func u64(v uint64) *uint64 { return &v }

func open(t *testing.T, path string) store.Store {
	t.Helper()
	st, err := store.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func TestApplyRollbackAndRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "flotilla.db")
	st := open(t, path)
	pub := &recorder{}
	svc, err := New(ctx, st, pub, nil)
	if err != nil {
		t.Fatal(err)
	}

	steps := []struct {
		name      string
		req       *adminv1.ApplyRequest
		code      codes.Code
		want      uint64
		unchanged bool
	}{
		{"first", &adminv1.ApplyRequest{Files: bundleFiles("127.0.0.1:9001"), Message: "one", ExpectVersion: u64(0)}, codes.OK, 1, false},
		{"same content", &adminv1.ApplyRequest{Files: bundleFiles("127.0.0.1:9001")}, codes.OK, 1, true},
		{"dry run", &adminv1.ApplyRequest{Files: bundleFiles("127.0.0.1:9002"), DryRun: true}, codes.OK, 2, false},
		{"second", &adminv1.ApplyRequest{Files: bundleFiles("127.0.0.1:9002"), ExpectVersion: u64(1)}, codes.OK, 2, false},
		{"stale expect", &adminv1.ApplyRequest{Files: bundleFiles("127.0.0.1:9003"), ExpectVersion: u64(1)}, codes.FailedPrecondition, 0, false},
		{"invalid", &adminv1.ApplyRequest{Files: bundleFiles("not-an-address")}, codes.InvalidArgument, 0, false},
	}
	for _, s := range steps {
		resp, err := svc.Apply(ctx, s.req)
		if status.Code(err) != s.code {
			t.Fatalf("%s: code %v (%v), want %v", s.name, status.Code(err), err, s.code)
		}
		if err != nil {
			continue
		}
		if resp.GetVersion().GetNumber() != s.want || resp.GetUnchanged() != s.unchanged {
			t.Fatalf("%s: got version %d unchanged=%v, want %d unchanged=%v", s.name,
				resp.GetVersion().GetNumber(), resp.GetUnchanged(), s.want, s.unchanged)
		}
	}
	if _, err := svc.Apply(ctx, &adminv1.ApplyRequest{Files: bundleFiles("bad")}); err == nil ||
		!strings.Contains(status.Convert(err).Message(), "a.yaml: clusters[0].endpoints[0]") {
		t.Fatalf("validation error does not name file and field: %v", err)
	}
	// Only stored versions were published, in order; dry runs and no-ops were not.
	if got := pub.published; len(got) != 2 || got[0] != 1 || got[1] != 2 {
		t.Fatalf("published %v, want [1 2]", got)
	}

	rb, err := svc.Rollback(ctx, &adminv1.RollbackRequest{Number: 1, Author: "ops"})
	if err != nil {
		t.Fatal(err)
	}
	if rb.GetVersion().GetNumber() != 3 || rb.GetVersion().GetRollbackOf() != 1 {
		t.Fatalf("rollback stored %v", rb.GetVersion())
	}
	v1, _ := svc.GetVersion(ctx, &adminv1.GetVersionRequest{Number: 1})
	v3, _ := svc.GetVersion(ctx, &adminv1.GetVersionRequest{})
	if v1.GetVersion().GetInfo().GetHash() != v3.GetVersion().GetInfo().GetHash() {
		t.Fatal("rollback content differs from the version it restores")
	}
	if _, err := svc.Rollback(ctx, &adminv1.RollbackRequest{Number: 1}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("rollback to the latest content: %v, want FailedPrecondition", err)
	}
	if _, err := svc.Rollback(ctx, &adminv1.RollbackRequest{Number: 42}); status.Code(err) != codes.NotFound {
		t.Fatalf("rollback to a missing version: %v, want NotFound", err)
	}
	hist, _ := svc.ListVersions(ctx, &adminv1.ListVersionsRequest{})
	if len(hist.GetVersions()) != 3 || hist.GetVersions()[0].GetNumber() != 3 {
		t.Fatalf("history = %v", hist.GetVersions())
	}

	// A restarted control plane publishes the latest version at once.
	st.Close()
	pub2 := &recorder{}
	if _, err := New(ctx, open(t, path), pub2, nil); err != nil {
		t.Fatal(err)
	}
	if len(pub2.published) != 1 || pub2.published[0] != 3 {
		t.Fatalf("after restart published %v, want [3]", pub2.published)
	}
}

// fakeRollouts is a Rollouts whose live rollout a test sets.
type fakeRollouts struct {
	Rollouts // the methods a test does not call
	live     *adminv1.Rollout
	changed  int
}

func (f *fakeRollouts) Live(context.Context) (*adminv1.Rollout, error) { return f.live, nil }
func (f *fakeRollouts) ActiveChanged(context.Context) error            { f.changed++; return nil }

// While a rollout is running or paused, an apply that is not staged and a
// rollback are refused: the rollout's completion would revert them.
func TestApplyAndRollbackRefusedDuringRollout(t *testing.T) {
	ctx := context.Background()
	st := open(t, filepath.Join(t.TempDir(), "flotilla.db"))
	pub := &recorder{}
	svc, err := New(ctx, st, pub, nil)
	if err != nil {
		t.Fatal(err)
	}
	ro := &fakeRollouts{}
	svc.SetRollouts(ro)
	if _, err := svc.Apply(ctx, &adminv1.ApplyRequest{Files: bundleFiles("127.0.0.1:9001")}); err != nil {
		t.Fatal(err)
	}
	running := &adminv1.Rollout{Id: 7, Version: 2, State: adminv1.RolloutState_ROLLOUT_STATE_RUNNING}
	paused := &adminv1.Rollout{Id: 7, Version: 2, State: adminv1.RolloutState_ROLLOUT_STATE_PAUSED}
	tests := []struct {
		name string
		live *adminv1.Rollout
		call func() error
		code codes.Code
		msg  string
	}{
		{"apply while running", running, func() error {
			_, err := svc.Apply(ctx, &adminv1.ApplyRequest{Files: bundleFiles("127.0.0.1:9002")})
			return err
		}, codes.FailedPrecondition, "rollout 7 of version 2 is running: abort or promote it first, or apply with --stage"},
		{"apply while paused", paused, func() error {
			_, err := svc.Apply(ctx, &adminv1.ApplyRequest{Files: bundleFiles("127.0.0.1:9002")})
			return err
		}, codes.FailedPrecondition, "rollout 7 of version 2 is paused: abort or promote it first, or apply with --stage"},
		{"rollback while running", running, func() error {
			_, err := svc.Rollback(ctx, &adminv1.RollbackRequest{Number: 1})
			return err
		}, codes.FailedPrecondition, "rollout 7 of version 2 is running: abort or promote it first"},
		{"dry run while running", running, func() error {
			_, err := svc.Apply(ctx, &adminv1.ApplyRequest{Files: bundleFiles("127.0.0.1:9002"), DryRun: true})
			return err
		}, codes.OK, ""},
		{"staged apply while running", running, func() error {
			_, err := svc.Apply(ctx, &adminv1.ApplyRequest{Files: bundleFiles("127.0.0.1:9002"), Stage: true})
			return err
		}, codes.OK, ""},
		{"apply after the rollout", nil, func() error {
			_, err := svc.Apply(ctx, &adminv1.ApplyRequest{Files: bundleFiles("127.0.0.1:9003")})
			return err
		}, codes.OK, ""},
		{"rollback after the rollout", nil, func() error {
			_, err := svc.Rollback(ctx, &adminv1.RollbackRequest{Number: 1})
			return err
		}, codes.OK, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ro.live = tt.live
			err := tt.call()
			if status.Code(err) != tt.code || (tt.msg != "" && status.Convert(err).Message() != tt.msg) {
				t.Errorf("code %v (%v), want %v %q", status.Code(err), err, tt.code, tt.msg)
			}
		})
	}
	// Refused calls stored and published nothing: v1, staged v2 (not
	// published), v3, v4 (the rollback).
	if got := pub.published; !slices.Equal(got, []uint64{1, 3, 4}) {
		t.Errorf("published %v, want [1 3 4]", got)
	}
	if ro.changed != 3 { // v1, v3, v4
		t.Errorf("ActiveChanged called %d times, want 3", ro.changed)
	}
}
