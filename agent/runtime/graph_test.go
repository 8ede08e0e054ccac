package runtime_test

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/flotilla-proxy/flotilla/agent/runtime"
	"github.com/flotilla-proxy/flotilla/agent/runtime/runtimetest"
)

// set collects resources into a Resources keyed by name.
func set(ls []*listenerv3.Listener, cs []*clusterv3.Cluster, eps []*endpointv3.ClusterLoadAssignment) *runtime.Resources {
	r := &runtime.Resources{
		Listeners: map[string]*listenerv3.Listener{},
		Clusters:  map[string]*clusterv3.Cluster{},
		Endpoints: map[string]*endpointv3.ClusterLoadAssignment{},
	}
	for _, l := range ls {
		r.Listeners[l.GetName()] = l
	}
	for _, c := range cs {
		r.Clusters[c.GetName()] = c
	}
	for _, e := range eps {
		r.Endpoints[e.GetClusterName()] = e
	}
	return r
}

func TestMissing(t *testing.T) {
	withService := runtimetest.EDSCluster("db")
	withService.EdsClusterConfig.ServiceName = "db-primary"
	tests := []struct {
		name string
		r    *runtime.Resources
		want string // "" means consistent
	}{
		{"empty", &runtime.Resources{}, ""},
		{"consistent", set(
			[]*listenerv3.Listener{runtimetest.Listener("dicom", "::", 4242, "pacs")},
			[]*clusterv3.Cluster{runtimetest.EDSCluster("pacs"), runtimetest.StaticCluster("unused")},
			[]*endpointv3.ClusterLoadAssignment{runtimetest.LoadAssignment("pacs")},
		), ""},
		{"listener before its cluster, EDS before its endpoints", set(
			[]*listenerv3.Listener{runtimetest.Listener("dicom", "::", 4242, "pacs")},
			[]*clusterv3.Cluster{runtimetest.EDSCluster("db")},
			nil,
		), `listener "dicom" references unknown cluster "pacs"; no endpoints yet for cluster "db"`},
		{"EDS service name", set(nil, []*clusterv3.Cluster{withService},
			[]*endpointv3.ClusterLoadAssignment{runtimetest.LoadAssignment("db")}),
			`no endpoints yet for cluster "db" (EDS service "db-primary")`},
		{"EDS service name present", set(nil, []*clusterv3.Cluster{withService},
			[]*endpointv3.ClusterLoadAssignment{runtimetest.LoadAssignment("db-primary")}), ""},
		{"stable order", set(
			[]*listenerv3.Listener{
				runtimetest.Listener("b", "127.0.0.1", 2, "y"),
				runtimetest.Listener("a", "127.0.0.1", 1, "x"),
			}, nil, nil,
		), `listener "a" references unknown cluster "x"; listener "b" references unknown cluster "y"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.r.Missing()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Missing() = %v, want nil", err)
			case tt.want != "" && (err == nil || err.Error() != tt.want):
				t.Fatalf("Missing() = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestEDSNames(t *testing.T) {
	a := runtimetest.EDSCluster("a")
	b := runtimetest.EDSCluster("b")
	b.EdsClusterConfig.ServiceName = "shared"
	c := runtimetest.EDSCluster("c")
	c.EdsClusterConfig.ServiceName = "shared"
	r := set(nil, []*clusterv3.Cluster{c, b, a, runtimetest.StaticCluster("static")}, nil)
	if got, want := r.EDSNames(), []string{"a", "shared"}; !slices.Equal(got, want) {
		t.Fatalf("EDSNames() = %q, want %q", got, want)
	}
	if got := (&runtime.Resources{}).EDSNames(); len(got) != 0 {
		t.Fatalf("EDSNames() of an empty set = %q, want none", got)
	}
}

func TestBuild(t *testing.T) {
	noIdle := runtimetest.TCPProxy("pacs")
	noIdle.IdleTimeout = durationpb.New(0)
	defaults := &tcpproxyv3.TcpProxy{StatPrefix: "x", ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: "static"}}
	unhealthy := runtimetest.Endpoint("192.0.2.9:104", 1)
	unhealthy.HealthStatus = corev3.HealthStatus_DRAINING
	healthy := runtimetest.Endpoint("192.0.2.8:104", 2)
	healthy.HealthStatus = corev3.HealthStatus_HEALTHY
	ipv6Only := runtimetest.Listener("v6only", "::", 4243, "pacs")
	ipv6Only.Address.GetSocketAddress().Ipv4Compat = false

	r := set(
		[]*listenerv3.Listener{
			runtimetest.Listener("dicom", "::", 4242, "pacs"),
			ipv6Only,
			runtimetest.Listener("loop6", "::1", 0, "pacs"),
			runtimetest.Listener("mapped", "::ffff:127.0.0.1", 8080, "pacs"),
			runtimetest.ListenerTCP("noidle", "127.0.0.1", 9000, noIdle),
			runtimetest.ListenerTCP("defaults", "0.0.0.0", 9001, defaults),
		},
		[]*clusterv3.Cluster{
			runtimetest.EDSCluster("pacs"),
			runtimetest.StaticCluster("static", runtimetest.Endpoint("[2001:db8::7]:5432", 1)),
		},
		[]*endpointv3.ClusterLoadAssignment{runtimetest.LoadAssignment("pacs",
			runtimetest.Endpoint("192.0.2.3:104", 1), unhealthy, healthy)},
	)
	g, err := runtime.Build(r)
	if err != nil {
		t.Fatalf("Build() = %v", err)
	}

	var names []string
	for _, l := range g.Listeners() {
		names = append(names, l.Name())
	}
	if want := []string{"defaults", "dicom", "loop6", "mapped", "noidle", "v6only"}; !slices.Equal(names, want) {
		t.Fatalf("Listeners() = %q, want %q", names, want)
	}

	t.Run("addresses", func(t *testing.T) {
		tests := []struct {
			listener string
			addr     string
			network  string
			v6only   bool
		}{
			{"dicom", "[::]:4242", "tcp6", false},
			{"v6only", "[::]:4243", "tcp6", true},
			{"loop6", "[::1]:0", "tcp6", true},
			{"mapped", "127.0.0.1:8080", "tcp4", false},
			{"defaults", "0.0.0.0:9001", "tcp4", false},
		}
		for _, tt := range tests {
			l := g.Listener(tt.listener)
			if l == nil {
				t.Fatalf("Listener(%q) = nil", tt.listener)
			}
			if got := l.Addr().String(); got != tt.addr {
				t.Errorf("%s: Addr() = %s, want %s", tt.listener, got, tt.addr)
			}
			if got := l.Network(); got != tt.network {
				t.Errorf("%s: Network() = %s, want %s", tt.listener, got, tt.network)
			}
			if got := l.V6Only(); got != tt.v6only {
				t.Errorf("%s: V6Only() = %v, want %v", tt.listener, got, tt.v6only)
			}
		}
	})

	t.Run("tcp_proxy", func(t *testing.T) {
		tests := []struct {
			listener string
			want     runtime.TCPProxy
		}{
			{"dicom", runtime.TCPProxy{Cluster: g.Cluster("pacs"), IdleTimeout: time.Hour, MaxConnectAttempts: 3}},
			{"noidle", runtime.TCPProxy{Cluster: g.Cluster("pacs"), IdleTimeout: 0, MaxConnectAttempts: 3}},
			{"defaults", runtime.TCPProxy{Cluster: g.Cluster("static"), IdleTimeout: runtime.DefaultIdleTimeout, MaxConnectAttempts: 1}},
		}
		for _, tt := range tests {
			if got := g.Listener(tt.listener).TCP(); got != tt.want {
				t.Errorf("%s: TCP() = %+v, want %+v", tt.listener, got, tt.want)
			}
		}
		if g.Cluster("pacs") == nil || g.Cluster("static") == nil {
			t.Fatal("clusters missing from the graph")
		}
	})

	t.Run("endpoints", func(t *testing.T) {
		pacs := g.Cluster("pacs")
		want := []runtime.Endpoint{
			{Addr: netip.MustParseAddrPort("192.0.2.3:104"), Weight: 1},
			{Addr: netip.MustParseAddrPort("192.0.2.8:104"), Weight: 2},
		}
		if got := pacs.Endpoints(); !slices.Equal(got, want) {
			t.Errorf("pacs endpoints = %v, want %v (DRAINING left out)", got, want)
		}
		if got := pacs.ConnectTimeout(); got != 5*time.Second {
			t.Errorf("pacs ConnectTimeout() = %v, want 5s", got)
		}
		static := g.Cluster("static")
		if got := static.Endpoints(); len(got) != 1 || got[0].Addr != netip.MustParseAddrPort("[2001:db8::7]:5432") {
			t.Errorf("static endpoints = %v", got)
		}
	})

	t.Run("does not keep the caller's maps", func(t *testing.T) {
		delete(r.Listeners, "dicom")
		if g.Listener("dicom") == nil || g.Resources().Listeners["dicom"] == nil {
			t.Fatal("graph changed when the input set changed")
		}
		dump := g.Resources()
		delete(dump.Clusters, "pacs")
		if g.Resources().Clusters["pacs"] == nil {
			t.Fatal("graph changed when a dump was modified")
		}
	})
}

func TestBuildErrors(t *testing.T) {
	tests := []struct {
		name     string
		r        *runtime.Resources
		want     string
		typeURL  string // "" means not a ResourceError
		resource string
	}{
		{"missing cluster", set([]*listenerv3.Listener{runtimetest.Listener("dicom", "::", 4242, "pacs")}, nil, nil),
			`listener "dicom" references unknown cluster "pacs"`, "", ""},
		{"invalid listener", set([]*listenerv3.Listener{listener(func(l *listenerv3.Listener) {
			l.UseOriginalDst = nil
			l.FilterChains = nil
		})}, nil, nil), `listener "web": filter_chains: at least one filter chain or a default_filter_chain is required`,
			resourcev3.ListenerType, "web"},
		{"duplicate address", set([]*listenerv3.Listener{
			runtimetest.Listener("a", "0.0.0.0", 80, "x"),
			runtimetest.Listener("b", "0.0.0.0", 80, "x"),
		}, []*clusterv3.Cluster{runtimetest.StaticCluster("x")}, nil),
			`listener "b": address 0.0.0.0:80 is already used by listener "a"`, resourcev3.ListenerType, "b"},
		{"key differs from name", &runtime.Resources{Clusters: map[string]*clusterv3.Cluster{"a": runtimetest.StaticCluster("b")}},
			`cluster "a": resource is named "b" but was delivered as "a"`, resourcev3.ClusterType, "a"},
		{"invalid load assignment", set(nil, nil, []*endpointv3.ClusterLoadAssignment{cla(func(a *endpointv3.ClusterLoadAssignment) {
			a.Endpoints[0].Priority = 2
		})}), `load assignment "backend": endpoints[0].priority 2 is not supported by flotilla-agent (priority 0 only)`,
			resourcev3.EndpointType, "backend"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := runtime.Build(tt.r)
			if err == nil {
				t.Fatalf("Build() = %v, nil; want error %q", g, tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("Build() error\n got: %s\nwant: %s", err, tt.want)
			}
			var re *runtime.ResourceError
			if isRE := errors.As(err, &re); isRE != (tt.typeURL != "") {
				t.Fatalf("Build() error is a ResourceError: %v, want %v", isRE, tt.typeURL != "")
			}
			if re != nil && (re.TypeURL != tt.typeURL || re.Name != tt.resource) {
				t.Errorf("ResourceError{TypeURL: %q, Name: %q}, want {%q, %q}", re.TypeURL, re.Name, tt.typeURL, tt.resource)
			}
		})
	}
}

// BenchmarkBuild1000Listeners builds a graph of 1,000 listeners and 1,000 EDS clusters with
// 3 endpoints each, the size of a large agent group.
func BenchmarkBuild1000Listeners(b *testing.B) {
	r := &runtime.Resources{
		Listeners: map[string]*listenerv3.Listener{},
		Clusters:  map[string]*clusterv3.Cluster{},
		Endpoints: map[string]*endpointv3.ClusterLoadAssignment{},
	}
	for i := range 1000 {
		name := fmt.Sprintf("svc-%04d", i)
		r.Listeners[name] = runtimetest.Listener(name, "::", uint32(10000+i), name)
		r.Clusters[name] = runtimetest.EDSCluster(name)
		r.Endpoints[name] = runtimetest.LoadAssignment(name,
			runtimetest.Endpoint(fmt.Sprintf("10.0.%d.%d:8080", i/250, i%250+1), 1),
			runtimetest.Endpoint(fmt.Sprintf("10.1.%d.%d:8080", i/250, i%250+1), 2),
			runtimetest.Endpoint(fmt.Sprintf("[2001:db8::%x]:8080", i+1), 1))
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := runtime.Build(r); err != nil {
			b.Fatal(err)
		}
	}
}
