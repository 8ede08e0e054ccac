package runtime_test

import (
	"strings"
	"testing"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	udpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/udp/udp_proxy/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/flotilla-proxy/flotilla/agent/runtime"
	"github.com/flotilla-proxy/flotilla/agent/runtime/runtimetest"
)

func TestUDPListener(t *testing.T) {
	t.Run("compiles", func(t *testing.T) {
		l := runtimetest.UDPListener("dns", "::", 5353, "backend", 30*time.Second)
		cfg := runtimetest.UDPProxyOf(l)
		cfg.HashPolicies = []*udpproxyv3.UdpProxyConfig_HashPolicy{{PolicySpecifier: &udpproxyv3.UdpProxyConfig_HashPolicy_SourceIp{SourceIp: true}}}
		cfg.AccessLog = []*accesslogv3.AccessLog{runtimetest.FileAccessLog("/dev/stdout", "%DOWNSTREAM_REMOTE_ADDRESS% %PROTOCOL%\n", nil)}
		runtimetest.SetUDPProxy(l, cfg)
		// A TCP listener on the same port does not clash with the UDP one.
		tcp := runtimetest.Listener("dns-tcp", "::", 5353, "backend")
		g, err := runtime.Build(set([]*listenerv3.Listener{l, tcp}, []*clusterv3.Cluster{eds(func(c *clusterv3.Cluster) {
			c.CircuitBreakers = runtimetest.CircuitBreakers(100)
		})}, []*endpointv3.ClusterLoadAssignment{cla(nil)}))
		if err != nil {
			t.Fatal(err)
		}
		dns := g.Listener("dns")
		u := dns.UDP()
		if u == nil {
			t.Fatal("UDP() = nil")
		}
		if dns.Network() != "udp6" || u.Cluster.Name() != "backend" || u.IdleTimeout != 30*time.Second || !u.HashSourceIP {
			t.Errorf("got network %s, %+v", dns.Network(), u)
		}
		if u.Cluster.MaxConnections() != 100 {
			t.Errorf("max sessions = %d, want 100", u.Cluster.MaxConnections())
		}
		if al := dns.AccessLog(); al == nil || al.Path != "/dev/stdout" || al.Format.String() != "%DOWNSTREAM_REMOTE_ADDRESS% %PROTOCOL%\n" {
			t.Errorf("AccessLog() = %+v", al)
		}
		if g.Listener("dns-tcp").UDP() != nil || g.Listener("dns-tcp").Network() != "tcp6" {
			t.Error("the TCP listener became UDP")
		}
		if cs := dns.Clusters(); len(cs) != 1 || cs[0].Name() != "backend" {
			t.Errorf("Clusters() = %v", cs)
		}
	})
	t.Run("default idle timeout", func(t *testing.T) {
		g, err := runtime.Build(set([]*listenerv3.Listener{runtimetest.UDPListener("dns", "127.0.0.1", 0, "backend", 0)},
			[]*clusterv3.Cluster{eds(nil)}, []*endpointv3.ClusterLoadAssignment{cla(nil)}))
		if err != nil {
			t.Fatal(err)
		}
		if got := g.Listener("dns").UDP().IdleTimeout; got != runtime.DefaultUDPIdleTimeout {
			t.Errorf("IdleTimeout = %v, want %v", got, runtime.DefaultUDPIdleTimeout)
		}
	})
	t.Run("missing cluster", func(t *testing.T) {
		r := set([]*listenerv3.Listener{runtimetest.UDPListener("dns", "127.0.0.1", 53, "resolvers", 0)}, nil, nil)
		if err := r.Missing(); err == nil || err.Error() != `listener "dns" references unknown cluster "resolvers"` {
			t.Errorf("Missing() = %v", err)
		}
	})
	t.Run("two UDP listeners on one address clash", func(t *testing.T) {
		_, err := runtime.Build(set([]*listenerv3.Listener{
			runtimetest.UDPListener("a", "127.0.0.1", 53, "backend", 0),
			runtimetest.UDPListener("b", "127.0.0.1", 53, "backend", 0),
		}, []*clusterv3.Cluster{eds(nil)}, []*endpointv3.ClusterLoadAssignment{cla(nil)}))
		if err == nil || !strings.Contains(err.Error(), `address 127.0.0.1:53 is already used by listener "a"`) {
			t.Errorf("Build() = %v", err)
		}
	})

	udp := func(edit func(cfg *udpproxyv3.UdpProxyConfig)) *listenerv3.Listener {
		l := runtimetest.UDPListener("dns", "127.0.0.1", 53, "backend", 0)
		cfg := runtimetest.UDPProxyOf(l)
		edit(cfg)
		runtimetest.SetUDPProxy(l, cfg)
		return l
	}
	const p = `listener "dns": listener_filters[0].typed_config`
	tests := []struct {
		name string
		l    *listenerv3.Listener
		want string
	}{
		{"per packet load balancing", udp(func(c *udpproxyv3.UdpProxyConfig) { c.UsePerPacketLoadBalancing = true }),
			p + ".use_per_packet_load_balancing is not supported by flotilla-agent"},
		{"hash key", udp(func(c *udpproxyv3.UdpProxyConfig) {
			c.HashPolicies = []*udpproxyv3.UdpProxyConfig_HashPolicy{{PolicySpecifier: &udpproxyv3.UdpProxyConfig_HashPolicy_Key{Key: "k"}}}
		}), p + ".hash_policies[0].key is not supported by flotilla-agent"},
		{"zero idle timeout", udp(func(c *udpproxyv3.UdpProxyConfig) { c.IdleTimeout = durationpb.New(0) }),
			p + ".idle_timeout: must be greater than 0"},
		{"no cluster", udp(func(c *udpproxyv3.UdpProxyConfig) { c.RouteSpecifier = nil }), p + ".cluster is required"},
		{"no udp_proxy", func() *listenerv3.Listener {
			l := runtimetest.UDPListener("dns", "127.0.0.1", 53, "backend", 0)
			l.ListenerFilters = nil
			return l
		}(), `listener "dns": listener_filters: a UDP listener needs exactly one, envoy.filters.udp_listener.udp_proxy; got 0`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := runtime.Validate(resourcev3.ListenerType, tt.l)
			if err == nil || err.Error() != tt.want {
				t.Errorf("Validate() = %v\nwant %s", err, tt.want)
			}
		})
	}
}

func TestAccessLogConfig(t *testing.T) {
	withLog := func(name, path, text string, json map[string]string) *listenerv3.Listener {
		tp := runtimetest.TCPProxy("backend")
		tp.AccessLog = []*accesslogv3.AccessLog{runtimetest.FileAccessLog(path, text, json)}
		return runtimetest.ListenerTCP(name, "127.0.0.1", 0, tp)
	}
	t.Run("text and json", func(t *testing.T) {
		ls := []*listenerv3.Listener{
			withLog("a", "/var/log/a.log", "%DOWNSTREAM_REMOTE_ADDRESS% %RESPONSE_CODE%\n", nil),
			withLog("b", "/var/log/b.log", "", map[string]string{"status": "%RESPONSE_CODE%"}),
			withLog("c", "/var/log/a.log", "%DOWNSTREAM_REMOTE_ADDRESS% %RESPONSE_CODE%\n", nil),
		}
		g, err := runtime.Build(set(ls, []*clusterv3.Cluster{eds(nil)}, []*endpointv3.ClusterLoadAssignment{cla(nil)}))
		if err != nil {
			t.Fatal(err)
		}
		a := g.Listener("a").TCP().AccessLog
		if a == nil || a.Path != "/var/log/a.log" || a.Format.String() != "%DOWNSTREAM_REMOTE_ADDRESS% %RESPONSE_CODE%\n" {
			t.Errorf("a: %+v", a)
		}
		if b := g.Listener("b").AccessLog(); b == nil || b.Path != "/var/log/b.log" {
			t.Errorf("b: %+v", b)
		}
	})
	t.Run("one format per file", func(t *testing.T) {
		ls := []*listenerv3.Listener{
			withLog("a", "/var/log/a.log", "%RESPONSE_CODE%\n", nil),
			withLog("b", "/var/log/a.log", "%BYTES_SENT%\n", nil),
		}
		_, err := runtime.Build(set(ls, []*clusterv3.Cluster{eds(nil)}, []*endpointv3.ClusterLoadAssignment{cla(nil)}))
		want := `listener "b": access log /var/log/a.log is written with two formats ("%RESPONSE_CODE%\n" and "%BYTES_SENT%\n"); flotilla-agent needs one format per file`
		if err == nil || err.Error() != want {
			t.Errorf("Build() = %v\nwant %s", err, want)
		}
	})
	const p = `listener "web": filter_chains[0].filters[0].typed_config.access_log[0].typed_config`
	tests := []struct {
		name string
		edit func(tp *tcpproxyv3.TcpProxy)
		want string
	}{
		{"unknown operator", func(tp *tcpproxyv3.TcpProxy) {
			tp.AccessLog = []*accesslogv3.AccessLog{runtimetest.FileAccessLog("/tmp/x", "%NOT_AN_OPERATOR%", nil)}
		}, p + ".log_format.text_format_source: access log format: command operator %NOT_AN_OPERATOR% is not supported by flotilla-agent"},
		{"no path", func(tp *tcpproxyv3.TcpProxy) {
			tp.AccessLog = []*accesslogv3.AccessLog{runtimetest.FileAccessLog("", "%BYTES_SENT%", nil)}
		}, p + ".path is required"},
		{"filter", func(tp *tcpproxyv3.TcpProxy) {
			al := runtimetest.FileAccessLog("/tmp/x", "%BYTES_SENT%", nil)
			al.Filter = &accesslogv3.AccessLogFilter{}
			tp.AccessLog = []*accesslogv3.AccessLog{al}
		}, `listener "web": filter_chains[0].filters[0].typed_config.access_log[0].filter is not supported by flotilla-agent`},
		{"two logs", func(tp *tcpproxyv3.TcpProxy) {
			al := runtimetest.FileAccessLog("/tmp/x", "%BYTES_SENT%", nil)
			tp.AccessLog = []*accesslogv3.AccessLog{al, al}
		}, `listener "web": filter_chains[0].filters[0].typed_config.access_log: flotilla-agent supports one access log per filter, got 2`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := runtime.Validate(resourcev3.ListenerType, withTCPProxy(tt.edit))
			if err == nil || err.Error() != tt.want {
				t.Errorf("Validate() = %v\nwant %s", err, tt.want)
			}
		})
	}
}
