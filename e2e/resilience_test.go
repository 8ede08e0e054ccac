package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// waitDisconnected waits until the agent's flotilla_agent_xds_connected gauge is 0.
func (a *agent) waitDisconnected(t *testing.T) {
	t.Helper()
	waitFor(t, startTimeout, "agent "+a.id+" to notice the control plane is gone", func() error {
		v, err := a.metric("flotilla_agent_xds_connected")
		if err == nil && v != 0 {
			err = fmt.Errorf("flotilla_agent_xds_connected is %v", v)
		}
		return err
	})
}

// TestControlPlaneKilledTrafficFlows kills the control plane with SIGKILL:
// open connections and new ones keep flowing through every agent.
func TestControlPlaneKilledTrafficFlows(t *testing.T) {
	t.Parallel()
	f := startFleet(t, 2)
	open, err := dialEcho(t, f.ports["a1"])
	if err != nil {
		t.Fatal(err)
	}
	if got, err := open.say("before"); err != nil || got != "b1:before" {
		t.Fatalf("open connection: got %q, %v", got, err)
	}

	f.cp.proc.kill(t)
	for _, a := range f.agents {
		a.waitDisconnected(t)
	}
	if got, err := open.say("after"); err != nil || got != "b1:after" {
		t.Errorf("connection opened before the kill: got %q, %v; want b1:after", got, err)
	}
	for _, a := range f.agents {
		for i := range 3 {
			if err := expectEcho(f.ports[a.id], "b1")(); err != nil {
				t.Errorf("new connection %d through %s without a control plane: %v", i, a.id, err)
			}
		}
		if err := a.ready(); err != nil {
			t.Errorf("without a control plane: %v", err)
		}
	}
}

// TestAgentRestartsFromDisk restarts an agent while the control plane is
// down: it serves the last good config it saved.
func TestAgentRestartsFromDisk(t *testing.T) {
	t.Parallel()
	f := startFleet(t, 1)
	a1 := f.agents[0]
	f.cp.waitSynced(t, 1, "a1")
	f.cp.proc.kill(t)
	a1.waitDisconnected(t)

	a1.stop(t)
	if err := dialable(f.ports["a1"]); err == nil {
		t.Fatalf("%s still accepts connections after the agent stopped", f.ports["a1"])
	}
	if _, err := os.Stat(filepath.Join(a1.dataDir, "snapshot.pb")); err != nil {
		t.Errorf("the agent left no snapshot: %v", err)
	}
	a1.start(t)
	a1.waitReady(t)
	waitFor(t, startTimeout, "traffic through the restarted agent", expectEcho(f.ports["a1"], "b1"))
}

// TestRestartedControlPlaneConverges kills the control plane after two
// versions and starts it again on the same data directory: it serves the
// latest version and every agent reports SYNCED on it for CDS, EDS and LDS.
func TestRestartedControlPlaneConverges(t *testing.T) {
	t.Parallel()
	f := startFleet(t, 3)
	b2 := startBackend(t, "b2")
	v2 := f.cfg
	v2.clusters = map[string][]string{"echo": {b2.addr}}
	if v := f.cp.apply(t, v2.write(t, "v2.yaml"), "move echo to b2"); v != 2 {
		t.Fatalf("apply stored version %d, want 2", v)
	}
	f.cp.waitSynced(t, 0, f.nodes()...)

	f.cp.proc.kill(t)
	for _, a := range f.agents {
		a.waitDisconnected(t)
	}
	f.cp.start(t)
	f.cp.waitSynced(t, 2, f.nodes()...)
	for _, a := range f.agents {
		if err := expectEcho(f.ports[a.id], "b2")(); err != nil {
			t.Errorf("through %s after the restart: %v", a.id, err)
		}
	}
	r := f.cp.flotctl(t, "history")
	if lineWith(r.stdout, "2 ") == "" || lineWith(r.stdout, "1 ") == "" {
		t.Errorf("the restarted control plane lost history:\n%s", r)
	}
}
