package xds

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// Regression (review of rollouts): a watch answered by a later snapshot
// (sotwCache.set) used to keep answered=false in
// its trackedWatch, so a move before the agent replies re-creates it: a second
// response of the same type goes on the stream while the first is unanswered.
func TestRewatchAfterSetSendsNoDuplicate(t *testing.T) {
	s, conn := startServer(t)
	if err := s.SetVersion(1, files(7201, nil, "127.0.0.1:9001")); err != nil {
		t.Fatal(err)
	}
	a := newADS(t, conn, node("a1", nil))
	a.subscribe()
	a.converge("1")
	waitFor(t, "the agent's ACKs to park its watches", func() bool { return parkedWatches(s, resource.EndpointType) == 1 })
	// Version 2 changes only the endpoints: the parked EDS watch is answered.
	if err := s.SetVersion(2, files(7201, nil, "127.0.0.1:9002")); err != nil {
		t.Fatal(err)
	}
	eds := a.next(resource.EndpointType, "2")
	_ = eds // not ACKed yet
	as := &Assignment{Version: 3, Files: files(7203, nil, "127.0.0.1:9003"), Salt: "x", Threshold: math.MaxUint64}
	if err := s.SetAssignments([]*Assignment{as}); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(time.Second)
	var got []string
	for done := false; !done; {
		select {
		case r := <-a.recv:
			got = append(got, shortType(r.GetTypeUrl())+"@"+r.GetVersionInfo()+"/"+r.GetNonce())
		case <-deadline:
			done = true
		}
	}
	t.Logf("responses after the move, no request sent: %v", got)
	n := 0
	for _, g := range got {
		if strings.Contains(g, "ClusterLoadAssignment") {
			n++
		}
	}
	if n > 0 {
		t.Errorf("an EDS response was pushed while the EDS response %s was still unanswered", eds.GetNonce())
	}
}

// parkedWatches counts the watches of a type parked in the state-of-the-world cache.
func parkedWatches(s *Server, typeURL string) int {
	c := s.cache.sotw
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, g := range c.groups {
		n += len(g.watches[cache.GetResponseType(typeURL)])
	}
	return n
}
