package xds

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// observer records what the registry tells a fleet.Observer.
type observer struct {
	mu                sync.Mutex
	pushes, answers   []string
	converged         []string
	convergedVersions []uint64
}

func (o *observer) Pushed(node, typeURL, version string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.pushes = append(o.pushes, fmt.Sprintf("%s %s %s", node, shortType(typeURL), version))
}

func (o *observer) Answered(node, typeURL, version string, nack bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.answers = append(o.answers, fmt.Sprintf("%s %s %s nack=%v", node, shortType(typeURL), version, nack))
}

func (o *observer) Converged(node string, labels map[string]string, version uint64, opened, _ time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if opened.IsZero() || labels["dc"] != "ams" {
		panic("converged without the stream's facts")
	}
	o.converged = append(o.converged, fmt.Sprintf("%s %d", node, version))
}

func (o *observer) convergedList() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.converged)
}

func configVersionOf(s *Server, nodeID string) uint64 {
	for _, a := range s.Agents(nil) {
		if a.GetNodeId() == nodeID {
			return a.GetConfigVersion()
		}
	}
	return 0
}

// TestConfigVersion: an agent runs a config version once it ACKed every type
// of its group's snapshot of that version, including a version that changed
// only some types; while the next one is in flight or after a NACK it runs
// the previous one; the observer hears each convergence once, and every push
// and answer.
func TestConfigVersion(t *testing.T) {
	obs := &observer{}
	s, conn := startServer(t, Options{Observer: obs})
	if err := s.SetVersion(1, files(7101, nil, "127.0.0.1:9001")); err != nil {
		t.Fatal(err)
	}
	a := newADS(t, conn, node("a1", map[string]string{"dc": "ams"}))
	a.subscribe()
	cds := a.next(resource.ClusterType, "1")
	eds := a.next(resource.EndpointType, "1")
	lds := a.next(resource.ListenerType, "1")
	a.send(resource.ClusterType, "1", cds.GetNonce(), nil, "")
	a.send(resource.EndpointType, "1", eds.GetNonce(), []string{"c"}, "")
	waitFor(t, "the EDS ACK", func() bool {
		obs.mu.Lock()
		defer obs.mu.Unlock()
		return len(obs.answers) >= 2
	})
	if v := configVersionOf(s, "a1"); v != 0 {
		t.Fatalf("config version %d before LDS was ACKed, want 0", v)
	}
	a.send(resource.ListenerType, "1", lds.GetNonce(), nil, "")
	waitFor(t, "config version 1", func() bool { return configVersionOf(s, "a1") == 1 })

	// Version 2 changes only the endpoints: ACKing EDS 2 completes it.
	if err := s.SetVersion(2, files(7101, nil, "127.0.0.1:9002")); err != nil {
		t.Fatal(err)
	}
	if v := configVersionOf(s, "a1"); v != 1 {
		t.Fatalf("config version %d while EDS 2 is in flight, want 1 (it runs all of it)", v)
	}
	eds = a.next(resource.EndpointType, "2")
	a.send(resource.EndpointType, "2", eds.GetNonce(), []string{"c"}, "")
	waitFor(t, "config version 2", func() bool { return configVersionOf(s, "a1") == 2 })

	// Version 3 is NACKed: the agent still runs version 2.
	if err := s.SetVersion(3, files(7102, nil, "127.0.0.1:9002")); err != nil {
		t.Fatal(err)
	}
	lds = a.next(resource.ListenerType, "3")
	a.send(resource.ListenerType, "1", lds.GetNonce(), nil, "port taken")
	waitFor(t, "the NACK", func() bool {
		obs.mu.Lock()
		defer obs.mu.Unlock()
		return slices.Contains(obs.answers, "a1 envoy.config.listener.v3.Listener 3 nack=true")
	})
	if v := configVersionOf(s, "a1"); v != 2 {
		t.Fatalf("config version %d after a NACK of version 3, want 2", v)
	}
	// Version 4 changes the endpoints too: the agent runs neither 4 nor 3.
	if err := s.SetVersion(4, files(7102, nil, "127.0.0.1:9004")); err != nil {
		t.Fatal(err)
	}
	a.next(resource.EndpointType, "4")
	if v := configVersionOf(s, "a1"); v != 0 {
		t.Fatalf("config version %d with EDS 4 in flight and LDS 3 rejected, want 0", v)
	}
	if got, want := obs.convergedList(), []string{"a1 1", "a1 2"}; !slices.Equal(got, want) {
		t.Fatalf("converged %v, want %v", got, want)
	}
	obs.mu.Lock()
	pushes := len(obs.pushes)
	obs.mu.Unlock()
	if pushes != 6 {
		t.Errorf("%d pushes observed, want 6 (CDS, EDS, LDS 1; EDS 2; LDS 3; EDS 4)", pushes)
	}
}
