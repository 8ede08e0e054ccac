package rollout

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/flotilla-proxy/flotilla/controlplane/fleet"
	"github.com/flotilla-proxy/flotilla/controlplane/stats"
	"github.com/flotilla-proxy/flotilla/controlplane/store"
	"github.com/flotilla-proxy/flotilla/controlplane/xds"
	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
	configv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/config/v1"
	reportv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/report/v1"
)

// fakeFleet is a fleet whose agents ACK whatever they are assigned at once,
// except the ones in nack, which reject every version but the active one,
// and the ones in pinned, which run the version it says whatever happens
// (as if another rollout had pinned it).
type fakeFleet struct {
	mu     sync.Mutex
	active uint64
	ids    []string
	labels map[string]map[string]string
	nack   map[string]bool
	// nackedAs is the version string a NACK names, when not the version
	// (a type the version keeps unchanged from an earlier one).
	nackedAs string
	pinned   map[string]uint64
	assigns  []*xds.Assignment
	sets     int
}

func newFakeFleet(n int) *fakeFleet {
	f := &fakeFleet{labels: map[string]map[string]string{}, nack: map[string]bool{}, pinned: map[string]uint64{}}
	for i := range n {
		id := fmt.Sprintf("a%02d", i)
		f.ids = append(f.ids, id)
		f.labels[id] = map[string]string{"dc": []string{"ams", "fra"}[i%2]}
	}
	return f
}

// version is what an agent should run: the last assignment covering it wins.
func (f *fakeFleet) version(id string) uint64 {
	if v := f.pinned[id]; v != 0 {
		return v
	}
	for i := len(f.assigns) - 1; i >= 0; i-- {
		if f.assigns[i].Covers(id, f.labels[id]) {
			return f.assigns[i].Version
		}
	}
	return f.active
}

func (f *fakeFleet) Agents(selector map[string]string) []*adminv1.Agent {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*adminv1.Agent
	for _, id := range f.ids {
		ok := true
		for k, v := range selector {
			ok = ok && f.labels[id][k] == v
		}
		if !ok {
			continue
		}
		v := f.version(id)
		a := &adminv1.Agent{NodeId: id, Labels: f.labels[id], ConfigVersion: v}
		if f.nack[id] && v != f.active {
			a.ConfigVersion = f.active
			a.Resources = []*adminv1.ResourceStatus{{Short: "LDS", State: adminv1.SyncState_SYNC_STATE_NACKED,
				LastNack: &adminv1.Nack{Version: cmp.Or(f.nackedAs, fmt.Sprint(v)), Message: "bind: address already in use"}}}
		}
		out = append(out, a)
	}
	return out
}

// Briefs is Agents as the registry's Briefs gives them.
func (f *fakeFleet) Briefs(selector map[string]string) []fleet.Brief {
	var out []fleet.Brief
	for _, a := range f.Agents(selector) {
		b := fleet.Brief{NodeID: a.GetNodeId(), UserAgent: a.GetUserAgent(), Labels: a.GetLabels(), ConfigVersion: a.GetConfigVersion()}
		for _, rs := range a.GetResources() {
			if rs.GetState() == adminv1.SyncState_SYNC_STATE_NACKED {
				b.NackType, b.Nack = rs.GetShort(), rs.GetLastNack()
				break
			}
		}
		out = append(out, b)
	}
	return out
}

func (f *fakeFleet) SetAssignments(as []*xds.Assignment) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.assigns = as
	f.sets++
	return nil
}

// on returns the agents that run version v.
func (f *fakeFleet) on(v uint64) []string {
	var out []string
	for _, a := range f.Agents(nil) {
		if a.GetConfigVersion() == v {
			out = append(out, a.GetNodeId())
		}
	}
	return out
}

// fakeClock is a clock tests move.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

type env struct {
	t     *testing.T
	st    *store.Bolt
	path  string
	fleet *fakeFleet
	clock *fakeClock
	stats *stats.Aggregator // on the fake clock and fleet
	seq   map[string]uint64
	// ackWait is the controller's Options.AckWait.
	ackWait time.Duration
	c       *Controller
}

// load is what one agent reports every 5 seconds.
type load struct{ attempts, failures, requests, http5xx, active uint64 }

// report records one 5s report of agent id, after moving the clock 5s.
func (e *env) report(id string, l load) {
	e.t.Helper()
	e.seq[id]++
	rep := &reportv1.AgentReport{NodeId: id, Labels: e.fleet.labels[id], Sequence: e.seq[id], Period: durationpb.New(5 * time.Second),
		Listeners: []*reportv1.ListenerStats{{Name: "l", DownstreamCxActive: l.active,
			Http: &reportv1.HttpStats{RqTotal: l.requests, Rq_5Xx: l.http5xx, Rq_2Xx: l.requests - l.http5xx}}},
		Clusters: []*reportv1.ClusterStats{{Name: "c", UpstreamCxTotal: l.attempts, UpstreamCxConnectFail: l.failures}}}
	if err := e.stats.Record(rep); err != nil {
		e.t.Fatal(err)
	}
}

func version(port int) []*adminv1.ConfigFile {
	return []*adminv1.ConfigFile{{Path: "v.yaml", Bundle: &configv1.Bundle{Clusters: []*configv1.Cluster{{
		Name: "c", Endpoints: []*configv1.Endpoint{{Address: fmt.Sprintf("192.0.2.1:%d", port)}}}}}}}
}

// newEnv stores versions 1 (active) and 2 (staged) and starts a controller
// on a fleet of n agents.
func newEnv(t *testing.T, n int) *env {
	t.Helper()
	path := filepath.Join(t.TempDir(), "flotilla.db")
	st, err := store.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := context.Background()
	if _, _, err := st.Apply(ctx, store.ApplyParams{Files: version(1)}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Apply(ctx, store.ApplyParams{Files: version(2), Stage: true}); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, st: st, path: path, fleet: newFakeFleet(n), clock: &fakeClock{now: time.Unix(1e9, 0)}, seq: map[string]uint64{}}
	e.stats = stats.NewAggregator(stats.Options{Fleet: e.fleet.Agents, Now: e.clock.Now})
	e.fleet.active = 1
	e.restart()
	return e
}

// restart makes a new controller on the same store, as a restarted control
// plane does.
func (e *env) restart() {
	e.t.Helper()
	c, err := New(context.Background(), Options{
		Store: e.st,
		Fleet: e.fleet,
		Activate: func(ctx context.Context, v uint64) error {
			if err := e.st.SetActive(ctx, v); err != nil {
				return err
			}
			e.fleet.mu.Lock()
			e.fleet.active = v
			e.fleet.mu.Unlock()
			return nil
		},
		Stats:   e.stats,
		Now:     e.clock.Now,
		AckWait: e.ackWait,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.c = c
}

func (e *env) tick() *adminv1.Rollout {
	e.t.Helper()
	if err := e.c.Tick(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	r, err := e.c.Get(context.Background(), 0)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

func (e *env) start(req *adminv1.StartRolloutRequest) *adminv1.Rollout {
	e.t.Helper()
	r, err := e.c.Start(context.Background(), req)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

func TestStepsAssignAGrowingShareThenActivate(t *testing.T) {
	e := newEnv(t, 10)
	r := e.start(&adminv1.StartRolloutRequest{Version: 2, Steps: []uint32{10, 50, 100}, Bake: durationpb.New(time.Minute)})
	if r.GetFromVersion() != 1 || r.GetAssigned() != 1 || r.GetSelected() != 10 {
		t.Fatalf("started %v, want from 1, 1 of 10 assigned", r)
	}
	var prev []string
	for step, want := range []int{1, 5, 10} {
		canaries := e.fleet.on(2)
		if len(canaries) != want {
			t.Fatalf("step %d: %d agents on version 2 (%v), want %d", step+1, len(canaries), canaries, want)
		}
		for _, id := range prev {
			if !slices.Contains(canaries, id) {
				t.Errorf("step %d: %s left version 2; a step only adds agents", step+1, id)
			}
		}
		prev = canaries
		r = e.tick()
		if r.GetPhase() != adminv1.RolloutPhase_ROLLOUT_PHASE_BAKING || r.GetReady() != uint32(want) {
			t.Fatalf("step %d after a tick: %v, want baking with %d ready", step+1, r, want)
		}
		for range 59 { // ticks a second apart add up
			e.clock.add(time.Second)
			if r = e.tick(); int(r.GetStep()) != step {
				t.Fatalf("step %d moved on after %s of a 1m bake", step+1, r.GetBaked().AsDuration())
			}
		}
		e.clock.add(time.Second)
		r = e.tick()
	}
	if r.GetState() != adminv1.RolloutState_ROLLOUT_STATE_COMPLETED {
		t.Fatalf("after the last step: %v, want COMPLETED", r)
	}
	if active, _ := e.st.Active(context.Background()); active != 2 {
		t.Errorf("active version %d after a rollout without selector, want 2", active)
	}
	if len(e.fleet.assigns) != 0 {
		t.Errorf("assignments left after completion: %d", len(e.fleet.assigns))
	}
}

func TestSelectorAssignmentsStay(t *testing.T) {
	e := newEnv(t, 6)
	e.start(&adminv1.StartRolloutRequest{Version: 2, Selector: map[string]string{"dc": "ams"}, Steps: []uint32{100}, Bake: durationpb.New(0)})
	e.tick()
	if r := e.tick(); r.GetState() != adminv1.RolloutState_ROLLOUT_STATE_COMPLETED {
		t.Fatalf("rollout %v, want COMPLETED", r)
	}
	if got, want := e.fleet.on(2), []string{"a00", "a02", "a04"}; !slices.Equal(got, want) {
		t.Errorf("on version 2: %v, want the ams agents %v", got, want)
	}
	if active, _ := e.st.Active(context.Background()); active != 1 {
		t.Errorf("active version %d after a rollout with a selector, want 1", active)
	}
	e.restart()
	if got := e.fleet.on(2); len(got) != 3 {
		t.Errorf("after a restart on version 2: %v, want the 3 ams agents", got)
	}
	// A newer version applied to everyone supersedes the assignments.
	ctx := context.Background()
	if _, _, err := e.st.Apply(ctx, store.ApplyParams{Files: version(3)}); err != nil {
		t.Fatal(err)
	}
	e.fleet.active = 3
	if err := e.c.ActiveChanged(ctx); err != nil {
		t.Fatal(err)
	}
	if got := e.fleet.on(3); len(got) != 6 {
		t.Errorf("after version 3 applied: on it %v, want every agent", got)
	}
}

func TestNACKAbortsAndRollsBack(t *testing.T) {
	for _, tc := range []struct{ name, nackedAs, reason string }{
		{"the version's own", "", "LDS NACKED v2: bind: address already in use"},
		// Version 2 keeps the listeners of version 1, which the agent
		// rejected before the rollout: the reason says so.
		{"kept from an earlier version", "1", "LDS NACKED v2: it keeps LDS unchanged from v1, which "},
	} {
		t.Run(tc.name, func(t *testing.T) { testNACKAbortsAndRollsBack(t, tc.nackedAs, tc.reason) })
	}
}

func testNACKAbortsAndRollsBack(t *testing.T, nackedAs, reason string) {
	e := newEnv(t, 4)
	e.fleet.nackedAs = nackedAs
	for _, id := range e.fleet.ids {
		e.fleet.nack[id] = true
	}
	r := e.start(&adminv1.StartRolloutRequest{Version: 2, Steps: []uint32{25, 100}, Bake: durationpb.New(time.Minute)})
	if r.GetAssigned() != 1 {
		t.Fatalf("first step assigned %d, want 1", r.GetAssigned())
	}
	r = e.tick()
	if r.GetState() != adminv1.RolloutState_ROLLOUT_STATE_ABORTED || !strings.Contains(r.GetReason(), reason) {
		t.Fatalf("after a NACK: %v, want ABORTED with the NACK as reason (%q)", r, reason)
	}
	if got := e.fleet.on(1); len(got) != 4 {
		t.Errorf("on version 1 after the abort: %v, want every agent", got)
	}
	if len(e.fleet.assigns) != 0 {
		t.Errorf("assignments left after the abort: %d", len(e.fleet.assigns))
	}
	// A new rollout may start now.
	e.start(&adminv1.StartRolloutRequest{Version: 2})
}

// cohorts is what each canary and each baseline agent reports.
type cohorts struct{ canary, base load }

// TestAnalysis: the canaries against the baseline over the step's bake,
// from the agents' reports. Before the bake the canaries report for 30s
// (before); during it, they report every 5s, early in the first half and
// late in the second.
func TestAnalysis(t *testing.T) {
	healthy := load{attempts: 100, failures: 1, requests: 100, http5xx: 1, active: 100}
	with := func(l load, f func(*load)) load { f(&l); return l }
	tests := []struct {
		name              string
		req               *adminv1.StartRolloutRequest // Version, Steps and Bake set
		before, early     cohorts
		late              *cohorts // nil: as early
		other             *load    // an agent on version 3, as if another rollout pinned it
		wantReason        string   // "" the step passes
		wantAnalysis      []string
		wantNotInAnalysis []string
	}{
		{name: "healthy", before: cohorts{healthy, healthy}, early: cohorts{healthy, healthy},
			wantAnalysis: []string{"step 1 (25%) over 1m0s: 1 canary against 3 baseline agents on v1",
				"connect failures 1.0% (12 of 1200), baseline 1.0% (36 of 3600)", "5xx 1.0% (12 of 1200)",
				"active connections 100 to 100 (+0.0%), baseline 300 to 300 (+0.0%)"}},
		{name: "connect failures", before: cohorts{healthy, healthy}, early: cohorts{with(healthy, func(l *load) { l.failures = 60 }), healthy},
			wantReason: "analysis: canary connect-failure ratio 60.0% (720 of 1200) is above 5.0% and the baseline's 1.0%"},
		{name: "baseline as bad", before: cohorts{healthy, healthy},
			early: cohorts{with(healthy, func(l *load) { l.failures = 60 }), with(healthy, func(l *load) { l.failures = 70 })}},
		{name: "5xx", before: cohorts{healthy, healthy}, early: cohorts{with(healthy, func(l *load) { l.http5xx = 20 }), healthy},
			wantReason: "analysis: canary 5xx ratio 20.0% (240 of 1200) is above 5.0% and the baseline's 1.0%"},
		// Time span: what the canaries did before the bake is not the
		// bake's (a 1m window over a 10s bake held it)...
		{name: "failures before a short bake", req: &adminv1.StartRolloutRequest{Bake: durationpb.New(10 * time.Second)},
			before: cohorts{with(healthy, func(l *load) { l.failures = 90 }), healthy}, early: cohorts{healthy, healthy},
			wantAnalysis: []string{"over 10s", "connect failures 1.0% (2 of 200)"}},
		// ... and a long bake counts whole (a 1m window saw its last minute).
		{name: "failures early in a long bake", req: &adminv1.StartRolloutRequest{Bake: durationpb.New(6 * time.Minute)},
			before: cohorts{healthy, healthy}, early: cohorts{with(healthy, func(l *load) { l.failures = 30 }), healthy}, late: &cohorts{healthy, healthy},
			wantReason: "analysis: canary connect-failure ratio 15.5% (1116 of 7200) is above 5.0% and the baseline's 1.0%"},
		// Baseline: only the agents on from_version, not one pinned to
		// another version doing worse.
		{name: "baseline is from_version only", before: cohorts{healthy, healthy},
			early:      cohorts{with(healthy, func(l *load) { l.failures = 25 }), with(healthy, func(l *load) { l.failures = 0 })},
			other:      &load{attempts: 100, failures: 90},
			wantReason: "analysis: canary connect-failure ratio 25.0% (300 of 1200) is above 5.0% and the baseline's 0.0%"},
		// Active connections dropping.
		{name: "active connections drop", before: cohorts{healthy, healthy}, early: cohorts{with(healthy, func(l *load) { l.active = 30 }), healthy},
			wantReason: "analysis: canary active connections fell 70.0% (100 to 30), more than 50.0% and than the baseline's (+0.0%)"},
		{name: "fleet-wide quiet", before: cohorts{healthy, healthy},
			early:        cohorts{with(healthy, func(l *load) { l.active = 30 }), with(healthy, func(l *load) { l.active = 20 })},
			wantAnalysis: []string{"active connections 100 to 30 (-70.0%), baseline 300 to 60 (-80.0%)"}},
		{name: "drop under the rollout's ratio", req: &adminv1.StartRolloutRequest{MaxActiveDropRatio: 0.8},
			before: cohorts{healthy, healthy}, early: cohorts{with(healthy, func(l *load) { l.active = 30 }), healthy}},
		{name: "few active connections", before: cohorts{with(healthy, func(l *load) { l.active = 10 }), healthy},
			early:        cohorts{with(healthy, func(l *load) { l.active = 0 }), healthy},
			wantAnalysis: []string{"active connections not judged: 10 at the bake's start, fewer than 20"}},
		// Minimum samples: 1 failure out of 1 attempt is not worth an abort...
		{name: "one failed attempt", req: &adminv1.StartRolloutRequest{Bake: durationpb.New(5 * time.Second)},
			before: cohorts{load{}, healthy}, early: cohorts{load{attempts: 1, failures: 1, requests: 3, http5xx: 3}, healthy},
			wantAnalysis: []string{"connect failures not judged: 1 attempt, fewer than 20", "5xx not judged: 3 requests, fewer than 20",
				"active connections not judged: 0 at the bake's start, fewer than 20"},
			wantNotInAnalysis: []string{"connect failures 100.0%"}},
		// ... unless the rollout says so.
		{name: "one failed attempt judged", req: &adminv1.StartRolloutRequest{Bake: durationpb.New(5 * time.Second), MinSamples: 1},
			before: cohorts{load{}, healthy}, early: cohorts{load{attempts: 1, failures: 1}, healthy},
			wantReason: "analysis: canary connect-failure ratio 100.0% (1 of 1) is above 5.0%"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, 4)
			req := &adminv1.StartRolloutRequest{Bake: durationpb.New(time.Minute)}
			if tt.req != nil {
				req = tt.req
			}
			req.Version, req.Steps = 2, []uint32{25, 100}
			if req.Bake == nil {
				req.Bake = durationpb.New(time.Minute)
			}
			e.start(req)
			canaries := e.fleet.on(2)
			if len(canaries) != 1 {
				t.Fatalf("canaries %v, want 1", canaries)
			}
			var others []string
			for _, id := range e.fleet.ids {
				if !slices.Contains(canaries, id) {
					others = append(others, id)
				}
			}
			if tt.other != nil {
				e.fleet.mu.Lock()
				e.fleet.pinned[others[0]] = 3
				e.fleet.mu.Unlock()
			}
			each := func(c cohorts) {
				e.clock.add(5 * time.Second)
				for _, id := range e.fleet.ids {
					switch {
					case slices.Contains(canaries, id):
						e.report(id, c.canary)
					case tt.other != nil && id == others[0]:
						e.report(id, *tt.other)
					default:
						e.report(id, c.base)
					}
				}
			}
			for range 6 {
				each(tt.before)
			}
			if r := e.tick(); r.GetPhase() != adminv1.RolloutPhase_ROLLOUT_PHASE_BAKING {
				t.Fatalf("rollout %v, want baking", r)
			}
			late := tt.early
			if tt.late != nil {
				late = *tt.late
			}
			n := int(req.GetBake().AsDuration() / (5 * time.Second))
			for i := range n {
				if i < n/2 || n == 1 {
					each(tt.early)
				} else {
					each(late)
				}
			}
			r := e.tick()
			t.Logf("analysis: %s", r.GetAnalysis())
			switch {
			case tt.wantReason == "" && (r.GetState() != adminv1.RolloutState_ROLLOUT_STATE_RUNNING || r.GetStep() != 1):
				t.Errorf("rollout %v, want running step 2", r)
			case tt.wantReason != "" && (r.GetState() != adminv1.RolloutState_ROLLOUT_STATE_ABORTED || !strings.Contains(r.GetReason(), tt.wantReason)):
				t.Errorf("rollout %v, want ABORTED: %s", r, tt.wantReason)
			}
			for _, want := range tt.wantAnalysis {
				if !strings.Contains(r.GetAnalysis(), want) {
					t.Errorf("analysis %q lacks %q", r.GetAnalysis(), want)
				}
			}
			for _, not := range tt.wantNotInAnalysis {
				if strings.Contains(r.GetAnalysis(), not) {
					t.Errorf("analysis %q has %q", r.GetAnalysis(), not)
				}
			}
		})
	}
}

func TestRestartCarriesOn(t *testing.T) {
	e := newEnv(t, 4)
	e.start(&adminv1.StartRolloutRequest{Version: 2, Steps: []uint32{50, 100}, Bake: durationpb.New(time.Minute)})
	e.tick()
	for range 8 { // 40s baked, checkpointed every 5s
		e.clock.add(5 * time.Second)
		e.tick()
	}
	// The control plane stops, and comes back 10 minutes later: the
	// assignments are served again, the time away is not baked.
	e.fleet.SetAssignments(nil)
	e.clock.add(10 * time.Minute)
	e.restart()
	if got := e.fleet.on(2); len(got) != 2 {
		t.Fatalf("after restart on version 2: %v, want the 2 canaries", got)
	}
	r := e.tick()
	if r.GetStep() != 0 || r.GetPhase() != adminv1.RolloutPhase_ROLLOUT_PHASE_BAKING || r.GetBaked().AsDuration() != 40*time.Second {
		t.Fatalf("after restart: %v, want step 1 baking with 40s baked", r)
	}
	e.clock.add(15 * time.Second)
	if r = e.tick(); r.GetStep() != 0 {
		t.Fatalf("moved on after 55s of a 1m bake: %v", r)
	}
	e.clock.add(5 * time.Second)
	if r = e.tick(); r.GetStep() != 1 || r.GetAssigned() != 4 {
		t.Fatalf("after the bake: %v, want step 2 with every agent", r)
	}
}

func TestPauseResumePromoteAbort(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 4)
	e.start(&adminv1.StartRolloutRequest{Version: 2, Steps: []uint32{25, 50, 100}, Bake: durationpb.New(time.Minute)})
	e.tick()
	e.clock.add(30 * time.Second)
	e.tick()
	if _, err := e.c.Pause(ctx, 0); err != nil {
		t.Fatal(err)
	}
	e.clock.add(time.Hour)
	if r := e.tick(); r.GetState() != adminv1.RolloutState_ROLLOUT_STATE_PAUSED || r.GetBaked().AsDuration() != 30*time.Second {
		t.Fatalf("paused: %v, want PAUSED with 30s baked", r)
	}
	if _, err := e.c.Start(ctx, &adminv1.StartRolloutRequest{Version: 2}); !errors.Is(err, ErrConflict) {
		t.Errorf("second Start while one is paused = %v, want ErrConflict", err)
	}
	if _, err := e.c.Resume(ctx, 0); err != nil {
		t.Fatal(err)
	}
	e.clock.add(29 * time.Second)
	if r := e.tick(); r.GetStep() != 0 {
		t.Fatalf("resumed: moved on after 59s baked: %v", r)
	}
	r, err := e.c.Promote(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if r.GetStep() != 2 || len(e.fleet.on(2)) != 4 {
		t.Fatalf("promoted: %v, on version 2: %v; want the last step, every agent", r, e.fleet.on(2))
	}
	e.tick() // every agent ACKed: no bake after a promote
	if r = e.tick(); r.GetState() != adminv1.RolloutState_ROLLOUT_STATE_COMPLETED {
		t.Fatalf("promoted and ACKed: %v, want COMPLETED", r)
	}
	if _, err := e.c.Abort(ctx, 0, ""); !errors.Is(err, ErrConflict) {
		t.Errorf("Abort of a completed rollout = %v, want ErrConflict", err)
	}
	// Abort puts the canaries back.
	if _, _, err := e.st.Apply(ctx, store.ApplyParams{Files: version(3), Stage: true}); err != nil {
		t.Fatal(err)
	}
	e.start(&adminv1.StartRolloutRequest{Version: 3, Steps: []uint32{50, 100}})
	if got := e.fleet.on(3); len(got) != 2 {
		t.Fatalf("on version 3: %v, want 2", got)
	}
	r, err = e.c.Abort(ctx, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	if r.GetState() != adminv1.RolloutState_ROLLOUT_STATE_ABORTED || r.GetReason() != "aborted by an operator" || len(e.fleet.on(2)) != 4 {
		t.Fatalf("aborted: %v, on the active version 2: %v", r, e.fleet.on(2))
	}
	if _, err := e.c.Resume(ctx, 0); !errors.Is(err, ErrConflict) {
		t.Errorf("Resume of an aborted rollout = %v, want ErrConflict", err)
	}
}

func TestStartRefuses(t *testing.T) {
	tests := []struct {
		name string
		req  *adminv1.StartRolloutRequest
		want string
	}{
		{"no version", &adminv1.StartRolloutRequest{}, "version: a rollout needs a version"},
		{"active version", &adminv1.StartRolloutRequest{Version: 1}, "version 1 is already the active version"},
		{"unknown version", &adminv1.StartRolloutRequest{Version: 9}, "version 9"},
		{"step over 100", &adminv1.StartRolloutRequest{Version: 2, Steps: []uint32{10, 101}}, "steps: step 2 is 101%"},
		{"decreasing", &adminv1.StartRolloutRequest{Version: 2, Steps: []uint32{50, 10, 100}}, "steps must increase"},
		{"no 100", &adminv1.StartRolloutRequest{Version: 2, Steps: []uint32{10, 50}}, "it must be 100"},
		{"negative bake", &adminv1.StartRolloutRequest{Version: 2, Bake: durationpb.New(-time.Second)}, "bake: -1s is negative"},
		{"ratio", &adminv1.StartRolloutRequest{Version: 2, MaxConnectFailureRatio: 2}, "max_connect_failure_ratio: 2 is not a ratio"},
		{"drop ratio", &adminv1.StartRolloutRequest{Version: 2, MaxActiveDropRatio: -0.5}, "max_active_drop_ratio: -0.5 is not a ratio"},
		{"negative ack wait", &adminv1.StartRolloutRequest{Version: 2, AckWait: durationpb.New(-time.Second)}, "ack_wait: -1s is negative"},
	}
	e := newEnv(t, 1)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.c.Start(context.Background(), tt.req)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Start = %v, want an error with %q", err, tt.want)
			}
		})
	}
}

// disconnect drops agents from the fleet, as if they crashed.
func (f *fakeFleet) disconnect(ids ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ids = slices.DeleteFunc(f.ids, func(id string) bool { return slices.Contains(ids, id) })
}

// connect adds agents back to the fleet.
func (f *fakeFleet) connect(ids ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ids = append(f.ids, ids...)
	slices.Sort(f.ids)
}

// A canary that drops off (e.g. crashed on the new config) before ACKing
// holds its step, and fails it once the ACK wait (max(30s, bake)) is over:
// the rollout aborts and never activates the version. It used to stop
// counting, so the step passed with nothing checked.
func TestCanaryThatDisconnectsFailsTheStep(t *testing.T) {
	e := newEnv(t, 10)
	e.start(&adminv1.StartRolloutRequest{Version: 2, Steps: []uint32{10, 100}, Bake: durationpb.New(time.Minute)})
	canaries := e.fleet.on(2)
	if len(canaries) != 1 {
		t.Fatalf("canaries %v, want 1", canaries)
	}
	e.fleet.disconnect(canaries...)
	r := e.tick()
	e.clock.add(59 * time.Second)
	r = e.tick()
	if r.GetStep() != 0 || r.GetState() != adminv1.RolloutState_ROLLOUT_STATE_RUNNING || r.GetPhase() != adminv1.RolloutPhase_ROLLOUT_PHASE_WAITING {
		t.Fatalf("step 1 passed without its only canary ever ACKing: %v", r)
	}
	if want := "waiting for " + canaries[0] + " disconnected"; r.GetReason() != want {
		t.Errorf("reason %q, want %q", r.GetReason(), want)
	}
	e.clock.add(time.Second)
	r = e.tick()
	if r.GetState() != adminv1.RolloutState_ROLLOUT_STATE_ABORTED || r.GetStep() != 0 ||
		!strings.Contains(r.GetReason(), "1 of 1 assigned agents do not run v2 after 1m0s: "+canaries[0]+" disconnected") {
		t.Fatalf("after the ACK wait: %v, want step 1 ABORTED naming the canary", r)
	}
	if active, _ := e.st.Active(context.Background()); active != 1 {
		t.Errorf("active version %d, want 1", active)
	}
	e.fleet.connect(canaries...)
	if got := e.fleet.on(2); len(got) != 0 {
		t.Errorf("on version 2 after the abort: %v", got)
	}
}

// The node ids a step assigns are stored with the rollout: agents that
// leave and come back within the ACK wait hold the step, a bake stops while
// one is away and keeps what it baked, and a restart keeps the ids.
func TestAssignedNodesHoldTheStep(t *testing.T) {
	e := newEnv(t, 4)
	r := e.start(&adminv1.StartRolloutRequest{Version: 2, Steps: []uint32{50, 100}, Bake: durationpb.New(time.Minute)})
	canaries := e.fleet.on(2)
	if !slices.Equal(r.GetAssignedNodes(), canaries) || r.GetAssigned() != 2 {
		t.Fatalf("assigned nodes %v (%d), want the canaries %v", r.GetAssignedNodes(), r.GetAssigned(), canaries)
	}
	e.fleet.disconnect(canaries[0])
	e.tick()
	e.clock.add(50 * time.Second)
	if r = e.tick(); r.GetPhase() != adminv1.RolloutPhase_ROLLOUT_PHASE_WAITING {
		t.Fatalf("baking with a canary away: %v", r)
	}
	e.fleet.connect(canaries[0])
	e.tick() // back: the bake starts
	e.clock.add(40 * time.Second)
	if r = e.tick(); r.GetPhase() != adminv1.RolloutPhase_ROLLOUT_PHASE_BAKING || r.GetBaked().AsDuration() != 40*time.Second {
		t.Fatalf("baking: %v, want 40s baked", r)
	}
	e.fleet.disconnect(canaries[1])
	e.clock.add(5 * time.Second)
	if r = e.tick(); r.GetPhase() != adminv1.RolloutPhase_ROLLOUT_PHASE_WAITING || r.GetBaked().AsDuration() != 45*time.Second {
		t.Fatalf("canary gone while baking: %v, want WAITING with 45s baked", r)
	}
	e.clock.add(10 * time.Minute) // restarted while away: the ACK wait starts again
	e.restart()
	if r = e.tick(); !slices.Equal(r.GetAssignedNodes(), canaries) || r.GetPhase() != adminv1.RolloutPhase_ROLLOUT_PHASE_WAITING {
		t.Fatalf("after restart: %v, want the stored canaries, waiting", r)
	}
	e.fleet.connect(canaries[1])
	e.tick()
	e.clock.add(15 * time.Second)
	if r = e.tick(); r.GetStep() != 1 || r.GetAssigned() != 4 || len(r.GetAssignedNodes()) != 4 {
		t.Fatalf("after the rest of the bake: %v, want step 2 with every agent", r)
	}
}

// A rollout with no agent to check is refused, and a step whose agents
// are all gone fails after the ACK wait instead of passing.
func TestNoAgentsNeverPass(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 0)
	if _, err := e.c.Start(ctx, &adminv1.StartRolloutRequest{Version: 2}); !errors.Is(err, ErrNoAgents) || !errors.Is(err, ErrConflict) {
		t.Errorf("Start with no agents = %v, want ErrNoAgents", err)
	}
	e = newEnv(t, 4)
	if _, err := e.c.Start(ctx, &adminv1.StartRolloutRequest{Version: 2, Selector: map[string]string{"dc": "lhr"}}); !errors.Is(err, ErrNoAgents) {
		t.Errorf("Start with a selector no agent matches = %v, want ErrNoAgents", err)
	}
	e.start(&adminv1.StartRolloutRequest{Version: 2, Steps: []uint32{50, 100}, Bake: durationpb.New(10 * time.Second)})
	e.tick()
	e.clock.add(10 * time.Second)
	if r := e.tick(); r.GetStep() != 1 {
		t.Fatalf("step 1 did not pass: %v", r)
	}
	e.fleet.disconnect("a00", "a01", "a02", "a03")
	e.tick()
	e.clock.add(29 * time.Second)
	if r := e.tick(); r.GetState() != adminv1.RolloutState_ROLLOUT_STATE_RUNNING {
		t.Fatalf("before the 30s ACK wait: %v, want RUNNING", r)
	}
	e.clock.add(time.Second)
	if r := e.tick(); r.GetState() != adminv1.RolloutState_ROLLOUT_STATE_ABORTED || !strings.Contains(r.GetReason(), "4 of 4 assigned agents do not run v2 after 30s") {
		t.Fatalf("every agent gone: %v, want ABORTED after 30s", r)
	}
	if active, _ := e.st.Active(ctx); active != 1 {
		t.Errorf("active version %d, want 1", active)
	}
}

// A version made active around a rollout (apply or rollback that is not
// staged) is not reverted when the rollout completes: the rollout aborts.
func TestCompleteDoesNotRevertANewerActiveVersion(t *testing.T) {
	e := newEnv(t, 4)
	ctx := context.Background()
	e.start(&adminv1.StartRolloutRequest{Version: 2, Steps: []uint32{50, 100}, Bake: durationpb.New(time.Minute)})
	info, _, err := e.st.Apply(ctx, store.ApplyParams{Files: version(3)})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.st.SetActive(ctx, info.GetNumber()); err != nil {
		t.Fatal(err)
	}
	e.fleet.mu.Lock()
	e.fleet.active = info.GetNumber()
	e.fleet.mu.Unlock()
	if err := e.c.ActiveChanged(ctx); err != nil {
		t.Fatal(err)
	}
	var r *adminv1.Rollout
	for range 8 {
		e.tick()
		e.clock.add(2 * time.Minute)
	}
	r = e.tick()
	active, _ := e.st.Active(ctx)
	if active != info.GetNumber() {
		t.Errorf("the rollout's completion made v%d active over the newer applied v%d", active, info.GetNumber())
	}
	if r.GetState() != adminv1.RolloutState_ROLLOUT_STATE_ABORTED ||
		!strings.Contains(r.GetReason(), "version 3 became active during the rollout (it started from 1): not activating v2") {
		t.Errorf("rollout %v, want ABORTED with the reason", r)
	}
}

// The ACK wait is the rollout's when it sets one, else the controller's
// Options.AckWait, else max(30s, bake).
func TestAckWait(t *testing.T) {
	tests := []struct {
		name          string
		rollout, opts time.Duration
		want          time.Duration
	}{
		{"rollout's", 10 * time.Second, 0, 10 * time.Second},
		{"rollout's over the controller's", 10 * time.Second, 20 * time.Second, 10 * time.Second},
		{"controller's", 0, 20 * time.Second, 20 * time.Second},
		{"the bake", 0, 0, time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, 10)
			e.ackWait = tt.opts
			e.restart()
			req := &adminv1.StartRolloutRequest{Version: 2, Steps: []uint32{10, 100}, Bake: durationpb.New(time.Minute)}
			if tt.rollout != 0 {
				req.AckWait = durationpb.New(tt.rollout)
			}
			if r := e.start(req); r.GetAckWait().AsDuration() != tt.rollout {
				t.Errorf("stored ack_wait %v, want %v", r.GetAckWait(), tt.rollout)
			}
			e.fleet.disconnect(e.fleet.on(2)...)
			e.tick()
			e.clock.add(tt.want - time.Second)
			if r := e.tick(); r.GetState() != adminv1.RolloutState_ROLLOUT_STATE_RUNNING {
				t.Fatalf("a second before the ACK wait: %v, want RUNNING", r)
			}
			e.clock.add(time.Second)
			if r := e.tick(); r.GetState() != adminv1.RolloutState_ROLLOUT_STATE_ABORTED ||
				!strings.Contains(r.GetReason(), fmt.Sprintf("do not run v2 after %s", tt.want)) {
				t.Fatalf("after the ACK wait: %v, want ABORTED after %s", r, tt.want)
			}
		})
	}
}

// After a restart the analysis counts from the resume of the bake: the
// controller has lost the counts of the bake's start (and a restarted
// control plane's aggregator those of before).
func TestAnalysisAfterRestartCountsFromTheResume(t *testing.T) {
	e := newEnv(t, 4)
	e.start(&adminv1.StartRolloutRequest{Version: 2, Steps: []uint32{25, 100}, Bake: durationpb.New(time.Minute)})
	canary := e.fleet.on(2)[0]
	reports := func(n int, canaryLoad load) {
		for range n {
			e.clock.add(5 * time.Second)
			for _, id := range e.fleet.ids {
				if id == canary {
					e.report(id, canaryLoad)
				} else {
					e.report(id, load{attempts: 100, requests: 100, active: 50})
				}
			}
			e.tick()
		}
	}
	e.tick()
	reports(8, load{attempts: 100, failures: 50, requests: 100, active: 50}) // 40s baked, failing
	e.restart()
	e.tick() // the bake resumes
	reports(4, load{attempts: 100, requests: 100, active: 50})
	r := e.tick()
	if r.GetState() != adminv1.RolloutState_ROLLOUT_STATE_RUNNING || r.GetStep() != 1 {
		t.Fatalf("rollout %v, want step 2: the failures were before the restart", r)
	}
	if want := "over 20s: 1 canary against 3 baseline agents on v1; connect failures 0.0% (0 of 400)"; !strings.Contains(r.GetAnalysis(), want) {
		t.Errorf("analysis %q lacks %q", r.GetAnalysis(), want)
	}
}
