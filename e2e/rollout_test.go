package e2e

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
)

// stage applies the config at path with --stage and returns the version.
func (cp *controlPlane) stage(t *testing.T, path, message string) uint64 {
	t.Helper()
	r := cp.flotctl(t, "apply", path, "-m", message, "--stage", "-o", "json")
	if r.code != 0 {
		t.Fatalf("flotctl apply --stage %s: %s", path, r)
	}
	var resp adminv1.ApplyResponse
	if err := protojson.Unmarshal([]byte(r.stdout), &resp); err != nil {
		t.Fatalf("flotctl apply -o json: %v\n%s", err, r.stdout)
	}
	if resp.GetActive() == resp.GetVersion().GetNumber() {
		t.Fatalf("staged version %d is active", resp.GetActive())
	}
	return resp.GetVersion().GetNumber()
}

// rollout returns `flotctl rollout status -o json`.
func (cp *controlPlane) rollout(t *testing.T) (*adminv1.Rollout, error) {
	t.Helper()
	r := cp.flotctl(t, "rollout", "status", "-o", "json")
	if r.code != 0 {
		return nil, fmt.Errorf("flotctl rollout status: %s", r)
	}
	var ro adminv1.Rollout
	if err := protojson.Unmarshal([]byte(r.stdout), &ro); err != nil {
		return nil, fmt.Errorf("flotctl rollout status -o json: %v\n%s", err, r.stdout)
	}
	return &ro, nil
}

// backends returns, per agent id, which backend answers through its listener.
func (f *fleet) backends() (map[string]string, error) {
	out := map[string]string{}
	for _, a := range f.agents {
		got, err := echoOnce(f.ports[a.id], "ping")
		if err != nil {
			return nil, fmt.Errorf("through %s: %w", a.id, err)
		}
		out[a.id], _, _ = strings.Cut(got, ":")
	}
	return out, nil
}

// split returns a condition that holds when exactly n agents answer from
// backend id and the others from other.
func (f *fleet) split(n int, id, other string, canaries *[]string) func() error {
	return func() error {
		got, err := f.backends()
		if err != nil {
			return err
		}
		var on []string
		for a, b := range got {
			switch b {
			case id:
				on = append(on, a)
			case other:
			default:
				return fmt.Errorf("%s answers from %q", a, b)
			}
		}
		if len(on) != n {
			return fmt.Errorf("%d agents on %s (%v), want %d", len(on), id, got, n)
		}
		slices.Sort(on)
		if canaries != nil {
			*canaries = on
		}
		return nil
	}
}

// TestRolloutOneThenAll: a staged version is served to nobody; a rollout
// with steps 34,100 serves it to 1 agent of 3, then, after the bake, to all
// of them, and makes it the active version.
func TestRolloutOneThenAll(t *testing.T) {
	f := startFleet(t, 3)
	cp := f.cp
	b2 := startBackend(t, "b2")
	cfg := f.cfg
	cfg.clusters = map[string][]string{"echo": {b2.addr}}
	if v := cp.stage(t, cfg.write(t, "v2.yaml"), "to b2"); v != 2 {
		t.Fatalf("staged version %d, want 2", v)
	}
	holdsFor(t, time.Second, "every agent on b1 after a staged apply", f.split(0, "b2", "b1", nil))

	r := cp.flotctl(t, "rollout", "start", "2", "--steps", "34,100", "--bake", "4s")
	if r.code != 0 || !strings.Contains(r.stdout, "rollout 1 started: version 2 (from 1), steps 34%,100%, bake 4s") {
		t.Fatalf("flotctl rollout start: %s", r)
	}
	var canaries []string
	waitFor(t, convergeTimeout, "one canary on b2", f.split(1, "b2", "b1", &canaries))
	ro, err := cp.rollout(t)
	if err != nil {
		t.Fatal(err)
	}
	if ro.GetStep() != 0 || ro.GetAssigned() != 1 || ro.GetSelected() != 3 {
		t.Errorf("first step: %v, want 1 of 3 agents assigned", ro)
	}
	t.Logf("canary %v", canaries)

	r = cp.flotctl(t, "rollout", "status", "-w")
	if r.code != 0 {
		t.Fatalf("flotctl rollout status -w: %s", r)
	}
	t.Logf("flotctl rollout status -w:\n%s", r.stdout)
	for _, want := range []string{"rollout 1 v2: RUNNING step 2/2 (100%)", "rollout 1 v2: COMPLETED step 2/2 (100%): version 2 is active"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("status -w lacks %q", want)
		}
	}
	waitFor(t, convergeTimeout, "every agent on b2", f.split(3, "b2", "b1", nil))
	if r := cp.flotctl(t, "wait", "--timeout", "30s"); r.code != 0 || !strings.Contains(r.stdout, "version 2") {
		t.Errorf("flotctl wait after the rollout: %s", r)
	}
	r = cp.flotctl(t, "rollout", "list")
	if f := strings.Fields(lineWith(r.stdout, "1 ")); r.code != 0 || len(f) < 5 || f[1] != "2" || f[4] != "COMPLETED" {
		t.Errorf("flotctl rollout list: %s", r)
	}
	if n, err := cpMetric(cp, `flotilla_controlplane_rollouts{state="COMPLETED"}`); err != nil || n != 1 {
		t.Errorf("completed rollouts on /metrics = %v (%v), want 1", n, err)
	}
}

// TestRolloutNACKRollsBack: a version that moves every listener to a taken
// port is NACKed by the first canary; the rollout stops at its first step
// by itself, and the canary is back on version 1, serving.
func TestRolloutNACKRollsBack(t *testing.T) {
	f := startFleet(t, 3)
	cp := f.cp
	cfg := f.cfg
	cfg.listeners = nil
	for _, l := range f.cfg.listeners {
		busy, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { busy.Close() })
		l.address = busy.Addr().String()
		cfg.listeners = append(cfg.listeners, l)
	}
	cp.stage(t, cfg.write(t, "v2.yaml"), "every listener to a taken port")
	r := cp.flotctl(t, "rollout", "start", "2", "--steps", "34,100", "--bake", "1s", "-w")
	if r.code != 1 || !strings.Contains(r.stderr, "rollout 1 of version 2 aborted at step 1: ") ||
		!strings.Contains(r.stderr, "LDS NACKED v2: ") || !strings.Contains(r.stderr, "address already in use") {
		t.Fatalf("flotctl rollout start -w of a version the agents NACK: %s", r)
	}
	t.Logf("flotctl rollout start -w:\n%s%s", r.stdout, r.stderr)
	_, reason, _ := strings.Cut(r.stderr, "aborted at step 1: ")
	canary, _, _ := strings.Cut(reason, ":")
	if !slices.Contains(f.nodes(), canary) {
		t.Fatalf("abort reason %q does not start with an agent", reason)
	}
	if r := cp.flotctl(t, "wait", "1", "-l", "node="+canary, "--timeout", "30s"); r.code != 0 {
		t.Errorf("flotctl wait 1 for the canary %s: %s", canary, r)
	}
	waitFor(t, convergeTimeout, "every agent on version 1", func() error {
		resp, err := cp.agents(t)
		if err != nil {
			return err
		}
		for _, a := range resp.GetAgents() {
			if a.GetConfigVersion() != 1 {
				return fmt.Errorf("%s runs version %d", a.GetNodeId(), a.GetConfigVersion())
			}
			for _, rs := range a.GetResources() {
				if a.GetNodeId() != canary && rs.GetLastNack() != nil {
					return fmt.Errorf("%s, not a canary, NACKed %s", a.GetNodeId(), rs.GetShort())
				}
			}
		}
		return nil
	})
	waitFor(t, convergeTimeout, "every agent on b1", f.split(0, "b2", "b1", nil))
	ro, err := cp.rollout(t)
	if err != nil {
		t.Fatal(err)
	}
	if ro.GetState() != adminv1.RolloutState_ROLLOUT_STATE_ABORTED || ro.GetStep() != 0 {
		t.Errorf("rollout %v, want ABORTED at step 1", ro)
	}
}

// TestRolloutSurvivesRestart: the control plane restarts while the first
// step bakes; it serves the canary the new version again, finishes the
// bake and completes the rollout.
func TestRolloutSurvivesRestart(t *testing.T) {
	f := startFleet(t, 3)
	cp := f.cp
	b2 := startBackend(t, "b2")
	cfg := f.cfg
	cfg.clusters = map[string][]string{"echo": {b2.addr}}
	cp.stage(t, cfg.write(t, "v2.yaml"), "to b2")
	if r := cp.flotctl(t, "rollout", "start", "2", "--steps", "34,100", "--bake", "12s"); r.code != 0 {
		t.Fatalf("flotctl rollout start: %s", r)
	}
	var canaries []string
	waitFor(t, convergeTimeout, "one canary on b2", f.split(1, "b2", "b1", &canaries))
	waitFor(t, convergeTimeout, "the first step to bake", func() error {
		ro, err := cp.rollout(t)
		if err != nil {
			return err
		}
		if ro.GetPhase() != adminv1.RolloutPhase_ROLLOUT_PHASE_BAKING {
			return fmt.Errorf("rollout %v", ro)
		}
		return nil
	})
	cp.proc.stop(t)
	cp.proc.killed = true
	cp.start(t)
	ro, err := cp.rollout(t)
	if err != nil {
		t.Fatal(err)
	}
	if ro.GetState() != adminv1.RolloutState_ROLLOUT_STATE_RUNNING || ro.GetStep() != 0 {
		t.Fatalf("after the restart: %v, want running, step 1", ro)
	}
	holdsFor(t, 2*time.Second, "the canary on b2, the others on b1, after the restart", f.split(1, "b2", "b1", nil))
	if r := cp.flotctl(t, "rollout", "status", "-w"); r.code != 0 {
		t.Fatalf("flotctl rollout status -w after the restart: %s", r)
	}
	waitFor(t, convergeTimeout, "every agent on b2", f.split(3, "b2", "b1", nil))
}

// TestRolloutAnalysisAborts: version 2 points the cluster at a dead
// backend. Under traffic through every agent, the canary's connect failures
// (reported to the control plane) are well above the threshold and the
// baseline's, so the analysis after the first bake aborts the rollout and
// the canary is back on b1.
func TestRolloutAnalysisAborts(t *testing.T) {
	f := startFleet(t, 3)
	cp := f.cp
	cfg := f.cfg
	cfg.clusters = map[string][]string{"echo": {freeAddr(t)}} // nothing listens there
	cp.stage(t, cfg.write(t, "v2.yaml"), "to a dead backend")

	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // traffic through every agent, failures and all
		defer close(done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, a := range f.agents {
				echoOnce(f.ports[a.id], "ping")
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	defer func() { close(stop); <-done }()

	r := cp.flotctl(t, "rollout", "start", "2", "--steps", "34,100", "--bake", "15s", "--max-connect-failure-ratio", "0.2", "-w")
	t.Logf("flotctl rollout start -w:\n%s%s", r.stdout, r.stderr)
	if r.code != 1 || !strings.Contains(r.stderr, "aborted at step 1: analysis: canary connect-failure ratio") ||
		!strings.Contains(r.stderr, "is above 20.0% and the baseline's 0.0%") {
		t.Fatalf("flotctl rollout start -w of a version with a dead backend: %s", r)
	}
	// The analysis covered the bake, the canary against the two agents on v1.
	if !strings.Contains(r.stdout, "analysis: step 1 (34%) over ") || !strings.Contains(r.stdout, ": 1 canary against 2 baseline agents on v1; connect failures ") {
		t.Errorf("flotctl rollout start -w does not show the analysis: %s", r)
	}
	waitFor(t, convergeTimeout, "every agent on b1", f.split(0, "b2", "b1", nil))
	if r := cp.flotctl(t, "wait", "1", "--timeout", "30s"); r.code != 0 {
		t.Errorf("flotctl wait 1 after the abort: %s", r)
	}
}

// TestRolloutPausePromote: flotctl rollout pause, resume and promote on a
// rollout with a long bake: promote serves every agent now and completes
// once they all ACK.
func TestRolloutPausePromote(t *testing.T) {
	f := startFleet(t, 3)
	cp := f.cp
	b2 := startBackend(t, "b2")
	cfg := f.cfg
	cfg.clusters = map[string][]string{"echo": {b2.addr}}
	cp.stage(t, cfg.write(t, "v2.yaml"), "to b2")
	if r := cp.flotctl(t, "rollout", "start", "2", "--steps", "34,100", "--bake", "1h"); r.code != 0 {
		t.Fatalf("flotctl rollout start: %s", r)
	}
	waitFor(t, convergeTimeout, "one canary on b2", f.split(1, "b2", "b1", nil))
	for _, tc := range []struct{ verb, want string }{{"pause", "PAUSED, step 1/2"}, {"resume", "RUNNING, step 1/2"}, {"promote", "RUNNING, step 2/2 (100%)"}} {
		if r := cp.flotctl(t, "rollout", tc.verb); r.code != 0 || !strings.Contains(r.stdout, tc.want) {
			t.Fatalf("flotctl rollout %s: %s", tc.verb, r)
		}
	}
	if r := cp.flotctl(t, "rollout", "status", "-w", "--timeout", "30s"); r.code != 0 {
		t.Fatalf("flotctl rollout status -w after promote: %s", r)
	}
	waitFor(t, convergeTimeout, "every agent on b2", f.split(3, "b2", "b1", nil))
	if r := cp.flotctl(t, "rollout", "abort"); r.code != 1 || !strings.Contains(r.stderr, "cannot abort rollout 1: it is COMPLETED") {
		t.Errorf("flotctl rollout abort of a completed rollout: %s", r)
	}
}
