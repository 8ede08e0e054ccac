package compiler

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/flotilla-proxy/flotilla/controlplane/bundle"
	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
	configv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/config/v1"
)

// TestCompileRandomHTTP builds many HTTP listeners from small pools of good
// and bad values: whatever bundle.Validate accepts must compile into
// resources Envoy and the agent accept, with one route configuration per
// HTTP listener and one route per configured route.
func TestCompileRandomHTTP(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	one := func(pool []string) string { return pool[rng.IntN(len(pool))] }
	// rare is the bad value of a field, one time in 40.
	rare := func(good, bad string) string {
		if rng.IntN(40) == 0 {
			return bad
		}
		return good
	}
	some := func(pool []string) []string {
		var out []string
		for range rng.IntN(3) {
			out = append(out, one(pool))
		}
		return out
	}
	domains := []string{"*", "a.example", "*.a.example", "A.example", "api.*", "b.example:8080", "c.example", "*.c.example", "d*"}
	paths := []string{"", "", "/", "/api", "/api/", "/a-b"}
	regexes := []string{"^/v[0-9]+/.*", ".*", "/x"}
	methods := []string{"GET", "POST", "PUT"}
	clusters := []string{"c", "c", "h2"}
	headerNames := []string{"x-canary", "X-Foo", "x-bar", "x-baz"}
	matchNames := []string{"x-canary", ":authority", ":path", "X-Foo"}
	values := []string{"1", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", "v", "%REQ(x-a)%"}
	durations := []*durationpb.Duration{nil, nil, durationpb.New(0), durationpb.New(time.Second)}
	sizes := []string{"", "", "10MiB", "1", "1048576"}
	retryOn := []string{"5xx", "reset", "connect-failure", "gateway-error"}
	headerOps := func() *configv1.HeaderOps {
		if rng.IntN(3) != 0 {
			return nil
		}
		ops := &configv1.HeaderOps{Add: map[string]string{}}
		for i, name := range headerNames {
			switch rng.IntN(4) {
			case 0:
				ops.Add[name] = rare(one(values), "50%")
			case 1:
				if i%2 == 0 {
					ops.Remove = append(ops.Remove, rare(name, "Host"))
				}
			}
		}
		return ops
	}
	route := func() *configv1.HttpRoute {
		r := &configv1.HttpRoute{Name: rare("", "R")}
		if rng.IntN(4) != 0 {
			r.Match = &configv1.RouteMatch{Grpc: rng.IntN(4) == 0}
			switch rng.IntN(4) {
			case 0:
				r.Match.Prefix = rare(one(paths), "api")
			case 1:
				r.Match.Path = rare(one(paths), "/x?y")
			case 2:
				r.Match.Regex = rare(one(regexes), "(")
			}
			if rng.IntN(3) == 0 {
				r.Match.Methods = []string{rare(one(methods), "get")}
			}
			for range rng.IntN(3) {
				h := &configv1.HeaderMatch{Name: rare(one(matchNames), ":status")}
				switch rng.IntN(7) {
				case 0:
					h.Exact = rare("1", "")
				case 1:
					h.Prefix = "a"
				case 2:
					h.Suffix = "z"
				case 3:
					h.Contains = "c"
				case 4:
					h.Regex = rare(one(regexes), "[")
				case 5:
					p := rng.IntN(2) == 0
					h.Present = &p
				}
				r.Match.Headers = append(r.Match.Headers, h)
			}
		}
		forwards := false
		switch rng.IntN(5) {
		case 0, 1:
			r.Cluster, forwards = rare(one(clusters), "nope"), true
		case 2:
			r.WeightedClusters, forwards = []*configv1.WeightedCluster{{Cluster: "c", Weight: 9}, {Cluster: rare("h2", "c"), Weight: uint32(1 + rng.IntN(3))}}, true
		case 3:
			r.Redirect = &configv1.Redirect{Scheme: rare(one([]string{"", "https", "http"}), "ftp"), Code: []uint32{0, 301, 302, 303, 307, 308}[rng.IntN(6)], StripQuery: rng.IntN(2) == 0, Port: uint32(rng.IntN(2) * 8443)}
			if rng.IntN(2) == 0 {
				r.Redirect.Path = rare("/new", "new")
			} else {
				r.Redirect.PrefixRewrite = rare(one(paths), "x")
			}
		case 4:
			r.DirectResponse = &configv1.DirectResponse{Status: []uint32{200, 404, 503, 599}[rng.IntN(4)], Body: one([]string{"", "ok\n"})}
		}
		if rng.IntN(40) == 0 {
			r.DirectResponse = &configv1.DirectResponse{Status: 200} // a second action
		}
		if forwards || rng.IntN(40) == 0 {
			if rng.IntN(3) == 0 && r.GetMatch().GetRegex() == "" {
				r.PrefixRewrite = one([]string{"/", "/v1/"})
			}
			if rng.IntN(4) == 0 {
				r.HostRewrite = "internal.example"
			} else {
				r.AutoHostRewrite = rng.IntN(4) == 0
			}
			r.Websocket = rng.IntN(4) == 0
			r.Timeout, r.IdleTimeout = durations[rng.IntN(len(durations))], durations[rng.IntN(len(durations))]
			if rng.IntN(3) == 0 {
				r.Retries = &configv1.RetryPolicy{On: some(retryOn), Attempts: uint32(rng.IntN(11)), PerTryTimeout: durationpb.New(time.Duration(1+rng.IntN(3)) * time.Second)}
			}
		}
		r.RequestHeaders, r.ResponseHeaders = headerOps(), headerOps()
		return r
	}
	valid, routes := 0, 0
	for i := range 3000 {
		h := &configv1.HttpListener{
			XffTrustedHops:      uint32(rng.IntN(3)),
			IdleTimeout:         durations[rng.IntN(len(durations))],
			StreamIdleTimeout:   durations[rng.IntN(len(durations))],
			RequestTimeout:      durations[rng.IntN(len(durations))],
			MaxRequestHeadersKb: []uint32{0, 0, 1, 8192}[rng.IntN(4)],
			MaxRequestBody:      rare(one(sizes), "lots"),
			ServerName:          one([]string{"", "edge"}),
		}
		if rng.IntN(3) == 0 {
			b := rng.IntN(2) == 0
			h.H2C, h.RealIpHeader = &b, &b
		}
		if rng.IntN(3) == 0 {
			h.Compression = &configv1.Compression{ContentTypes: []string{rare("text/html", "text/html; q=1")}, Level: uint32(rng.IntN(10)), MinLength: uint32(rng.IntN(2000))}
		}
		if rng.IntN(3) == 0 {
			for range 1 + rng.IntN(3) {
				h.Routes = append(h.Routes, route())
			}
		} else {
			for range 1 + rng.IntN(3) {
				vh := &configv1.VirtualHost{Name: rare("", "api"), Domains: []string{rare(one(domains), "*b*")}, HttpsRedirect: rng.IntN(4) == 0,
					RequestHeaders: headerOps(), ResponseHeaders: headerOps()}
				for range 1 + rng.IntN(3) {
					vh.Routes = append(vh.Routes, route())
				}
				h.VirtualHosts = append(h.VirtualHosts, vh)
			}
		}
		l := &configv1.Listener{Name: "web", Address: ":8080", Http: h}
		if rng.IntN(4) == 0 {
			l.ProxyProtocol = &configv1.ProxyProtocolAccept{Trusted: []string{"10.0.0.0/8"}}
		}
		if rng.IntN(4) == 0 {
			l.MaxConnections = uint32(rng.IntN(3))
		}
		if rng.IntN(4) == 0 {
			l.AccessLog = &configv1.AccessLog{Path: "-", Format: rare(one([]string{"", "combined", "$request $status $route $http_x_foo"}), "$nope")}
		}
		b := &configv1.Bundle{
			Listeners: []*configv1.Listener{l},
			Clusters: []*configv1.Cluster{
				{Name: "c", Lb: bundle.LBPolicies[rng.IntN(len(bundle.LBPolicies))], Endpoints: []*configv1.Endpoint{{Address: "192.0.2.1:1"}}},
				{Name: "h2", Protocol: "http2", HttpIdleTimeout: durations[rng.IntN(3)], RetryBudget: &configv1.RetryBudget{Percent: uint32(rng.IntN(101))}, Endpoints: []*configv1.Endpoint{{Address: "192.0.2.2:1"}}},
			},
		}
		if bundle.Validate([]*adminv1.ConfigFile{{Path: "f.yaml", Bundle: b}}) != nil {
			continue
		}
		valid++
		r, err := Compile(b, nil)
		if err != nil {
			t.Fatalf("case %d: valid bundle does not compile: %v\n%v", i, err, b)
		}
		if err := envoyValid(r); err != nil {
			t.Fatalf("case %d: %v\n%v", i, err, b)
		}
		if err := agentAccepts(r); err != nil {
			t.Fatalf("case %d: %v\n%v", i, err, b)
		}
		if len(r.Routes) != 1 {
			t.Fatalf("case %d: %d route configurations, want 1", i, len(r.Routes))
		}
		want := 0
		for _, vh := range bundle.VirtualHosts(h) {
			want += len(vh.GetRoutes())
		}
		got := 0
		for _, vh := range r.Routes[0].GetVirtualHosts() {
			got += len(vh.GetRoutes())
		}
		if got != want {
			t.Fatalf("case %d: %d routes, want %d", i, got, want)
		}
		routes += got
	}
	if valid < 100 {
		t.Errorf("only %d of 3000 random bundles were valid: the generator needs better odds", valid)
	}
	t.Logf("%d valid bundles with %d routes compiled", valid, routes)
}

// bigHTTPBundle has one HTTP listener with n virtual hosts of three routes
// each (prefix, regex with a method, weighted), over n clusters.
func bigHTTPBundle(n int) *configv1.Bundle {
	h := &configv1.HttpListener{}
	b := &configv1.Bundle{Listeners: []*configv1.Listener{{Name: "web", Address: ":8080", Http: h}}}
	for i := range n {
		name := fmt.Sprintf("svc-%04d", i)
		b.Clusters = append(b.Clusters, &configv1.Cluster{Name: name, Endpoints: []*configv1.Endpoint{{Address: fmt.Sprintf("10.%d.%d.1:8080", i/256, i%256)}}})
		h.VirtualHosts = append(h.VirtualHosts, &configv1.VirtualHost{
			Name:    name,
			Domains: []string{name + ".example.com", "*." + name + ".example.com"},
			Routes: []*configv1.HttpRoute{
				{Match: &configv1.RouteMatch{Prefix: "/api/"}, Cluster: name, PrefixRewrite: "/", Retries: &configv1.RetryPolicy{}},
				{Match: &configv1.RouteMatch{Regex: "^/v[0-9]+/.*", Methods: []string{"GET", "POST"}}, Cluster: name},
				{WeightedClusters: []*configv1.WeightedCluster{{Cluster: name, Weight: 9}, {Cluster: "svc-0000", Weight: 1}}},
			},
		})
	}
	return b
}

func BenchmarkCompileHTTP1000VirtualHosts(b *testing.B) {
	bb := bigHTTPBundle(1000)
	b.ReportAllocs()
	for b.Loop() {
		r, err := Compile(bb, nil)
		if err != nil {
			b.Fatal(err)
		}
		if len(r.Routes[0].GetVirtualHosts()) != 1000 {
			b.Fatal(len(r.Routes[0].GetVirtualHosts()))
		}
	}
}
