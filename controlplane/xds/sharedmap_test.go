package xds

import (
	"fmt"
	"sync"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	configv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/config/v1"
)

// Regression (review of the shared-response cache): go-control-plane's Subscription.SetResourceSubscription deletes the
// names no longer subscribed from the map GetReturnedResources handed it,
// which for sharedResponse is prepared.returned, shared by the whole group.
func TestSharedReturnedMapMutated(t *testing.T) {
	s, conn := startServer(t)
	f := files(7001, nil, "127.0.0.1:9001")
	for i := range 20 {
		name := fmt.Sprintf("d%d", i)
		f[0].Bundle.Listeners = append(f[0].Bundle.Listeners, &configv1.Listener{Name: "l" + name, Address: fmt.Sprintf("127.0.0.1:%d", 7100+i), Tcp: &configv1.TcpProxy{Cluster: name}})
		f[0].Bundle.Clusters = append(f[0].Bundle.Clusters, &configv1.Cluster{Name: name, Endpoints: []*configv1.Endpoint{{Address: "127.0.0.1:9100"}}})
	}
	s.nodeSeen(node("x", nil))
	if err := s.SetVersion(1, f); err != nil {
		t.Fatal(err)
	}
	before := len(s.groups[""].types[resource.EndpointType].wire.returned)
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := newADS(t, conn, node(fmt.Sprintf("a%d", i), nil))
			a.send(resource.EndpointType, "", "", []string{"c"}, "")
			eds := a.next(resource.EndpointType, "1")
			// Each agent runs a different subset (e.g. after a CDS NACK).
			a.send(resource.EndpointType, "1", eds.GetNonce(), []string{"c", fmt.Sprintf("d%d", i%20)}, "")
		}()
	}
	wg.Wait()
	// Every ACK has been handled once each agent's watch is parked.
	waitFor(t, "the 40 ACKs to park their watches", func() bool { return parkedWatches(s, resource.EndpointType) == 40 })
	s.cache.sotw.mu.Lock()
	after := len(s.groups[""].types[resource.EndpointType].wire.returned)
	s.cache.sotw.mu.Unlock()
	t.Logf("group's shared EDS returned map: %d names before, %d after", before, after)
	if after != before {
		t.Fatalf("the group's shared prepared.returned was modified by agents' subscriptions: %d -> %d names", before, after)
	}
}
