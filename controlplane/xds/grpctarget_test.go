package xds

import (
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	configv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/config/v1"
)

// Regression (review of the shared-response cache): a proxyless gRPC client that dials a second xDS target adds its name
// to the LDS subscription; the version is unchanged, and the request is parked.
func TestGRPCClientSecondTarget(t *testing.T) {
	s, conn := startServer(t)
	fs := httpFiles(7001, "/", "127.0.0.1:9001")
	fs[0].Bundle.GrpcServices = append(fs[0].Bundle.GrpcServices, &configv1.GrpcService{Name: "other:50051", Cluster: "c"})
	if err := s.SetVersion(1, fs); err != nil {
		t.Fatal(err)
	}
	n := node("client", map[string]string{"app": "shop"})
	n.UserAgentName = "gRPC Go"
	c := newADS(t, conn, n)
	c.send(resource.ListenerType, "", "", []string{"greeter"}, "")
	lds := c.next(resource.ListenerType, "1")
	c.send(resource.ListenerType, "1", lds.GetNonce(), []string{"greeter"}, "") // ACK
	waitFor(t, "the ACK to park the client's LDS watch", func() bool { return parkedWatches(s, resource.ListenerType) == 1 })
	c.send(resource.ListenerType, "1", lds.GetNonce(), []string{"greeter", "other:50051"}, "") // dials a second target
	select {
	case r := <-c.recv:
		t.Logf("LDS %s with %d listeners", r.GetVersionInfo(), len(r.GetResources()))
	case <-time.After(3 * time.Second):
		t.Fatal("no LDS response for the newly subscribed other:50051: the gRPC channel to it never resolves")
	}
}
