package compiler

import (
	"slices"
	"strings"
	"testing"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	configv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/config/v1"
)

// TestCompileGRPC checks what go-control-plane's consistency check cannot
// see for gRPC clients: every api_listener names a route configuration of
// the group, every route a cluster of the group, every cluster has its
// endpoints, and every locality carries the weight gRPC requires.
func TestCompileGRPC(t *testing.T) {
	b := load(t, "testdata/grpc.yaml")
	for _, labels := range []map[string]string{nil, {"app": "shop"}, {"app": "other"}} {
		r, err := CompileGRPC(b, labels)
		if err != nil {
			t.Fatal(err)
		}
		routes := map[string]bool{}
		for _, rc := range r.Routes {
			routes[rc.GetName()] = true
			for _, vh := range rc.GetVirtualHosts() {
				for _, rt := range vh.GetRoutes() {
					if !slices.Contains(names(r.Clusters), rt.GetRoute().GetCluster()) {
						t.Errorf("%v: route configuration %q sends to %q, not in the group", labels, rc.GetName(), rt.GetRoute().GetCluster())
					}
				}
			}
		}
		for _, l := range r.Listeners {
			hcm := &hcmv3.HttpConnectionManager{}
			if err := l.GetApiListener().GetApiListener().UnmarshalTo(hcm); err != nil {
				t.Fatalf("%v: listener %q: %v", labels, l.GetName(), err)
			}
			if name := hcm.GetRds().GetRouteConfigName(); !routes[name] || name != GRPCRoutePrefix+l.GetName() {
				t.Errorf("%v: listener %q names route configuration %q", labels, l.GetName(), name)
			}
			if len(l.GetFilterChains()) != 0 || l.GetAddress() != nil {
				t.Errorf("%v: listener %q is not only an api_listener", labels, l.GetName())
			}
		}
		if len(r.Routes) != len(r.Listeners) || len(r.Endpoints) != len(r.Clusters) {
			t.Errorf("%v: %d listeners, %d routes, %d clusters, %d load assignments", labels, len(r.Listeners), len(r.Routes), len(r.Clusters), len(r.Endpoints))
		}
		for _, cla := range r.Endpoints {
			for _, loc := range cla.GetEndpoints() {
				if loc.GetLocality() == nil || loc.GetLoadBalancingWeight().GetValue() == 0 {
					t.Errorf("%v: %q has a locality without an ID or a weight", labels, cla.GetClusterName())
				}
			}
		}
		for _, c := range r.Clusters {
			if c.GetTransportSocket() != nil || len(c.GetHealthChecks()) > 0 || len(c.GetTypedExtensionProtocolOptions()) > 0 {
				t.Errorf("%v: cluster %q carries what gRPC clients do not use", labels, c.GetName())
			}
		}
	}
	want := map[string][]string{"": {"greeter"}, "app=shop": {"checkout.shop:50051", "greeter", "greeter-canary"}}
	for key, listeners := range want {
		labels := map[string]string{}
		if k, v, ok := strings.Cut(key, "="); ok {
			labels[k] = v
		}
		r, err := CompileGRPC(b, labels)
		if err != nil {
			t.Fatal(err)
		}
		if got := names(r.Listeners); !slices.Equal(got, listeners) {
			t.Errorf("labels %q: listeners %q, want %q", key, got, listeners)
		}
	}
}

func TestCompileGRPCErrors(t *testing.T) {
	tests := []struct {
		name   string
		bundle *configv1.Bundle
		want   string
	}{
		{"unknown cluster", &configv1.Bundle{GrpcServices: []*configv1.GrpcService{{Name: "g", Cluster: "nope"}}},
			`grpc service "g": unknown cluster "nope"`},
		{"maglev", &configv1.Bundle{
			GrpcServices: []*configv1.GrpcService{{Name: "g", Cluster: "c"}},
			Clusters:     []*configv1.Cluster{{Name: "c", Lb: "maglev", Endpoints: []*configv1.Endpoint{{Address: "192.0.2.1:1"}}}},
		}, `grpc service "g": cluster "c": lb "maglev" is not implemented by gRPC clients`},
		{"bad endpoint", &configv1.Bundle{
			GrpcServices: []*configv1.GrpcService{{Name: "g", Cluster: "c"}},
			Clusters:     []*configv1.Cluster{{Name: "c", Endpoints: []*configv1.Endpoint{{Address: "x"}}}},
		}, `cluster "c": endpoints[0]: "x" is not host:port (write IPv6 in brackets: "[2001:db8::1]:4242")`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := CompileGRPC(tt.bundle, nil); err == nil || err.Error() != tt.want {
				t.Errorf("err = %v, want %s", err, tt.want)
			}
		})
	}
}
