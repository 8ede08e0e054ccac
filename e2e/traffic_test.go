package e2e

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
)

// TestThreeAgentsServeOneConfig applies one config to three agents, each
// getting its own listener by label, and sends traffic through all of them.
func TestThreeAgentsServeOneConfig(t *testing.T) {
	t.Parallel()
	f := startFleet(t, 3) // waits for traffic through every agent
	for _, a := range f.agents {
		for i := range 3 {
			msg := fmt.Sprintf("%s-%d", a.id, i)
			got, err := echoOnce(f.ports[a.id], msg)
			if err != nil || got != "b1:"+msg {
				t.Errorf("through %s: got %q, %v; want %q", a.id, got, err, "b1:"+msg)
			}
		}
	}
	f.cp.waitSynced(t, 1, f.nodes()...)

	// The table shows each agent on version 1 for every type, with its labels.
	r := f.cp.flotctl(t, "agents")
	if r.code != 0 {
		t.Fatalf("flotctl agents: %s", r)
	}
	for _, id := range f.nodes() {
		row := lineWith(r.stdout, id+" ")
		if strings.Count(row, "SYNCED (v1)") != 3 || !strings.Contains(row, "dc=ams,node="+id) {
			t.Errorf("flotctl agents row for %s is %q, want labels dc=ams,node=%s and SYNCED (v1) three times\n%s", id, row, id, r.stdout)
		}
	}
	// A selector narrows the list.
	r = f.cp.flotctl(t, "agents", "--selector", "node=a2")
	if r.code != 0 || lineWith(r.stdout, "a2 ") == "" || lineWith(r.stdout, "a1 ") != "" || lineWith(r.stdout, "a3 ") != "" {
		t.Errorf("flotctl agents --selector node=a2: %s", r)
	}
}

// lineWith returns the first line of s that starts with prefix, or "".
func lineWith(s, prefix string) string {
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(line, prefix) {
			return line
		}
	}
	return ""
}

// TestEndpointChangeMovesNewConnections points the cluster at another
// backend: new connections go there, and a connection opened before the
// change keeps talking to the old backend.
func TestEndpointChangeMovesNewConnections(t *testing.T) {
	t.Parallel()
	f := startFleet(t, 1)
	a1, addr := f.agents[0], f.ports["a1"]
	b2 := startBackend(t, "b2")

	before, err := dialEcho(t, addr)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := before.say("before"); err != nil || got != "b1:before" {
		t.Fatalf("open connection: got %q, %v; want b1:before", got, err)
	}

	v2 := f.cfg
	v2.clusters = map[string][]string{"echo": {b2.addr}}
	if v := f.cp.apply(t, v2.write(t, "v2.yaml"), "move echo to b2"); v != 2 {
		t.Fatalf("apply stored version %d, want 2", v)
	}
	waitFor(t, convergeTimeout, "new connections to reach b2", expectEcho(addr, "b2"))
	for i := range 5 {
		if err := expectEcho(addr, "b2")(); err != nil {
			t.Errorf("new connection %d after the change: %v", i, err)
		}
	}
	for i := range 3 {
		msg := fmt.Sprintf("still-%d", i)
		if got, err := before.say(msg); err != nil || got != "b1:"+msg {
			t.Errorf("connection opened before the change: got %q, %v; want %q", got, err, "b1:"+msg)
		}
	}
	resp := f.cp.waitSynced(t, 0, "a1")
	for _, rs := range resp.GetAgents()[0].GetResources() {
		if rs.GetShort() == "EDS" && rs.GetAcked() != "2" {
			t.Errorf("a1 EDS acked %q, want 2 (the endpoints changed in version 2)", rs.GetAcked())
		}
	}
	if err := a1.ready(); err != nil {
		t.Error(err)
	}
}

// TestRejectedConfigIsNackedOnce applies a listener on a port the test holds:
// the agent cannot bind it, NACKs the update with the bind error, is not sent
// the same version again and again, and keeps serving the previous config.
func TestRejectedConfigIsNackedOnce(t *testing.T) {
	t.Parallel()
	f := startFleet(t, 1)
	a1, addr := f.agents[0], f.ports["a1"]
	f.cp.waitSynced(t, 1, "a1")

	busy, err := net.Listen("tcp", freeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Close() })
	v2 := f.cfg
	v2.listeners = append(append([]listener(nil), f.cfg.listeners...),
		listener{name: "busy", address: busy.Addr().String(), cluster: "echo", node: "a1"})
	if v := f.cp.apply(t, v2.write(t, "v2.yaml"), "a listener on a taken port"); v != 2 {
		t.Fatalf("apply stored version %d, want 2", v)
	}

	// The control plane shows the NACK with the agent's bind error.
	var nack *adminv1.Nack
	waitFor(t, convergeTimeout, "a1 to NACK LDS version 2", func() error {
		resp, err := f.cp.agents(t)
		if err != nil {
			return err
		}
		if len(resp.GetAgents()) != 1 {
			return fmt.Errorf("%d agents, want 1", len(resp.GetAgents()))
		}
		for _, rs := range resp.GetAgents()[0].GetResources() {
			if rs.GetShort() != "LDS" {
				continue
			}
			if rs.GetState() != adminv1.SyncState_SYNC_STATE_NACKED || rs.GetLastNack() == nil {
				return fmt.Errorf("LDS is %s (desired %q, sent %q, acked %q)", rs.GetState(), rs.GetDesired(), rs.GetSent(), rs.GetAcked())
			}
			nack = rs.GetLastNack()
			return nil
		}
		return fmt.Errorf("no LDS status")
	})
	if msg := nack.GetMessage(); !strings.Contains(msg, "address already in use") || !strings.Contains(msg, busy.Addr().String()) {
		t.Errorf("NACK message %q does not carry the bind error for %s", msg, busy.Addr())
	}
	if nack.GetVersion() != "2" {
		t.Errorf("NACK of version %q, want 2", nack.GetVersion())
	}
	r := f.cp.flotctl(t, "agents")
	if !strings.Contains(lineWith(r.stdout, "a1 "), "NACKED (v2)") || !strings.Contains(r.stdout, "\na1 LDS v2 rejected: ") {
		t.Errorf("flotctl agents does not show the NACK:\n%s", r)
	}

	// The agent counted the NACK; the count and the control plane's record
	// stay the same for a while: the rejected version is not re-sent in a loop.
	var nacks float64
	waitFor(t, startTimeout, "a1 to count the NACK", func() error {
		n, err := a1.metric("flotilla_agent_xds_updates_total", `result="nack"`)
		if err == nil && n < 1 {
			err = fmt.Errorf("%v NACKs counted", n)
		}
		nacks = n
		return err
	})
	firstNackTime := nack.GetTime()
	holdsFor(t, 3*time.Second, "one NACK", func() error {
		n, err := a1.metric("flotilla_agent_xds_updates_total", `result="nack"`)
		if err != nil {
			return err
		}
		if n != nacks {
			return fmt.Errorf("the agent's NACK count went from %v to %v: version 2 is being re-sent", nacks, n)
		}
		resp, err := f.cp.agents(t)
		if err != nil {
			return err
		}
		for _, rs := range resp.GetAgents()[0].GetResources() {
			if rs.GetShort() == "LDS" && !proto.Equal(rs.GetLastNack().GetTime(), firstNackTime) {
				return fmt.Errorf("the control plane saw another NACK at %v (first at %v)", timeOf(rs.GetLastNack().GetTime()), timeOf(firstNackTime))
			}
		}
		return nil
	})

	// The old config keeps serving, and the agent stays ready.
	for i := range 3 {
		if err := expectEcho(addr, "b1")(); err != nil {
			t.Errorf("connection %d after the NACK: %v", i, err)
		}
	}
	if err := a1.ready(); err != nil {
		t.Error(err)
	}
}

func timeOf(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "never"
	}
	return ts.AsTime().Format(time.RFC3339Nano)
}
