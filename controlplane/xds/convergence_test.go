package xds

import (
	"math"
	"slices"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flotilla-proxy/flotilla/controlplane/fleet"
	"github.com/flotilla-proxy/flotilla/controlplane/stats"
)

// observers tells several fleet.Observers what the registry sees.
type observers []fleet.Observer

var _ fleet.Observer = observers{}

func (os observers) Pushed(node, typeURL, version string) {
	for _, o := range os {
		o.Pushed(node, typeURL, version)
	}
}

func (os observers) Answered(node, typeURL, version string, nack bool) {
	for _, o := range os {
		o.Answered(node, typeURL, version, nack)
	}
}

func (os observers) Converged(node string, labels map[string]string, version uint64, opened, moved time.Time) {
	for _, o := range os {
		o.Converged(node, labels, version, opened, moved)
	}
}

// convergenceCount is how many times the convergence histogram in reg was
// observed.
func convergenceCount(t *testing.T, reg *prometheus.Registry) uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "flotilla_controlplane_proxy_convergence_seconds" {
			return mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	t.Fatal("no convergence histogram")
	return 0
}

// TestConvergenceObservedOncePerPush: the convergence histogram is observed
// once per agent and version pushed to it while connected — not per type,
// not for the agent's first config (connected after the version was
// published, or reconnected), not for a re-ACK, not again when a rollout
// completes on the version its canaries run; a pinned version is observed
// when an assignment moves the agent to it, and so is the active version
// when an aborted rollout moves it back.
func TestConvergenceObservedOncePerPush(t *testing.T) {
	m := stats.NewMetrics(nil)
	reg := prometheus.NewRegistry()
	if err := m.Register(reg); err != nil {
		t.Fatal(err)
	}
	obs := &observer{}
	s, conn := startServer(t, Options{Observer: observers{m, obs}})
	publish := func(n uint64, port int, ep string) {
		t.Helper()
		m.VersionPublished(n) // as the control plane's publisher does
		if err := s.SetVersion(n, files(port, nil, ep)); err != nil {
			t.Fatal(err)
		}
	}
	ams := map[string]string{"dc": "ams"}
	// ack receives the responses of the given types and versions, in order, and ACKs them.
	ack := func(a *adsClient, tvs ...[2]string) {
		t.Helper()
		for _, tv := range tvs {
			r := a.next(tv[0], tv[1])
			var names []string
			if tv[0] == resource.EndpointType {
				names = []string{"c"}
			}
			a.send(tv[0], tv[1], r.GetNonce(), names, "")
		}
	}
	// converged waits for the registry to report the agent's convergence on
	// version: every call before it on the stream was made by then.
	converged := func(want ...string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for got := obs.convergedList(); !slices.Equal(got, want); got = obs.convergedList() {
			if time.Now().After(deadline) {
				t.Fatalf("the registry reported convergences %q, want %q", got, want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	cds, eds, lds := resource.ClusterType, resource.EndpointType, resource.ListenerType

	// Version 1 is published before the agent connects: its first config.
	publish(1, 7401, "127.0.0.1:9001")
	a := newADS(t, conn, node("a1", ams))
	a.subscribe()
	a.converge("1")
	converged("a1 1")
	if n := convergenceCount(t, reg); n != 0 {
		t.Fatalf("%d observations after the agent's first config, want 0", n)
	}

	// Version 2 changes the endpoints: one push, one observation.
	publish(2, 7401, "127.0.0.1:9002")
	r := a.next(eds, "2")
	a.send(eds, "2", r.GetNonce(), []string{"c"}, "")
	a.send(eds, "2", r.GetNonce(), []string{"c"}, "") // ACKed twice
	converged("a1 1", "a1 2")

	// The agent reconnects: version 2 is its first config on the new stream.
	a.stream.CloseSend()
	waitFor(t, "a1's stream to close", func() bool { return len(s.Agents(nil)) == 0 })
	a = newADS(t, conn, node("a1", ams))
	a.subscribe()
	ack(a, [2]string{cds, "1"}, [2]string{eds, "2"}, [2]string{lds, "1"})
	converged("a1 1", "a1 2", "a1 2")
	if n := convergenceCount(t, reg); n != 1 {
		t.Fatalf("%d observations after version 2 and a reconnect, want 1", n)
	}

	// A rollout pins version 3 (a new listener port) on the agent: observed
	// from the assignment, although version 3 was never published.
	as := &Assignment{Version: 3, Files: files(7403, nil, "127.0.0.1:9002"), Selector: ams, Salt: "r1", Threshold: math.MaxUint64}
	if err := s.SetAssignments([]*Assignment{as}); err != nil {
		t.Fatal(err)
	}
	// Only the listeners differ from what the agent runs: only LDS is pushed.
	ack(a, [2]string{lds, "3"})
	converged("a1 1", "a1 2", "a1 2", "a1 3")
	if n := convergenceCount(t, reg); n != 2 {
		t.Fatalf("%d observations after the canary's version 3, want 2", n)
	}
	// The rollout completes (as the rollout controller does it: activate,
	// then drop the assignment): the agent joins its labels' group, whose
	// snapshot now holds version 3 with the same version names as the
	// canaries' snapshot. Nothing is pushed; it runs nothing new.
	publish(3, 7403, "127.0.0.1:9002")
	if err := s.SetAssignments(nil); err != nil {
		t.Fatal(err)
	}
	// Version 4 (new endpoints) shows that all the ACKs before it were seen.
	publish(4, 7403, "127.0.0.1:9004")
	ack(a, [2]string{eds, "4"})
	converged("a1 1", "a1 2", "a1 2", "a1 3", "a1 4")
	if n := convergenceCount(t, reg); n != 3 {
		t.Fatalf("%d observations after the rollout of version 3 completed and version 4, want 3", n)
	}

	// A rollout of version 5 is aborted: the canary goes back to version 4,
	// which is pushed to it again (observed from the abort).
	as = &Assignment{Version: 5, Files: files(7405, nil, "127.0.0.1:9005"), Selector: ams, Salt: "r2", Threshold: math.MaxUint64}
	if err := s.SetAssignments([]*Assignment{as}); err != nil {
		t.Fatal(err)
	}
	ack(a, [2]string{eds, "5"}, [2]string{lds, "5"})
	converged("a1 1", "a1 2", "a1 2", "a1 3", "a1 4", "a1 5")
	if err := s.SetAssignments(nil); err != nil {
		t.Fatal(err)
	}
	ack(a, [2]string{eds, "4"}, [2]string{lds, "3"})
	converged("a1 1", "a1 2", "a1 2", "a1 3", "a1 4", "a1 5", "a1 4")
	if n := convergenceCount(t, reg); n != 5 {
		t.Fatalf("%d observations after the aborted rollout of version 5, want 5", n)
	}
}
