package xds

import (
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// Regression (review of the shared-response cache): a version that leaves the group with no listener (and no cluster)
// is reported as run by an agent that has not ACKed (or even received) it.
func TestConfigVersionOfEmptiedGroup(t *testing.T) {
	s, conn := startServer(t)
	if err := s.SetVersion(1, files(7001, nil, "127.0.0.1:9001")); err != nil {
		t.Fatal(err)
	}
	a := newADS(t, conn, node("a1", map[string]string{"role": "edge"}))
	a.subscribe()
	cds := a.next(resource.ClusterType, "1")
	eds := a.next(resource.EndpointType, "1")
	lds := a.next(resource.ListenerType, "1")
	a.send(resource.ClusterType, "1", cds.GetNonce(), nil, "")
	a.send(resource.EndpointType, "1", eds.GetNonce(), []string{"c"}, "")
	a.send(resource.ListenerType, "1", lds.GetNonce(), nil, "")
	waitFor(t, "v1", func() bool { return configVersionOf(s, "a1") == 1 })
	// v2 moves the listener to role=other: this agent must stop listening on 7001.
	if err := s.SetVersion(2, files(7001, map[string]string{"role": "other"}, "127.0.0.1:9001")); err != nil {
		t.Fatal(err)
	}
	// The agent is wedged and ACKs nothing.
	if v := configVersionOf(s, "a1"); v == 2 {
		ag := s.Agents(nil)[0]
		for _, r := range ag.GetResources() {
			t.Logf("%s desired=%s sent=%s acked=%s state=%s", r.GetShort(), r.GetDesired(), r.GetSent(), r.GetAcked(), r.GetState())
		}
		t.Fatalf("config_version %d for an agent that ACKed nothing of version 2 (it still listens on 7001): flotctl wait exits 0", v)
	}
}
