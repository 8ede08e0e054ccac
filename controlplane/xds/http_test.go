package xds

import (
	"fmt"
	"slices"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
	configv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/config/v1"
)

// httpFiles builds a one-file bundle: HTTP listener "l" on port whose one
// route sends prefix to cluster "c" (endpoints eps), and gRPC service
// "greeter" to cluster "c".
func httpFiles(port int, prefix string, eps ...string) []*adminv1.ConfigFile {
	c := &configv1.Cluster{Name: "c"}
	for _, e := range eps {
		c.Endpoints = append(c.Endpoints, &configv1.Endpoint{Address: e})
	}
	b := &configv1.Bundle{
		Listeners: []*configv1.Listener{{
			Name:    "l",
			Address: fmt.Sprintf("127.0.0.1:%d", port),
			Http: &configv1.HttpListener{Routes: []*configv1.HttpRoute{{
				Match:   &configv1.RouteMatch{Prefix: prefix},
				Cluster: "c",
			}}},
		}},
		Clusters:     []*configv1.Cluster{c},
		GrpcServices: []*configv1.GrpcService{{Name: "greeter", Cluster: "c"}},
	}
	return []*adminv1.ConfigFile{{Path: "http.yaml", Bundle: b}}
}

// routePrefix is the prefix of the first route of an RDS response's only
// RouteConfiguration.
func routePrefix(t *testing.T, r *discoveryv3.DiscoveryResponse) string {
	t.Helper()
	if len(r.GetResources()) != 1 {
		t.Fatalf("RDS carried %d route configurations, want 1", len(r.GetResources()))
	}
	rc := &routev3.RouteConfiguration{}
	if err := r.GetResources()[0].UnmarshalTo(rc); err != nil {
		t.Fatal(err)
	}
	return rc.GetVirtualHosts()[0].GetRoutes()[0].GetMatch().GetPrefix()
}

// TestRDS: route configurations travel over RDS after the listeners that
// name them, with their own content-hash version, and a rejected version is
// held like any other type's.
func TestRDS(t *testing.T) {
	s, conn := startServer(t)
	if err := s.SetVersion(1, httpFiles(7001, "/", "127.0.0.1:9001")); err != nil {
		t.Fatal(err)
	}
	a := newADS(t, conn, node("h1", map[string]string{"dc": "ams"}))
	a.subscribe()
	cds := a.next(resource.ClusterType, "1")
	eds := a.next(resource.EndpointType, "1")
	lds := a.next(resource.ListenerType, "1")
	// The agent asks for the route configurations its listeners name.
	a.send(resource.RouteType, "", "", []string{"l"}, "")
	rds := a.next(resource.RouteType, "1")
	if got := routePrefix(t, rds); got != "/" {
		t.Fatalf("route prefix %q, want /", got)
	}
	a.send(resource.ClusterType, "1", cds.GetNonce(), nil, "")
	a.send(resource.EndpointType, "1", eds.GetNonce(), []string{"c"}, "")
	a.send(resource.ListenerType, "1", lds.GetNonce(), nil, "")
	a.send(resource.RouteType, "1", rds.GetNonce(), []string{"l"}, "")
	for _, short := range []string{"CDS", "EDS", "LDS", "RDS"} {
		waitFor(t, short+" synced", func() bool { st, _ := state(s, "h1", short); return st == adminv1.SyncState_SYNC_STATE_SYNCED })
	}
	// Only the route changes: only RDS is pushed; the listener keeps version 1.
	if err := s.SetVersion(2, httpFiles(7001, "/v2", "127.0.0.1:9001")); err != nil {
		t.Fatal(err)
	}
	rds = a.next(resource.RouteType, "2")
	if got := routePrefix(t, rds); got != "/v2" {
		t.Fatalf("route prefix %q, want /v2", got)
	}
	a.send(resource.RouteType, "1", rds.GetNonce(), []string{"l"}, `route configuration "l": regex does not compile`)
	waitFor(t, "RDS nacked", func() bool { st, _ := state(s, "h1", "RDS"); return st == adminv1.SyncState_SYNC_STATE_NACKED })
	if _, nack := state(s, "h1", "RDS"); nack.GetVersion() != "2" || nack.GetMessage() == "" {
		t.Fatalf("last RDS nack = %v, want version 2 with the message", nack)
	}
	if st, _ := state(s, "h1", "LDS"); st != adminv1.SyncState_SYNC_STATE_SYNCED {
		t.Fatalf("LDS state after an RDS NACK = %v, want SYNCED", st)
	}
	// An endpoint-only change: the stream carries EDS and no resend of RDS 2.
	if err := s.SetVersion(3, httpFiles(7001, "/v2", "127.0.0.1:9002")); err != nil {
		t.Fatal(err)
	}
	eds = a.next(resource.EndpointType, "3")
	a.send(resource.EndpointType, "3", eds.GetNonce(), []string{"c"}, "")
	// A new route version is pushed again.
	if err := s.SetVersion(4, httpFiles(7001, "/v4", "127.0.0.1:9002")); err != nil {
		t.Fatal(err)
	}
	rds = a.next(resource.RouteType, "4")
	a.send(resource.RouteType, "4", rds.GetNonce(), []string{"l"}, "")
	waitFor(t, "RDS synced on 4", func() bool { st, _ := state(s, "h1", "RDS"); return st == adminv1.SyncState_SYNC_STATE_SYNCED })

	// A change of clusters, endpoints, listeners and routes at once arrives
	// make-before-break: CDS, EDS, LDS, then RDS.
	v5 := httpFiles(7002, "/v5", "127.0.0.1:9005")
	v5[0].Bundle.Clusters[0].Protocol = "http2"
	if err := s.SetVersion(5, v5); err != nil {
		t.Fatal(err)
	}
	a.next(resource.ClusterType, "5")
	a.next(resource.EndpointType, "5")
	a.next(resource.ListenerType, "5")
	a.next(resource.RouteType, "5")
}

// TestGRPCClientsGroupedApart: a gRPC client and an agent with the same
// labels get different snapshots: the agent the HTTP listener, the gRPC
// client only the api_listener of the gRPC service, and each only its own
// route configuration, even when it names just one of several.
func TestGRPCClientsGroupedApart(t *testing.T) {
	s, conn := startServer(t)
	fs := httpFiles(7001, "/", "127.0.0.1:9001")
	fs[0].Bundle.GrpcServices = append(fs[0].Bundle.GrpcServices, &configv1.GrpcService{Name: "other:50051", Cluster: "c"})
	if err := s.SetVersion(1, fs); err != nil {
		t.Fatal(err)
	}
	listeners := func(r *discoveryv3.DiscoveryResponse) (names []string, api []bool) {
		for _, a := range r.GetResources() {
			l := &listenerv3.Listener{}
			if err := a.UnmarshalTo(l); err != nil {
				t.Fatal(err)
			}
			names = append(names, l.GetName())
			api = append(api, l.GetApiListener() != nil)
		}
		return names, api
	}

	agent := newADS(t, conn, node("agent", map[string]string{"app": "shop"}))
	agent.send(resource.ListenerType, "", "", nil, "")
	names, api := listeners(agent.next(resource.ListenerType, "1"))
	if !slices.Equal(names, []string{"l"}) || api[0] {
		t.Fatalf("agent got listeners %q (api_listener %v), want only l", names, api)
	}

	n := node("client", map[string]string{"app": "shop"})
	n.UserAgentName = "gRPC Go"
	client := newADS(t, conn, n)
	client.send(resource.ListenerType, "", "", []string{"greeter"}, "")
	names, api = listeners(client.next(resource.ListenerType, "1"))
	if !slices.Contains(names, "greeter") || slices.Contains(names, "l") || slices.Contains(api, false) {
		t.Fatalf("gRPC client got listeners %q (api_listener %v), want greeter's api_listener and no agent listener", names, api)
	}
	client.send(resource.RouteType, "", "", []string{"grpc:greeter"}, "")
	rds := client.next(resource.RouteType, "1")
	var routes []string
	for _, a := range rds.GetResources() {
		rc := &routev3.RouteConfiguration{}
		if err := a.UnmarshalTo(rc); err != nil {
			t.Fatal(err)
		}
		routes = append(routes, rc.GetName())
	}
	if !slices.Contains(routes, "grpc:greeter") || slices.Contains(routes, "l") {
		t.Fatalf("gRPC client got route configurations %q", routes)
	}
	waitFor(t, "two groups", func() bool { return len(s.registry.Groups()) == 2 })
	if err := s.Check(fs); err != nil {
		t.Fatal(err)
	}
}

// TestDeltaRDS: over delta ADS too, a route-only change is an RDS delta, a
// rejected one is held, and the next change of another type flows.
func TestDeltaRDS(t *testing.T) {
	s, conn := startServer(t)
	if err := s.SetVersion(1, httpFiles(7001, "/", "127.0.0.1:9001")); err != nil {
		t.Fatal(err)
	}
	d := newDelta(t, conn, node("d1", nil))
	for _, typ := range []string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType} {
		d.send(typ, "", "")
		r := d.recv(typ)
		d.send(typ, r.GetNonce(), "")
	}
	if err := s.SetVersion(2, httpFiles(7001, "/v2", "127.0.0.1:9001")); err != nil {
		t.Fatal(err)
	}
	r := d.recv(resource.RouteType)
	if len(r.GetResources()) != 1 || r.GetResources()[0].GetName() != "l" {
		t.Fatalf("RDS delta carried %v, want route configuration l", r.GetResources())
	}
	d.send(resource.RouteType, r.GetNonce(), "bad route")
	waitFor(t, "delta RDS nacked", func() bool { st, _ := state(s, "d1", "RDS"); return st == adminv1.SyncState_SYNC_STATE_NACKED })
	// The next change is of endpoints only: the stream carries EDS, not a
	// resend of the rejected routes.
	if err := s.SetVersion(3, httpFiles(7001, "/v2", "127.0.0.1:9002")); err != nil {
		t.Fatal(err)
	}
	r = d.recv(resource.EndpointType)
	d.send(resource.EndpointType, r.GetNonce(), "")
	if err := s.SetVersion(4, httpFiles(7001, "/v4", "127.0.0.1:9002")); err != nil {
		t.Fatal(err)
	}
	r = d.recv(resource.RouteType)
	d.send(resource.RouteType, r.GetNonce(), "")
	waitFor(t, "delta RDS synced", func() bool { st, _ := state(s, "d1", "RDS"); return st == adminv1.SyncState_SYNC_STATE_SYNCED })
}
