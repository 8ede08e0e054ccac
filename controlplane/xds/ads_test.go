package xds

import (
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
	"google.golang.org/protobuf/proto"

	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
	configv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/config/v1"
)

func TestDrops(t *testing.T) {
	returned := map[string]string{"a": "1", "b": "1"}
	legacy := stream.NewSotwSubscription(nil, true)
	legacy.SetReturnedResources(returned)
	named := stream.NewSotwSubscription([]string{"a", "b"}, true)
	named.SetReturnedResources(returned)
	explicit := stream.NewSotwSubscription([]string{"*"}, true)
	explicit.SetReturnedResources(returned)
	empty := stream.NewSotwSubscription([]string{"a"}, true)
	for _, tc := range []struct {
		name   string
		sub    stream.Subscription
		legacy bool
		names  []string
		want   bool
	}{
		{"legacy wildcard, empty request", legacy, true, nil, false},
		{"legacy wildcard becomes named", legacy, true, []string{"a"}, true},
		{"named, same names", named, false, []string{"a", "b"}, false},
		{"named, same names twice", named, false, []string{"a", "b", "a"}, false},
		{"named, more names", named, false, []string{"a", "b", "c"}, false},
		{"named, as many names, one other", named, false, []string{"a", "c"}, true},
		{"named, fewer names", named, false, []string{"a"}, true},
		{"named, unsubscribes all", named, false, nil, true},
		{"explicit wildcard kept", explicit, false, []string{"*"}, false},
		{"explicit wildcard plus names", explicit, false, []string{"*", "a"}, false},
		{"explicit wildcard dropped", explicit, false, []string{"a"}, true},
		{"explicit wildcard, then empty", explicit, false, nil, true},
		{"nothing returned yet", empty, false, []string{"b"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := drops(tc.sub, tc.legacy, tc.names); got != tc.want {
				t.Fatalf("drops(%v) = %v, want %v", tc.names, got, tc.want)
			}
			// What drops predicts is what SetResourceSubscription does.
			sub := tc.sub
			before := len(sub.ReturnedResources())
			cp := map[string]string{}
			for k, v := range sub.ReturnedResources() {
				cp[k] = v
			}
			sub.SetReturnedResources(cp)
			sub.SetResourceSubscription(tc.names)
			if deleted := len(sub.ReturnedResources()) < before; deleted != tc.want {
				t.Fatalf("SetResourceSubscription(%v) deleted = %v, drops said %v", tc.names, deleted, tc.want)
			}
		})
	}
}

// A request answering an older response than the last one sent for its type
// is stale (xDS protocol, "Resource updates") and ignored: answering it
// would send the agent the newer version a second time.
func TestADSStaleNonceIgnored(t *testing.T) {
	s, conn := startServer(t)
	if err := s.SetVersion(1, files(7001, nil, "127.0.0.1:9001")); err != nil {
		t.Fatal(err)
	}
	a := newADS(t, conn, node("a1", nil))
	a.send(resource.ClusterType, "", "", nil, "")
	cds1 := a.next(resource.ClusterType, "1")
	a.send(resource.ClusterType, "1", cds1.GetNonce(), nil, "") // parks the watch
	waitFor(t, "the CDS watch parked", func() bool { return parkedWatches(s, resource.ClusterType) == 1 })
	// Version 2 adds a cluster and a listener using it: CDS changes.
	f := files(7001, nil, "127.0.0.1:9001")
	c2 := proto.Clone(f[0].Bundle.Clusters[0]).(*configv1.Cluster)
	c2.Name = "c2"
	f[0].Bundle.Clusters = append(f[0].Bundle.Clusters, c2)
	f[0].Bundle.Listeners = append(f[0].Bundle.Listeners, &configv1.Listener{Name: "l2", Address: "127.0.0.1:7002", Tcp: &configv1.TcpProxy{Cluster: "c2"}})
	if err := s.SetVersion(2, f); err != nil {
		t.Fatal(err)
	}
	cds2 := a.next(resource.ClusterType, "2")
	// A second request answering the first response (the agent sent it before
	// the second response reached it) arrives after the second was sent.
	a.send(resource.ClusterType, "1", cds1.GetNonce(), nil, "")
	// A listener request is answered at once; a CDS response before it would
	// mean the stale request was answered.
	a.send(resource.ListenerType, "", "", nil, "")
	a.next(resource.ListenerType, "2")
	// The real ACK parks the watch.
	a.send(resource.ClusterType, "2", cds2.GetNonce(), nil, "")
	waitFor(t, "CDS synced", func() bool {
		st, _ := state(s, "a1", "CDS")
		return st == adminv1.SyncState_SYNC_STATE_SYNCED
	})
}
