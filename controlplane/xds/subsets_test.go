package xds

import (
	"context"
	"fmt"
	"sync"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
	configv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/config/v1"
)

func manyClusters(n int, ep string) []*adminv1.ConfigFile {
	f := files(7001, nil, ep)
	for i := range n {
		name := fmt.Sprintf("d%d", i)
		f[0].Bundle.Listeners = append(f[0].Bundle.Listeners, &configv1.Listener{Name: "l" + name, Address: fmt.Sprintf("127.0.0.1:%d", 7100+i), Tcp: &configv1.TcpProxy{Cluster: name}})
		f[0].Bundle.Clusters = append(f[0].Bundle.Clusters, &configv1.Cluster{Name: name, Endpoints: []*configv1.Endpoint{{Address: ep}}})
	}
	return f
}

// Regression (review of the shared-response cache): agents of one group ACK a new EDS version with different subsets at once.
func TestConcurrentSubsetACKs(t *testing.T) {
	s, conn := startServer(t)
	s.nodeSeen(node("x", nil))
	const agents, clusters = 300, 200
	if err := s.SetVersion(1, manyClusters(clusters, "127.0.0.1:9001")); err != nil {
		t.Fatal(err)
	}
	type ag struct {
		st    discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
		names []string
	}
	var as []*ag
	for i := range agents {
		st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		names := []string{"c"}
		for j := range clusters {
			if (i+j)%3 != 0 {
				names = append(names, fmt.Sprintf("d%d", j))
			}
		}
		a := &ag{st: st, names: names}
		as = append(as, a)
		st.Send(&discoveryv3.DiscoveryRequest{Node: node(fmt.Sprintf("a%d", i), nil), TypeUrl: resource.EndpointType, ResourceNames: names})
	}
	for v := 1; v <= 20; v++ {
		if v > 1 {
			if err := s.SetVersion(uint64(v), manyClusters(clusters, fmt.Sprintf("127.0.0.1:%d", 9000+v))); err != nil {
				t.Fatal(err)
			}
		}
		var wg sync.WaitGroup
		for _, a := range as {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := a.st.Recv()
				if err != nil {
					t.Error(err)
					return
				}
				a.st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.EndpointType, VersionInfo: r.GetVersionInfo(), ResponseNonce: r.GetNonce(), ResourceNames: a.names})
			}()
		}
		wg.Wait()
	}
}
