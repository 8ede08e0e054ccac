package xds

import (
	"strconv"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
	configv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/config/v1"
)

// twoHTTP: listener l on 7001 (routes "/"), and when mPort != 0 listener m on mPort (routes "/m").
func twoHTTP(mPort int) []*adminv1.ConfigFile {
	f := httpFiles(7001, "/", "127.0.0.1:9001")
	f[0].Bundle.GrpcServices = nil
	if mPort != 0 {
		f[0].Bundle.Listeners = append(f[0].Bundle.Listeners, &configv1.Listener{
			Name:    "m",
			Address: "127.0.0.1:" + itoa(mPort),
			Http: &configv1.HttpListener{Routes: []*configv1.HttpRoute{{
				Match: &configv1.RouteMatch{Prefix: "/m"}, Cluster: "c"}}},
		})
	}
	return f
}

func itoa(i int) string { return strconv.Itoa(i) }

// Regression (review of the shared-response cache): after an LDS NACK of a version adding an HTTP listener, the fixed
// listener (LDS-only change) needs route config "m", which the agent dropped
// (it was never needed); its RDS request for [l m] names the unchanged RDS
// version and is parked forever.
func TestNewRouteNameAfterLDSNACK(t *testing.T) {
	s, conn := startServer(t)
	if err := s.SetVersion(1, twoHTTP(0)); err != nil {
		t.Fatal(err)
	}
	a := newADS(t, conn, node("h1", nil))
	a.subscribe()
	cds := a.next(resource.ClusterType, "1")
	eds := a.next(resource.EndpointType, "1")
	lds := a.next(resource.ListenerType, "1")
	a.send(resource.RouteType, "", "", []string{"l"}, "")
	rds := a.next(resource.RouteType, "1")
	a.send(resource.ClusterType, "1", cds.GetNonce(), nil, "")
	a.send(resource.EndpointType, "1", eds.GetNonce(), []string{"c"}, "")
	a.send(resource.ListenerType, "1", lds.GetNonce(), nil, "")
	a.send(resource.RouteType, "1", rds.GetNonce(), []string{"l"}, "")
	waitFor(t, "RDS synced", func() bool { st, _ := state(s, "h1", "RDS"); return st == adminv1.SyncState_SYNC_STATE_SYNCED })

	// v2 adds listener m on a busy port: the agent rejects LDS 2.
	if err := s.SetVersion(2, twoHTTP(7002)); err != nil {
		t.Fatal(err)
	}
	lds = a.next(resource.ListenerType, "2")
	rds = a.next(resource.RouteType, "2") // l and m; the agent keeps l only
	a.send(resource.ListenerType, "1", lds.GetNonce(), nil, "bind 127.0.0.1:7002: address already in use")
	a.send(resource.RouteType, "2", rds.GetNonce(), []string{"l"}, "")
	waitFor(t, "LDS nacked", func() bool { st, _ := state(s, "h1", "LDS"); return st == adminv1.SyncState_SYNC_STATE_NACKED })

	// v3 moves m to a free port: LDS changes, RDS does not (still "2").
	if err := s.SetVersion(3, twoHTTP(7003)); err != nil {
		t.Fatal(err)
	}
	lds = a.next(resource.ListenerType, "3")
	// The agent holds LDS 3 pending and subscribes to m's routes.
	a.send(resource.RouteType, "2", rds.GetNonce(), []string{"l", "m"}, "")
	select {
	case r := <-a.recv:
		t.Logf("got %s version %q with %d resources", shortType(r.GetTypeUrl()), r.GetVersionInfo(), len(r.GetResources()))
	case <-time.After(3 * time.Second):
		t.Fatalf("no RDS response after subscribing to route config m (needed by the LDS 3 the agent holds pending): the listener never warms")
	}
}
