package lastgood_test

import (
	"path/filepath"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"

	"github.com/flotilla-proxy/flotilla/agent/lastgood"
	"github.com/flotilla-proxy/flotilla/agent/runtime"
	"github.com/flotilla-proxy/flotilla/agent/runtime/runtimetest"
	"github.com/flotilla-proxy/flotilla/agent/xdsclient"
)

// TestRoundTripRoutes: an HTTP listener and its RDS route configuration survive a save and
// a load, and the loaded set builds.
func TestRoundTripRoutes(t *testing.T) {
	rc := runtimetest.RouteConfig("web", runtimetest.VirtualHost("web", []string{"*"}, runtimetest.PrefixRoute("/", "backend")))
	set := &runtime.Resources{
		Listeners: map[string]*listenerv3.Listener{"web": runtimetest.HTTPListener("web", "127.0.0.1", 10080, runtimetest.HTTPConnectionManager("web", "web"))},
		Routes:    map[string]*routev3.RouteConfiguration{"web": rc},
	}
	xdsclient.Put(set, xdsclient.ClusterType, map[string]proto.Message{"backend": runtimetest.StaticCluster("backend", runtimetest.Endpoint("127.0.0.1:20001", 1))})
	versions := map[string]string{xdsclient.ListenerType: "v2", xdsclient.RouteType: "v3", xdsclient.ClusterType: "v1"}
	snap, err := lastgood.FromResources("agent-1", set, versions, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), lastgood.FileName)
	if err := lastgood.Save(path, snap); err != nil {
		t.Fatal(err)
	}
	loaded, err := lastgood.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	got, gotVersions, err := lastgood.ToResources(loaded)
	if err != nil {
		t.Fatal(err)
	}
	if gotVersions[xdsclient.RouteType] != "v3" || !proto.Equal(got.Routes["web"], rc) {
		t.Fatalf("routes = %v, versions = %v", got.Routes, gotVersions)
	}
	g, err := runtime.Build(got)
	if err != nil {
		t.Fatal(err)
	}
	if g.RouteTable("web") == nil {
		t.Error("loaded graph has no route table")
	}
}
