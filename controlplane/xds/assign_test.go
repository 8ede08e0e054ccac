package xds

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
)

// converge receives CDS, EDS and LDS at version, in that order, and ACKs them.
func (c *adsClient) converge(version string) {
	c.t.Helper()
	for _, typeURL := range []string{resource.ClusterType, resource.EndpointType, resource.ListenerType} {
		r := c.next(typeURL, version)
		var names []string
		if typeURL == resource.EndpointType {
			names = []string{"c"}
		}
		c.send(typeURL, version, r.GetNonce(), names, "")
	}
}

// ack receives each type at its version, in the order given, and ACKs it.
func (c *adsClient) ack(tvs ...[2]string) {
	c.t.Helper()
	for _, tv := range tvs {
		r := c.next(tv[0], tv[1])
		var names []string
		if tv[0] == resource.EndpointType {
			names = []string{"c"}
		}
		c.send(tv[0], tv[1], r.GetNonce(), names, "")
	}
}

func (s *Server) groupKeys() []string {
	s.groupsMu.RLock()
	defer s.groupsMu.RUnlock()
	var out []string
	for k := range s.groups {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestAssignments: the agents an assignment covers move to the assigned
// version on their open streams, the others keep the active one (and get
// the next active version); agents with the same labels and version share
// one snapshot; an agent that connects later is assigned by its hash; when
// the assignment goes, the canaries are back on the active version.
func TestAssignments(t *testing.T) {
	s, conn := startServer(t)
	if err := s.SetVersion(1, files(7201, nil, "127.0.0.1:9001")); err != nil {
		t.Fatal(err)
	}
	ams := map[string]string{"dc": "ams"}
	ids := []string{"a1", "a2", "a3", "a4", "a5", "a6"}
	agents := map[string]*adsClient{}
	for _, id := range ids[:5] {
		a := newADS(t, conn, node(id, ams))
		a.subscribe()
		a.converge("1")
		agents[id] = a
	}
	settled := func(ids []string, version uint64) {
		t.Helper()
		for _, id := range ids {
			waitFor(t, fmt.Sprintf("%s on version %d", id, version), func() bool { return configVersionOf(s, id) == version })
		}
	}
	settled(ids[:5], 1)
	// Assign version 2 to the half of the six agents with the smallest hashes.
	salt := "7"
	var hashes []uint64
	for _, id := range ids {
		hashes = append(hashes, Hash(id, salt))
	}
	slices.Sort(hashes)
	as := &Assignment{Version: 2, Files: files(7201, nil, "127.0.0.1:9002"), Selector: ams, Salt: salt, Threshold: hashes[2]}
	if err := s.SetAssignments([]*Assignment{as}); err != nil {
		t.Fatal(err)
	}
	var canaries, others []string
	for _, id := range ids {
		if as.Covers(id, ams) {
			canaries = append(canaries, id)
		} else {
			others = append(others, id)
		}
	}
	t.Logf("canaries %v, others %v", canaries, others)
	// Version 2 changes the endpoints only: the canaries' snapshot keeps the
	// clusters' and listeners' versions, and only EDS is pushed to them.
	for _, id := range canaries {
		if a := agents[id]; a != nil {
			a.ack([2]string{resource.EndpointType, "2"})
		}
	}
	for _, id := range ids[:5] {
		want := uint64(1)
		if slices.Contains(canaries, id) {
			want = 2
		}
		waitFor(t, fmt.Sprintf("%s on version %d", id, want), func() bool { return configVersionOf(s, id) == want })
	}
	if got, want := s.groupKeys(), []string{"dc=ams", "dc=ams|v2"}; !slices.Equal(got, want) {
		t.Errorf("groups %v, want %v (one snapshot per labels and version)", got, want)
	}

	// A new active version reaches the others only.
	if err := s.SetVersion(3, files(7201, nil, "127.0.0.1:9003")); err != nil {
		t.Fatal(err)
	}
	var connected []string
	for _, id := range others {
		if a := agents[id]; a != nil {
			eds := a.next(resource.EndpointType, "3")
			a.send(resource.EndpointType, "3", eds.GetNonce(), []string{"c"}, "")
			connected = append(connected, id)
		}
	}
	settled(connected, 3)
	// An agent connecting now is served what its hash says.
	a6 := newADS(t, conn, node("a6", ams))
	a6.subscribe()
	eds := map[bool]string{true: "2", false: "3"}[slices.Contains(canaries, "a6")]
	a6.ack([2]string{resource.ClusterType, "1"}, [2]string{resource.EndpointType, eds}, [2]string{resource.ListenerType, "1"})
	agents["a6"] = a6
	settled([]string{"a6"}, map[bool]uint64{true: 2, false: 3}[slices.Contains(canaries, "a6")])

	// Every selected agent: the others move to version 2 as well.
	as2 := *as
	as2.Threshold = math.MaxUint64
	if err := s.SetAssignments([]*Assignment{&as2}); err != nil {
		t.Fatal(err)
	}
	for _, id := range others {
		agents[id].ack([2]string{resource.EndpointType, "2"})
	}
	settled(ids, 2)
	// Assignments dropped: everyone back on the active version 3.
	if err := s.SetAssignments(nil); err != nil {
		t.Fatal(err)
	}
	// Only what differs is pushed: the endpoints.
	for _, id := range ids {
		agents[id].ack([2]string{resource.EndpointType, "3"})
	}
	settled(ids, 3)
	// The rollout is over: the snapshot of version 2 went with it, not at
	// the next apply.
	if got, want := s.groupKeys(), []string{"dc=ams"}; !slices.Equal(got, want) {
		t.Errorf("groups after the assignments went: %v, want %v", got, want)
	}
	if keys := s.cache.GetStatusKeys(); slices.Contains(keys, "dc=ams|v2") {
		t.Errorf("the cache still holds the snapshot of dc=ams|v2: %v", keys)
	}
}

// TestAssignmentDelta: a delta client an assignment covers gets the assigned
// version's listener on its open stream, and the active one back when the
// assignment goes.
func TestAssignmentDelta(t *testing.T) {
	s, conn := startServer(t)
	if err := s.SetVersion(1, files(7301, nil, "127.0.0.1:9001")); err != nil {
		t.Fatal(err)
	}
	d := newDelta(t, conn, node("d1", nil))
	d.send(resource.ListenerType, "", "")
	r := d.recv(resource.ListenerType)
	d.send(resource.ListenerType, r.GetNonce(), "")
	waitFor(t, "d1 acked LDS", func() bool { st, _ := state(s, "d1", "LDS"); return st == adminv1.SyncState_SYNC_STATE_SYNCED })

	as := &Assignment{Version: 2, Files: files(7302, nil, "127.0.0.1:9001"), Salt: "1", Threshold: math.MaxUint64}
	if err := s.SetAssignments([]*Assignment{as}); err != nil {
		t.Fatal(err)
	}
	r = d.recv(resource.ListenerType)
	if got := r.GetSystemVersionInfo(); got != "2" || !strings.Contains(r.String(), "7302") {
		t.Fatalf("delta LDS after the assignment: version %q, %v; want version 2 on port 7302", got, r)
	}
	d.send(resource.ListenerType, r.GetNonce(), "")
	waitFor(t, "d1 acked LDS 2", func() bool { st, _ := state(s, "d1", "LDS"); return st == adminv1.SyncState_SYNC_STATE_SYNCED })
	if err := s.SetAssignments(nil); err != nil {
		t.Fatal(err)
	}
	r = d.recv(resource.ListenerType)
	if !strings.Contains(r.String(), "7301") {
		t.Fatalf("delta LDS after the assignment went: %v, want port 7301", r)
	}
}
