package xds

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
	configv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/config/v1"
)

func twoListeners(p1, p2 int) []*adminv1.ConfigFile {
	b := &configv1.Bundle{
		Listeners: []*configv1.Listener{
			{Name: "l1", Address: fmt.Sprintf("127.0.0.1:%d", p1), Tcp: &configv1.TcpProxy{Cluster: "c"}},
			{Name: "l2", Address: fmt.Sprintf("127.0.0.1:%d", p2), Tcp: &configv1.TcpProxy{Cluster: "c"}},
		},
		Clusters: []*configv1.Cluster{{Name: "c", Endpoints: []*configv1.Endpoint{{Address: "127.0.0.1:9001"}}}},
	}
	return []*adminv1.ConfigFile{{Path: "t.yaml", Bundle: b}}
}

// Regression: after a delta NACK, the next version must bring the client every
// resource that differs from what it ACCEPTED, not from what was sent.
func TestDeltaNACKThenPartialChange(t *testing.T) {
	s, conn := startServer(t)
	if err := s.SetVersion(1, twoListeners(7001, 7002)); err != nil {
		t.Fatal(err)
	}
	d := newDelta(t, conn, node("d1", nil))
	send := func(nonce, nack string) { d.send(resource.ListenerType, nonce, nack) }
	recv := func() (*discoveryv3.DeltaDiscoveryResponse, []string) {
		r := d.recv(resource.ListenerType)
		var names []string
		for _, x := range r.GetResources() {
			names = append(names, x.GetName())
		}
		sort.Strings(names)
		return r, names
	}
	send("", "")
	r, names := recv()
	t.Logf("v1: %v", names)
	send(r.GetNonce(), "")

	if err := s.SetVersion(2, twoListeners(7011, 7012)); err != nil {
		t.Fatal(err)
	}
	r, names = recv()
	t.Logf("v2 (NACKed): %v", names)
	send(r.GetNonce(), "bind: address already in use")
	waitFor(t, "nacked", func() bool { st, _ := state(s, "d1", "LDS"); return st == adminv1.SyncState_SYNC_STATE_NACKED })

	// v3: l1 as in v2 (which the client never accepted), l2 changed again.
	if err := s.SetVersion(3, twoListeners(7011, 7022)); err != nil {
		t.Fatal(err)
	}
	r, names = recv()
	t.Logf("v3: %v", names)
	send(r.GetNonce(), "")
	waitFor(t, "synced", func() bool { st, _ := state(s, "d1", "LDS"); return st == adminv1.SyncState_SYNC_STATE_SYNCED })
	if len(names) != 2 {
		t.Fatalf("v3 carried %v: l1 (still at v1 on the client) was never resent, yet flotctl agents says LDS SYNCED", names)
	}
}

// Regression: label sets of agents long gone stay forever, and every SetVersion
// compiles and snapshots each of them.
func TestIdleGroupsForgotten(t *testing.T) {
	s, conn := startServer(t, Options{GroupIdleTimeout: time.Nanosecond})
	if err := s.SetVersion(1, files(7001, nil, "127.0.0.1:9001")); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		ctx, cancel := context.WithCancel(context.Background())
		st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		st.Send(&discoveryv3.DiscoveryRequest{Node: node(fmt.Sprintf("n%d", i), map[string]string{"rand": fmt.Sprint(i)}), TypeUrl: resource.ClusterType})
		st.Recv()
		cancel()
	}
	waitFor(t, "all streams closed", func() bool { return len(s.Agents(nil)) == 0 })
	// The first version set after they left marks the groups idle, the next drops them.
	for v := uint64(2); v <= 3; v++ {
		if err := s.SetVersion(v, files(7001, nil, "127.0.0.1:9001")); err != nil {
			t.Fatal(err)
		}
	}
	s.groupsMu.RLock()
	n := len(s.groups)
	s.groupsMu.RUnlock()
	t.Logf("connected agents: 0, groups kept: %d, cache status keys: %d", n, len(s.cache.GetStatusKeys()))
	if n > 0 || len(s.cache.GetStatusKeys()) > 0 {
		t.Fatalf("%d groups and %d cache entries kept with no agent connected", n, len(s.cache.GetStatusKeys()))
	}
}

// Regression: an agent that reconnects with new labels while its old stream is
// still open keeps its old labels/group in the registry.
func TestRelabelWhileOldStreamOpen(t *testing.T) {
	s, conn := startServer(t)
	if err := s.SetVersion(1, files(7001, map[string]string{"role": "edge"}, "127.0.0.1:9001")); err != nil {
		t.Fatal(err)
	}
	old := newADS(t, conn, node("a1", map[string]string{"role": "old"}))
	old.send(resource.ClusterType, "", "", nil, "")
	old.next(resource.ClusterType, "1")
	nw := newADS(t, conn, node("a1", map[string]string{"role": "edge"}))
	nw.subscribe()
	cds := nw.next(resource.ClusterType, "1")
	eds := nw.next(resource.EndpointType, "1")
	lds := nw.next(resource.ListenerType, "1")
	nw.send(resource.ClusterType, "1", cds.GetNonce(), nil, "")
	nw.send(resource.EndpointType, "1", eds.GetNonce(), []string{"c"}, "")
	nw.send(resource.ListenerType, "1", lds.GetNonce(), nil, "")
	waitFor(t, "LDS acked", func() bool {
		a := s.Agents(nil)
		return len(a) == 1 && resourceStatus(a[0], "LDS").GetAcked() == "1"
	})
	a := s.Agents(nil)[0]
	t.Logf("labels=%v LDS=%v", a.GetLabels(), resourceStatus(a, "LDS"))
	if a.GetLabels()["role"] != "edge" || len(s.Agents(map[string]string{"role": "edge"})) != 1 {
		t.Fatalf("registry shows labels %v for an agent whose newest stream says role=edge", a.GetLabels())
	}
}

// Regression: after a NACK, a later request that answers the same nonce without
// error (an EDS subscription change) counts as an ACK of the OLD version,
// clears the rejection, and the rejected version is pushed again.
func TestSubscriptionChangeAfterNACKKeepsHold(t *testing.T) {
	s, conn := startServer(t)
	if err := s.SetVersion(1, files(7001, nil, "127.0.0.1:9001")); err != nil {
		t.Fatal(err)
	}
	a := newADS(t, conn, node("a1", nil))
	a.subscribe()
	cds := a.next(resource.ClusterType, "1")
	eds := a.next(resource.EndpointType, "1")
	lds := a.next(resource.ListenerType, "1")
	a.send(resource.ClusterType, "1", cds.GetNonce(), nil, "")
	a.send(resource.EndpointType, "1", eds.GetNonce(), []string{"c"}, "")
	a.send(resource.ListenerType, "1", lds.GetNonce(), nil, "")
	if err := s.SetVersion(2, files(7001, nil, "127.0.0.1:9002")); err != nil {
		t.Fatal(err)
	}
	eds = a.next(resource.EndpointType, "2")
	a.send(resource.EndpointType, "1", eds.GetNonce(), []string{"c"}, "bad endpoint")
	waitFor(t, "EDS nacked", func() bool { st, _ := state(s, "a1", "EDS"); return st == adminv1.SyncState_SYNC_STATE_NACKED })
	// Subscription re-sent (Envoy/our agent do this when the cluster set changes).
	a.send(resource.EndpointType, "1", eds.GetNonce(), []string{"c"}, "")
	// A listener-only change comes next; a resend of EDS 2 would come first.
	if err := s.SetVersion(3, files(7002, nil, "127.0.0.1:9002")); err != nil {
		t.Fatal(err)
	}
	a.next(resource.ListenerType, "3")
	if st, _ := state(s, "a1", "EDS"); st != adminv1.SyncState_SYNC_STATE_NACKED {
		t.Fatalf("EDS state %v after a subscription change, want NACKED", st)
	}
}

// Regression: an agent that NACKs a CDS version adding a cluster keeps its EDS
// subscription to the old cluster set. go-control-plane (ADS mode) answers an
// EDS watch only if it names every CLA of the snapshot, so that watch is
// discarded unanswered and the agent gets no endpoint change for the clusters
// it does run, however many versions follow.
func TestEndpointsFlowAfterCDSNACK(t *testing.T) {
	two := func(ep string) []*adminv1.ConfigFile {
		f := files(7001, nil, ep)
		f[0].Bundle.Listeners = append(f[0].Bundle.Listeners, &configv1.Listener{Name: "l2", Address: "127.0.0.1:7002", Tcp: &configv1.TcpProxy{Cluster: "d"}})
		f[0].Bundle.Clusters = append(f[0].Bundle.Clusters, &configv1.Cluster{Name: "d", Endpoints: []*configv1.Endpoint{{Address: "127.0.0.1:9100"}}})
		return f
	}
	s, conn := startServer(t)
	if err := s.SetVersion(1, files(7001, nil, "127.0.0.1:9001")); err != nil {
		t.Fatal(err)
	}
	a := newADS(t, conn, node("a1", nil))
	a.subscribe()
	cds := a.next(resource.ClusterType, "1")
	eds := a.next(resource.EndpointType, "1")
	lds := a.next(resource.ListenerType, "1")
	a.send(resource.ClusterType, "1", cds.GetNonce(), nil, "")
	a.send(resource.EndpointType, "1", eds.GetNonce(), []string{"c"}, "")
	a.send(resource.ListenerType, "1", lds.GetNonce(), nil, "")
	waitFor(t, "synced", func() bool { st, _ := state(s, "a1", "LDS"); return st == adminv1.SyncState_SYNC_STATE_SYNCED })

	// v2 adds listener l2 and cluster d; this (older) agent rejects the new cluster.
	if err := s.SetVersion(2, two("127.0.0.1:9001")); err != nil {
		t.Fatal(err)
	}
	cds = a.next(resource.ClusterType, "2")
	a.send(resource.ClusterType, "1", cds.GetNonce(), nil, `cluster "d": lb_policy LEAST_REQUEST is not supported`)
	eds = a.next(resource.EndpointType, "2") // d's endpoints are new; the agent ignores what it did not ask for
	a.send(resource.EndpointType, "2", eds.GetNonce(), []string{"c"}, "")
	lds = a.next(resource.ListenerType, "2")
	a.send(resource.ListenerType, "1", lds.GetNonce(), nil, `listener "l2" references unknown cluster "d"`)
	// v3 and v4 move cluster c's endpoints: the agent must hear about it.
	for v := 3; v <= 4; v++ {
		if err := s.SetVersion(uint64(v), two(fmt.Sprintf("127.0.0.1:900%d", v))); err != nil {
			t.Fatal(err)
		}
		eds = a.next(resource.EndpointType, fmt.Sprint(v))
		a.send(resource.EndpointType, fmt.Sprint(v), eds.GetNonce(), []string{"c"}, "")
	}
}
