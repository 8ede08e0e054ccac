package xds

import (
	"runtime"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
)

// watchFor opens a state-of-the-world watch the way the ADS server does and
// returns the response it gets at once, or nil when the watch was parked.
func watchFor(t *testing.T, s *Server, n *cache.Request, out chan cache.Response) cache.Response {
	t.Helper()
	sub := stream.NewSotwSubscription(nil, true)
	if _, err := s.cache.CreateWatch(n, sub, out); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-out:
		return r
	default:
		return nil
	}
}

// TestResponsesShareOneEncoding is the regression test for marshalling per
// agent: every agent of a group is sent the same marshalled resources (one
// *anypb.Any per resource per group and version), each in a message of its
// own (the server writes its nonce into it); a type a new version does not
// change keeps its encoding.
func TestResponsesShareOneEncoding(t *testing.T) {
	s := New(Options{})
	labels := map[string]string{"dc": "ams"}
	a, b := node("a", labels), node("b", labels)
	s.nodeSeen(a)
	if err := s.SetVersion(1, files(10000, nil, "10.0.0.1:80")); err != nil {
		t.Fatal(err)
	}
	first := map[string]cache.Response{}
	for _, typeURL := range []string{resource.ClusterType, resource.EndpointType, resource.ListenerType} {
		ra := watchFor(t, s, &cache.Request{Node: a, TypeUrl: typeURL}, make(chan cache.Response, types.UnknownType))
		rb := watchFor(t, s, &cache.Request{Node: b, TypeUrl: typeURL}, make(chan cache.Response, types.UnknownType))
		if ra == nil || rb == nil {
			t.Fatalf("%s: no response at once to a first request", typeURL)
		}
		da, _ := ra.GetDiscoveryResponse()
		db, _ := rb.GetDiscoveryResponse()
		if da == db {
			t.Fatalf("%s: two agents got the same DiscoveryResponse message; their nonces would race", typeURL)
		}
		if len(da.GetResources()) != 1 || da.GetResources()[0] != db.GetResources()[0] {
			t.Fatalf("%s: agents of one group got resources marshalled apart: %p vs %p", typeURL, da.GetResources(), db.GetResources())
		}
		if da.GetVersionInfo() != "1" || ra.GetReturnedResources() == nil {
			t.Fatalf("%s: version %q, returned %v", typeURL, da.GetVersionInfo(), ra.GetReturnedResources())
		}
		first[typeURL] = ra
	}

	// Version 2 changes the endpoints only: a parked EDS watch is answered
	// with version 2, and CDS keeps version 1 and its encoding.
	out := make(chan cache.Response, types.UnknownType)
	sub := stream.NewSotwSubscription(nil, true)
	sub.SetReturnedResources(first[resource.EndpointType].GetReturnedResources())
	if _, err := s.cache.CreateWatch(&cache.Request{Node: a, TypeUrl: resource.EndpointType, VersionInfo: "1"}, sub, out); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-out:
		t.Fatalf("a request for the current version was answered: %v", r.GetResponseVersion())
	default:
	}
	if err := s.SetVersion(2, files(10000, nil, "10.0.0.2:80")); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-out:
		if r.GetResponseVersion() != "2" {
			t.Fatalf("parked EDS watch answered with version %q, want 2", r.GetResponseVersion())
		}
	default:
		t.Fatal("parked EDS watch not answered by version 2")
	}
	rc := watchFor(t, s, &cache.Request{Node: b, TypeUrl: resource.ClusterType}, make(chan cache.Response, types.UnknownType))
	dc, _ := rc.GetDiscoveryResponse()
	d1, _ := first[resource.ClusterType].GetDiscoveryResponse()
	if dc.GetVersionInfo() != "1" || dc.GetResources()[0] != d1.GetResources()[0] {
		t.Fatalf("unchanged CDS: version %q, same encoding %v; want version 1 and the same encoding", dc.GetVersionInfo(), dc.GetResources()[0] == d1.GetResources()[0])
	}
}

// TestParkedWatchesAnsweredInADSOrder: when a version changes several types,
// one stream's parked watches are answered clusters, endpoints, listeners.
func TestParkedWatchesAnsweredInADSOrder(t *testing.T) {
	s := New(Options{})
	a := node("a", nil)
	s.nodeSeen(a)
	out := make(chan cache.Response, types.UnknownType)
	for _, typeURL := range []string{resource.ListenerType, resource.EndpointType, resource.ClusterType} {
		if r := watchFor(t, s, &cache.Request{Node: a, TypeUrl: typeURL}, out); r != nil {
			t.Fatalf("%s answered before any version", typeURL)
		}
	}
	if err := s.SetVersion(1, files(10000, nil, "10.0.0.1:80")); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{resource.ClusterType, resource.EndpointType, resource.ListenerType} {
		select {
		case r := <-out:
			if got := r.GetRequest().GetTypeUrl(); got != want {
				t.Fatalf("answered %s, want %s next", got, want)
			}
		default:
			t.Fatalf("%s not answered", want)
		}
	}
}

// TestGroupMemo: the memoised group key is fleet.NodeGroup's, and an entry
// goes once its node is collected.
func TestGroupMemo(t *testing.T) {
	var g groupMemo
	n := node("a", map[string]string{"role": "edge", "dc": "ams"})
	for range 2 {
		if got := g.of(n); got != "dc=ams,role=edge" {
			t.Fatalf("group %q, want dc=ams,role=edge", got)
		}
	}
	if got := g.of(nil); got != "" {
		t.Fatalf("nil node: group %q, want empty", got)
	}
	n = nil
	deadline := time.Now().Add(5 * time.Second)
	for {
		runtime.GC()
		g.mu.Lock()
		left := len(g.m)
		g.mu.Unlock()
		if left == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d entries left after their node was collected", left)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
