package xdsclient_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"

	"github.com/flotilla-proxy/flotilla/agent/runtime"
	"github.com/flotilla-proxy/flotilla/agent/runtime/runtimetest"
	"github.com/flotilla-proxy/flotilla/agent/xdsclient"
	"github.com/flotilla-proxy/flotilla/agent/xdsclient/xdstest"
)

var rds = xdsclient.RouteType

// rdsRequested reports whether the client's latest RDS request asked for exactly names.
func rdsRequested(srv *xdstest.Server, names ...string) bool {
	for _, r := range slices.Backward(srv.Requests()) {
		if r.GetTypeUrl() == rds {
			return slices.Equal(r.GetResourceNames(), names)
		}
	}
	return false
}

// routes returns route configuration name sending every request to cluster.
func routes(name, cluster string) *routev3.RouteConfiguration {
	return runtimetest.RouteConfig(name, runtimetest.VirtualHost(name, []string{"*"}, runtimetest.PrefixRoute("/", cluster)))
}

// TestRoutesFollowListeners: the RDS subscription is the route_config_name of the
// listeners; a listener is held until its route configuration arrives, then both are
// applied together; a route-only change is applied with the listeners untouched; a bad
// route configuration NACKs RDS alone and the running routes stay; a route configuration
// naming a cluster that does not exist is held like a listener would be.
func TestRoutesFollowListeners(t *testing.T) {
	web := runtimetest.HTTPListener("web", "127.0.0.1", 10080, runtimetest.HTTPConnectionManager("web", "web-routes"))
	backend := runtimetest.StaticCluster("backend", runtimetest.Endpoint("127.0.0.1:20001", 1))
	other := runtimetest.StaticCluster("other", runtimetest.Endpoint("127.0.0.1:20002", 1))

	srv := xdstest.NewServer(t, "")
	srv.SetSnapshot(t, node, "v1", web, backend, other)
	rec := &recorder{}
	runClient(t, rec, nil, srv.Addr())

	acked(t, srv, "v1", cds)
	xdstest.WaitFor(t, timeout, "RDS request for web-routes", func() bool { return rdsRequested(srv, "web-routes") })
	if _, ok := srv.Answered(lds, "v1", "v1"); ok {
		t.Fatal("LDS v1 ACKed before its route configuration arrived")
	}
	for _, c := range rec.calls() {
		if len(c.set.Listeners) != 0 {
			t.Fatalf("listener applied before its route configuration: %v", keys(c.set.Listeners))
		}
	}

	// The route configuration arrives: listener and routes are applied together.
	srv.SetSnapshot(t, node, "v2", web, backend, other, routes("web-routes", "backend"))
	acked(t, srv, "v2", lds, rds)
	last, _ := rec.last()
	if _, ok := last.set.Routes["web-routes"]; !ok || last.set.Listeners["web"] == nil {
		t.Fatalf("applied routes = %v, listeners = %v", keys(last.set.Routes), keys(last.set.Listeners))
	}
	if last.versions[rds] != "v2" {
		t.Errorf("versions = %v", last.versions)
	}
	g, err := runtime.Build(last.set)
	if err != nil {
		t.Fatalf("applied set does not build: %v", err)
	}
	if g.RouteTable("web-routes") == nil {
		t.Fatal("graph has no route table web-routes")
	}

	// A route-only change: the listener the applier gets is the very same.
	n := len(rec.calls())
	srv.SetSnapshot(t, node, "v3", web, backend, other, routes("web-routes", "other"))
	acked(t, srv, "v3", rds)
	xdstest.WaitFor(t, timeout, "route change applied", func() bool {
		last, _ := rec.last()
		return last.versions[rds] == "v3"
	})
	last, _ = rec.last()
	if got := last.set.Routes["web-routes"].GetVirtualHosts()[0].GetRoutes()[0].GetRoute().GetCluster(); got != "other" {
		t.Errorf("route cluster = %q, want other", got)
	}
	if !proto.Equal(last.set.Listeners["web"], web) {
		t.Error("listener changed with a route-only update")
	}
	if len(rec.calls()) <= n {
		t.Error("route change not applied")
	}

	// A bad route configuration: RDS alone is NACKed, naming it; v3's routes keep running.
	bad := routes("web-routes", "backend")
	bad.VirtualHosts[0].Routes[0].Match.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "(["}}
	srv.SetSnapshot(t, node, "v4", web, backend, other, bad)
	nack := nacked(t, srv, rds, "v4", "v3")
	if msg := nack.GetErrorDetail().GetMessage(); !strings.Contains(msg, `route configuration "web-routes": virtual_hosts[0].routes[0].match.safe_regex.regex`) {
		t.Errorf("NACK message = %q", msg)
	}
	acked(t, srv, "v4", cds, lds)
	last, _ = rec.last()
	if got := last.set.Routes["web-routes"].GetVirtualHosts()[0].GetRoutes()[0].GetRoute().GetCluster(); got != "other" || last.versions[rds] != "v3" {
		t.Errorf("after NACK: route cluster = %q, rds version %q; want v3's", got, last.versions[rds])
	}

	// Routes naming a cluster that is not there are held (then NACKed after the hold);
	// the applier never sees an inconsistent set.
	srv.SetSnapshot(t, node, "v5", web, backend, other, routes("web-routes", "missing"))
	xdstest.WaitFor(t, timeout, "RDS v5 sent", func() bool {
		for _, r := range srv.Responses() {
			if r.GetTypeUrl() == rds && r.GetVersionInfo() == "v5" {
				return true
			}
		}
		return false
	})
	for _, c := range rec.calls() {
		if err := c.set.Missing(); err != nil {
			t.Errorf("applier got an inconsistent set: %v", err)
		}
	}

	// The listener goes away: the RDS subscription empties and the routes are dropped.
	srv.SetSnapshot(t, node, "v6", backend, other)
	acked(t, srv, "v6", lds)
	xdstest.WaitFor(t, timeout, "routes dropped", func() bool {
		last, _ := rec.last()
		return len(last.set.Routes) == 0 && len(last.set.Listeners) == 0
	})
	xdstest.WaitFor(t, timeout, "empty RDS subscription", func() bool { return rdsRequested(srv) })
}

// TestSetRunningSubscribesRoutes: the route configurations of a config restored from disk
// are asked for in the stream's first RDS request, before any response.
func TestSetRunningSubscribesRoutes(t *testing.T) {
	srv := xdstest.NewServer(t, "")
	seed := &runtime.Resources{}
	xdsclient.Put(seed, lds, map[string]proto.Message{"web": runtimetest.HTTPListener("web", "127.0.0.1", 10080, runtimetest.HTTPConnectionManager("web", "web-routes"))})
	xdsclient.Put(seed, rds, map[string]proto.Message{"web-routes": routes("web-routes", "backend")})
	xdsclient.Put(seed, cds, map[string]proto.Message{"backend": runtimetest.StaticCluster("backend", runtimetest.Endpoint("127.0.0.1:20001", 1))})
	rec := &recorder{}
	c, err := xdsclient.New(xdsclient.Options{Servers: []string{srv.Addr()}, NodeID: node, Applier: rec})
	if err != nil {
		t.Fatal(err)
	}
	c.SetRunning(seed, map[string]string{lds: "disk-1", rds: "disk-1", cds: "disk-1"})
	if st := c.Status(); st.Types[rds].Version != "disk-1" {
		t.Errorf("status after SetRunning = %+v", st.Types)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	xdstest.WaitFor(t, timeout, "the first RDS request", func() bool {
		for _, r := range srv.Requests() {
			if r.GetTypeUrl() == rds {
				if !slices.Equal(r.GetResourceNames(), []string{"web-routes"}) || r.GetVersionInfo() != "" {
					t.Errorf("first RDS request = %v", r)
				}
				return true
			}
		}
		return false
	})

	srv.SetSnapshot(t, node, "cp-1",
		runtimetest.HTTPListener("web", "127.0.0.1", 10080, runtimetest.HTTPConnectionManager("web", "web-routes")),
		runtimetest.StaticCluster("backend", runtimetest.Endpoint("127.0.0.1:20001", 1)),
		routes("web-routes", "backend"))
	acked(t, srv, "cp-1", cds, lds, rds)
}
