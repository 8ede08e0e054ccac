package runtime_test

import (
	"net/http"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/flotilla-proxy/flotilla/agent/httproute"
	"github.com/flotilla-proxy/flotilla/agent/runtime"
)

// FuzzRouteConfiguration feeds RouteConfiguration bytes, as they come over RDS, through
// Validate and Build, then routes a request with whatever table results: nothing may panic,
// and a configuration Validate accepts must build.
func FuzzRouteConfiguration(f *testing.F) {
	for _, rc := range []*routev3.RouteConfiguration{rc(nil), httpResources().Routes["web"]} {
		b, err := proto.Marshal(rc)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, "api.example.com:8080", "/api/x?y=1")
	}
	f.Fuzz(func(t *testing.T, b []byte, host, path string) {
		m := &routev3.RouteConfiguration{}
		if proto.Unmarshal(b, m) != nil {
			return
		}
		if runtime.Validate(resourcev3.RouteType, m) != nil {
			return
		}
		r := httpResources()
		r.Routes = map[string]*routev3.RouteConfiguration{"web": m}
		m.Name = "web"
		g, err := runtime.Build(r)
		if err != nil {
			if r.Missing() == nil {
				t.Fatalf("valid route configuration does not build: %v", err)
			}
			return
		}
		_, rt := g.RouteTable("web").Select(&httproute.Request{Authority: host, Path: path, Method: "GET", Scheme: "http", Header: http.Header{"X": {"1"}}})
		if rt != nil {
			rt.RewritePath(path)
			if rt.Redirect != nil {
				rt.Redirect.Location("http", host, path, "", rt.Match.Prefix)
			}
		}
	})
}
