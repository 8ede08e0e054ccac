package xds

import (
	"context"
	"fmt"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// TestIDlessNodesDoNotLeakGroups: a request whose node has no id is never bound by the
// registry, so no snapshot is built for its labels; once its stream is gone, the
// state-of-the-world cache forgets the group entry the request created (it used to keep
// one per such label set for ever).
func TestIDlessNodesDoNotLeakGroups(t *testing.T) {
	s, conn := startServer(t, Options{GroupIdleTimeout: time.Nanosecond})
	if err := s.SetVersion(1, files(7001, nil, "127.0.0.1:9001")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range 50 {
		st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		req := &discoveryv3.DiscoveryRequest{Node: node("", map[string]string{"x": fmt.Sprint(i)}), TypeUrl: resource.ClusterType}
		if err := st.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the requests to reach the cache", func() bool { return len(s.cache.sotw.keys()) >= 50 })
	cancel()
	waitFor(t, "the cache to forget the id-less groups", func() bool {
		if err := s.SetVersion(2, files(7002, nil, "127.0.0.1:9001")); err != nil {
			t.Fatal(err)
		}
		s.groupsMu.RLock()
		known := len(s.groups)
		s.groupsMu.RUnlock()
		return len(s.cache.sotw.keys()) <= known
	})
}
