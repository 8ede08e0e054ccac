package runtime_test

import (
	"fmt"
	"net/netip"
	"reflect"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/flotilla-proxy/flotilla/agent/runtime"
	"github.com/flotilla-proxy/flotilla/agent/runtime/runtimetest"
	"github.com/flotilla-proxy/flotilla/agent/upstream"
)

// TestClusterUpstream checks what a cluster hands to package upstream: every field the
// contract names, and Envoy's defaults where the resource is silent.
func TestClusterUpstream(t *testing.T) {
	eps := []upstream.Endpoint{
		{Addr: netip.MustParseAddrPort("192.0.2.1:80"), Weight: 1},
		{Addr: netip.MustParseAddrPort("[2001:db8::1]:80"), Weight: 3},
	}
	base := func(edit func(*upstream.ClusterConfig)) upstream.ClusterConfig {
		c := upstream.ClusterConfig{Name: "backend", Endpoints: eps, MaxConnections: 1024}
		if edit != nil {
			edit(&c)
		}
		return c
	}
	tests := []struct {
		name    string
		cluster *clusterv3.Cluster
		want    upstream.ClusterConfig
	}{
		{"defaults: round robin, 1024 connections", eds(nil), base(nil)},
		{"least request with choice_count 2", eds(func(c *clusterv3.Cluster) {
			c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
			c.LbConfig = &clusterv3.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &clusterv3.Cluster_LeastRequestLbConfig{ChoiceCount: wrapperspb.UInt32(2)}}
		}), base(func(c *upstream.ClusterConfig) { c.Policy = upstream.LeastRequest })},
		{"ring hash with ring sizes", eds(func(c *clusterv3.Cluster) {
			c.LbPolicy = clusterv3.Cluster_RING_HASH
			c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{
				MinimumRingSize: wrapperspb.UInt64(2048), MaximumRingSize: wrapperspb.UInt64(4096)}}
		}), base(func(c *upstream.ClusterConfig) {
			c.Policy, c.MinRingSize, c.MaxRingSize = upstream.RingHash, 2048, 4096
		})},
		{"maglev with table size", eds(func(c *clusterv3.Cluster) {
			c.LbPolicy = clusterv3.Cluster_MAGLEV
			c.LbConfig = &clusterv3.Cluster_MaglevLbConfig_{MaglevLbConfig: &clusterv3.Cluster_MaglevLbConfig{TableSize: wrapperspb.UInt64(251)}}
		}), base(func(c *upstream.ClusterConfig) { c.Policy, c.TableSize = upstream.Maglev, 251 })},
		{"random, panic threshold 50", eds(func(c *clusterv3.Cluster) {
			c.LbPolicy = clusterv3.Cluster_RANDOM
			c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 50}}
		}), base(func(c *upstream.ClusterConfig) { c.Policy = upstream.Random; c.PanicThreshold = ptr(50.0) })},
		{"panic mode off", eds(func(c *clusterv3.Cluster) {
			c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 0}}
		}), base(func(c *upstream.ClusterConfig) { c.PanicThreshold = ptr(0.0) })},
		{"tcp health check with send and expect (text is hex)", eds(func(c *clusterv3.Cluster) {
			hc := runtimetest.HealthCheck(5*time.Second, 2, 3)
			hc.Timeout = durationpb.New(2 * time.Second)
			hc.HealthChecker = &corev3.HealthCheck_TcpHealthCheck_{TcpHealthCheck: &corev3.HealthCheck_TcpHealthCheck{
				Send:    &corev3.HealthCheck_Payload{Payload: &corev3.HealthCheck_Payload_Binary{Binary: []byte("PING\r\n")}},
				Receive: []*corev3.HealthCheck_Payload{{Payload: &corev3.HealthCheck_Payload_Text{Text: "2b504f4e47"}}},
			}}
			c.HealthChecks = []*corev3.HealthCheck{hc}
		}), base(func(c *upstream.ClusterConfig) {
			c.HealthCheck = &upstream.HealthCheck{Interval: 5 * time.Second, Timeout: 2 * time.Second, HealthyThreshold: 2, UnhealthyThreshold: 3,
				TCP: &upstream.TCPCheck{Send: []byte("PING\r\n"), Expect: []byte("+PONG")}}
		})},
		{"http health check, Envoy's default status 200", eds(func(c *clusterv3.Cluster) {
			hc := runtimetest.HealthCheck(time.Second, 1, 1)
			hc.HealthChecker = &corev3.HealthCheck_HttpHealthCheck_{HttpHealthCheck: &corev3.HealthCheck_HttpHealthCheck{Path: "/healthz", Host: "svc"}}
			c.HealthChecks = []*corev3.HealthCheck{hc}
		}), base(func(c *upstream.ClusterConfig) {
			c.HealthCheck = &upstream.HealthCheck{Interval: time.Second, Timeout: time.Second, HealthyThreshold: 1, UnhealthyThreshold: 1,
				HTTP: &upstream.HTTPCheck{Path: "/healthz", Host: "svc", ExpectedStatuses: []int{200}}}
		})},
		{"http health check, expected status ranges", eds(func(c *clusterv3.Cluster) {
			hc := runtimetest.HTTPHealthCheck(runtimetest.HealthCheck(time.Second, 1, 1), "/")
			hc.GetHttpHealthCheck().ExpectedStatuses = []*typev3.Int64Range{{Start: 200, End: 202}, {Start: 301, End: 302}}
			c.HealthChecks = []*corev3.HealthCheck{hc}
		}), base(func(c *upstream.ClusterConfig) {
			c.HealthCheck = &upstream.HealthCheck{Interval: time.Second, Timeout: time.Second, HealthyThreshold: 1, UnhealthyThreshold: 1,
				HTTP: &upstream.HTTPCheck{Path: "/", ExpectedStatuses: []int{200, 201, 301}}}
		})},
		{"outlier detection as the compiler emits it", eds(func(c *clusterv3.Cluster) {
			c.OutlierDetection = runtimetest.OutlierDetection(5, 30*time.Second, 10)
			c.OutlierDetection.ConsecutiveGatewayFailure = wrapperspb.UInt32(5) // Envoy's default: accepted
		}), base(func(c *upstream.ClusterConfig) {
			c.Outlier = &upstream.Outlier{Consecutive5xxOrConnectFailures: 5, BaseEjection: 30 * time.Second, MaxEjectionPercent: 10, Interval: 10 * time.Second}
		})},
		{"outlier detection without enforcement", eds(func(c *clusterv3.Cluster) {
			c.OutlierDetection = runtimetest.OutlierDetection(5, 30*time.Second, 10)
			c.OutlierDetection.EnforcingConsecutive_5Xx = wrapperspb.UInt32(0)
		}), base(nil)},
		{"circuit breaker", eds(func(c *clusterv3.Cluster) { c.CircuitBreakers = runtimetest.CircuitBreakers(7) }),
			base(func(c *upstream.ClusterConfig) { c.MaxConnections = 7 })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := runtime.Build(set(nil, []*clusterv3.Cluster{tt.cluster}, []*endpointv3.ClusterLoadAssignment{cla(nil)}))
			if err != nil {
				t.Fatalf("Build() = %v", err)
			}
			got := g.Cluster("backend").Upstream()
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Upstream() =\n %+v\nwant\n %+v", got, tt.want)
			}
			if err := got.Validate(); err != nil {
				t.Errorf("upstream Validate() = %v", err)
			}
		})
	}
}

func TestClusterRejects(t *testing.T) {
	tcpHC := func(edit func(hc *corev3.HealthCheck)) func(c *clusterv3.Cluster) {
		return func(c *clusterv3.Cluster) {
			hc := runtimetest.TCPHealthCheck(runtimetest.HealthCheck(time.Second, 2, 3))
			edit(hc)
			c.HealthChecks = []*corev3.HealthCheck{hc}
		}
	}
	tests := []struct {
		name string
		edit func(c *clusterv3.Cluster)
		want string
	}{
		{"choice_count 3", func(c *clusterv3.Cluster) {
			c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
			c.LbConfig = &clusterv3.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &clusterv3.Cluster_LeastRequestLbConfig{ChoiceCount: wrapperspb.UInt32(3)}}
		}, "least_request_lb_config.choice_count 3 is not supported by flotilla-agent (2 only, the power of two choices)"},
		{"lb config of another policy", func(c *clusterv3.Cluster) {
			c.LbConfig = &clusterv3.Cluster_MaglevLbConfig_{MaglevLbConfig: &clusterv3.Cluster_MaglevLbConfig{}}
		}, "maglev_lb_config does not apply to lb_policy ROUND_ROBIN"},
		{"murmur hash", func(c *clusterv3.Cluster) {
			c.LbPolicy = clusterv3.Cluster_RING_HASH
			c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{HashFunction: clusterv3.Cluster_RingHashLbConfig_MURMUR_HASH_2}}
		}, "ring_hash_lb_config.hash_function MURMUR_HASH_2 is not supported by flotilla-agent (XX_HASH only)"},
		{"ring sizes reversed", func(c *clusterv3.Cluster) {
			c.LbPolicy = clusterv3.Cluster_RING_HASH
			c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{MinimumRingSize: wrapperspb.UInt64(1 << 24)}}
		}, "ring_hash_lb_config: minimum_ring_size 16777216 exceeds maximum_ring_size 8388608"},
		{"maglev table not prime", func(c *clusterv3.Cluster) {
			c.LbPolicy = clusterv3.Cluster_MAGLEV
			c.LbConfig = &clusterv3.Cluster_MaglevLbConfig_{MaglevLbConfig: &clusterv3.Cluster_MaglevLbConfig{TableSize: wrapperspb.UInt64(1000)}}
		}, "maglev_lb_config.table_size: 1000 is not a prime number"},
		{"panic threshold 130", func(c *clusterv3.Cluster) {
			c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 130}}
		}, "common_lb_config.healthy_panic_threshold: 130 is not a percentage (0 to 100)"},
		{"zone aware", func(c *clusterv3.Cluster) {
			c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{CloseConnectionsOnHostSetChange: true}
		}, "common_lb_config.close_connections_on_host_set_change is not supported by flotilla-agent"},
		{"two health checks", func(c *clusterv3.Cluster) {
			hc := runtimetest.TCPHealthCheck(runtimetest.HealthCheck(time.Second, 2, 3))
			c.HealthChecks = []*corev3.HealthCheck{hc, hc}
		}, "health_checks: flotilla-agent supports one health check per cluster, got 2"},
		{"health check without checker", func(c *clusterv3.Cluster) {
			c.HealthChecks = []*corev3.HealthCheck{runtimetest.HealthCheck(time.Second, 2, 3)}
		}, "health_checks[0]: one of tcp_health_check and http_health_check is required"},
		{"zero interval", tcpHC(func(hc *corev3.HealthCheck) { hc.Interval = durationpb.New(0) }),
			"health_checks[0].interval: must be greater than 0"},
		{"no healthy threshold", tcpHC(func(hc *corev3.HealthCheck) { hc.HealthyThreshold = nil }),
			"health_checks[0].healthy_threshold: must be at least 1"},
		{"alt_port", tcpHC(func(hc *corev3.HealthCheck) { hc.AltPort = wrapperspb.UInt32(9) }),
			"health_checks[0].alt_port is not supported by flotilla-agent"},
		{"receive without send", tcpHC(func(hc *corev3.HealthCheck) {
			hc.GetTcpHealthCheck().Receive = []*corev3.HealthCheck_Payload{{Payload: &corev3.HealthCheck_Payload_Text{Text: "00"}}}
		}), "health_checks[0].tcp_health_check.receive needs send"},
		{"payload not hex", tcpHC(func(hc *corev3.HealthCheck) {
			hc.GetTcpHealthCheck().Send = &corev3.HealthCheck_Payload{Payload: &corev3.HealthCheck_Payload_Text{Text: "PING"}}
		}), "health_checks[0].tcp_health_check.send.text: not hex: encoding/hex: invalid byte: U+0050 'P'"},
		{"http without path", func(c *clusterv3.Cluster) {
			c.HealthChecks = []*corev3.HealthCheck{runtimetest.HTTPHealthCheck(runtimetest.HealthCheck(time.Second, 2, 3), "")}
		}, `health_checks[0].http_health_check.path: "" must start with /`},
		{"http2 health check", func(c *clusterv3.Cluster) {
			hc := runtimetest.HTTPHealthCheck(runtimetest.HealthCheck(time.Second, 2, 3), "/")
			hc.GetHttpHealthCheck().CodecClientType = typev3.CodecClientType_HTTP2
			c.HealthChecks = []*corev3.HealthCheck{hc}
		}, "health_checks[0].http_health_check.codec_client_type HTTP2 is not supported by flotilla-agent (HTTP1 only)"},
		{"bad status range", func(c *clusterv3.Cluster) {
			hc := runtimetest.HTTPHealthCheck(runtimetest.HealthCheck(time.Second, 2, 3), "/")
			hc.GetHttpHealthCheck().ExpectedStatuses = []*typev3.Int64Range{{Start: 200, End: 200}}
			c.HealthChecks = []*corev3.HealthCheck{hc}
		}, "health_checks[0].http_health_check.expected_statuses[0]: [200, 200) is not a range of HTTP status codes within [100, 600)"},
		{"success rate changed", func(c *clusterv3.Cluster) {
			c.OutlierDetection = runtimetest.OutlierDetection(5, time.Second, 10)
			c.OutlierDetection.EnforcingSuccessRate = wrapperspb.UInt32(0)
		}, "outlier_detection.enforcing_success_rate 0 is not supported by flotilla-agent (only Envoy's default 100; the agent ejects on consecutive connect failures)"},
		{"split local origin errors", func(c *clusterv3.Cluster) {
			c.OutlierDetection = runtimetest.OutlierDetection(5, time.Second, 10)
			c.OutlierDetection.SplitExternalLocalOriginErrors = true
		}, "outlier_detection.split_external_local_origin_errors is not supported by flotilla-agent"},
		{"enforcing 50", func(c *clusterv3.Cluster) {
			c.OutlierDetection = runtimetest.OutlierDetection(5, time.Second, 10)
			c.OutlierDetection.EnforcingConsecutive_5Xx = wrapperspb.UInt32(50)
		}, "outlier_detection.enforcing_consecutive_5xx 50 is not supported by flotilla-agent (0 or 100)"},
		{"max ejection percent 0", func(c *clusterv3.Cluster) {
			c.OutlierDetection = runtimetest.OutlierDetection(5, time.Second, 0)
		}, "outlier_detection.max_ejection_percent: 0 is not within 1-100"},
		{"two thresholds", func(c *clusterv3.Cluster) {
			c.CircuitBreakers = runtimetest.CircuitBreakers(1)
			c.CircuitBreakers.Thresholds = append(c.CircuitBreakers.Thresholds, c.CircuitBreakers.Thresholds[0])
		}, "circuit_breakers.thresholds: flotilla-agent supports one (priority DEFAULT), got 2"},
		{"max_requests", func(c *clusterv3.Cluster) {
			c.CircuitBreakers = runtimetest.CircuitBreakers(1)
			c.CircuitBreakers.Thresholds[0].MaxRequests = wrapperspb.UInt32(5)
		}, "circuit_breakers.thresholds[0].max_requests is not supported by flotilla-agent"},
		{"HIGH priority", func(c *clusterv3.Cluster) {
			c.CircuitBreakers = runtimetest.CircuitBreakers(1)
			c.CircuitBreakers.Thresholds[0].Priority = corev3.RoutingPriority_HIGH
		}, "circuit_breakers.thresholds[0].priority HIGH is not supported by flotilla-agent (DEFAULT only)"},
		{"max_connections 0", func(c *clusterv3.Cluster) {
			c.CircuitBreakers = runtimetest.CircuitBreakers(0)
		}, "circuit_breakers.thresholds[0].max_connections: must be at least 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := runtime.Validate(resourcev3.ClusterType, eds(tt.edit))
			if want := fmt.Sprintf("cluster %q: %s", "backend", tt.want); err == nil || err.Error() != want {
				t.Errorf("Validate() = %v\nwant %s", err, want)
			}
		})
	}
}

func TestListenerLimitAndHashPolicy(t *testing.T) {
	t.Run("connection limit per listener", func(t *testing.T) {
		l := runtimetest.WithConnectionLimit(runtimetest.Listener("web", "0.0.0.0", 8080, "backend"), 100)
		g, err := runtime.Build(set([]*listenerv3.Listener{l}, []*clusterv3.Cluster{eds(nil)}, []*endpointv3.ClusterLoadAssignment{cla(nil)}))
		if err != nil {
			t.Fatal(err)
		}
		if got := g.Listener("web").MaxConnections(); got != 100 {
			t.Errorf("MaxConnections() = %d, want 100", got)
		}
	})
	t.Run("chains must agree", func(t *testing.T) {
		l := runtimetest.Listener("web", "0.0.0.0", 8080, "backend")
		second := runtimetest.FilterChain("b", &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(9)}, runtimetest.TCPProxy("backend"))
		l.FilterChains = append(l.FilterChains, second)
		l.FilterChains[0].Filters = append([]*listenerv3.Filter{runtimetest.ConnectionLimit("web", 5)}, l.FilterChains[0].Filters...)
		err := runtime.Validate(resourcev3.ListenerType, l)
		want := `listener "web": filter chains set different connection_limit max_connections (5 and 0): flotilla-agent enforces one limit per listener`
		if err == nil || err.Error() != want {
			t.Errorf("Validate() = %v, want %s", err, want)
		}
	})
	t.Run("limit 0", func(t *testing.T) {
		l := runtimetest.WithConnectionLimit(runtimetest.Listener("web", "0.0.0.0", 8080, "backend"), 0)
		err := runtime.Validate(resourcev3.ListenerType, l)
		want := `listener "web": filter_chains[0].filters[0].typed_config.max_connections: must be at least 1`
		if err == nil || err.Error() != want {
			t.Errorf("Validate() = %v, want %s", err, want)
		}
	})
	t.Run("hash policy source_ip", func(t *testing.T) {
		l := runtimetest.ListenerTCP("web", "0.0.0.0", 8080, runtimetest.HashSourceIP(runtimetest.TCPProxy("backend")))
		g, err := runtime.Build(set([]*listenerv3.Listener{l}, []*clusterv3.Cluster{eds(nil)}, []*endpointv3.ClusterLoadAssignment{cla(nil)}))
		if err != nil {
			t.Fatal(err)
		}
		if !g.Listener("web").TCP().HashSourceIP {
			t.Error("HashSourceIP = false, want true")
		}
	})
	t.Run("hash policy filter_state", func(t *testing.T) {
		l := withTCPProxy(func(tp *tcpproxyv3.TcpProxy) {
			tp.HashPolicy = []*typev3.HashPolicy{{PolicySpecifier: &typev3.HashPolicy_FilterState_{FilterState: &typev3.HashPolicy_FilterState{Key: "k"}}}}
		})
		err := runtime.Validate(resourcev3.ListenerType, l)
		want := `listener "web": filter_chains[0].filters[0].typed_config.hash_policy[0].filter_state is not supported by flotilla-agent`
		if err == nil || err.Error() != want {
			t.Errorf("Validate() = %v, want %s", err, want)
		}
	})
	t.Run("duplicate endpoints merge", func(t *testing.T) {
		a := runtimetest.LoadAssignment("backend", runtimetest.Endpoint("192.0.2.1:80", 1), runtimetest.Endpoint("192.0.2.1:80", 2))
		g, err := runtime.Build(set(nil, []*clusterv3.Cluster{eds(nil)}, []*endpointv3.ClusterLoadAssignment{a}))
		if err != nil {
			t.Fatal(err)
		}
		want := []runtime.Endpoint{{Addr: netip.MustParseAddrPort("192.0.2.1:80"), Weight: 3}}
		if got := g.Cluster("backend").Endpoints(); !reflect.DeepEqual(got, want) {
			t.Errorf("Endpoints() = %v, want %v", got, want)
		}
	})
}

func ptr[T any](v T) *T { return &v }
