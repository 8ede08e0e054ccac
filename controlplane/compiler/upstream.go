package compiler

import (
	"fmt"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/flotilla-proxy/flotilla/controlplane/bundle"
	configv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/config/v1"
)

// Defaults of a cluster's health check, outlier detection and limits; the
// schema's doc comments promise these values, and the compiler writes them
// out so that agents and Envoy receive the same explicit numbers.
const (
	// DefaultHealthInterval is HealthCheck.interval when unset.
	DefaultHealthInterval = 5 * time.Second
	// DefaultHealthTimeout is HealthCheck.timeout when unset.
	DefaultHealthTimeout = 2 * time.Second
	// DefaultHealthyThreshold is HealthCheck.healthy_threshold when unset (0).
	DefaultHealthyThreshold = 2
	// DefaultUnhealthyThreshold is HealthCheck.unhealthy_threshold when unset (0).
	DefaultUnhealthyThreshold = 3
	// DefaultConsecutiveFailures is OutlierDetection.consecutive_failures when unset (0).
	DefaultConsecutiveFailures = 5
	// DefaultBaseEjectionTime is OutlierDetection.base_ejection_time when unset.
	DefaultBaseEjectionTime = 30 * time.Second
	// DefaultMaxEjectionPercent is OutlierDetection.max_ejection_percent when unset (0).
	DefaultMaxEjectionPercent = 10
	// DefaultOutlierInterval is OutlierDetection.interval when unset.
	DefaultOutlierInterval = 10 * time.Second
	// DefaultMaxConnections is Cluster.max_connections when unset (0), and
	// Envoy's own default.
	DefaultMaxConnections = 1024
)

// defaultExpectedStatuses is what an HTTP health check accepts when
// expected_statuses is empty: any 2xx or 3xx (Envoy's own default is 200 only).
var defaultExpectedStatuses = []*typev3.Int64Range{{Start: 200, End: 400}}

// lbPolicies maps Cluster.lb to Envoy's lb_policy. No lb-specific config is
// emitted: Envoy's defaults (choice_count 2, ring sizes 1024 to 8M, Maglev
// table 65537) are what the agent implements.
var lbPolicies = map[string]clusterv3.Cluster_LbPolicy{
	"":                    clusterv3.Cluster_ROUND_ROBIN,
	bundle.LBRoundRobin:   clusterv3.Cluster_ROUND_ROBIN,
	bundle.LBLeastRequest: clusterv3.Cluster_LEAST_REQUEST,
	bundle.LBRingHash:     clusterv3.Cluster_RING_HASH,
	bundle.LBMaglev:       clusterv3.Cluster_MAGLEV,
	bundle.LBRandom:       clusterv3.Cluster_RANDOM,
}

// clusterPolicies fills in out's lb_policy, health_checks,
// outlier_detection and circuit_breakers from c.
func clusterPolicies(out *clusterv3.Cluster, c *configv1.Cluster) error {
	lb, ok := lbPolicies[c.GetLb()]
	if !ok {
		return fmt.Errorf("lb %q is not a load-balancing policy", c.GetLb())
	}
	out.LbPolicy = lb
	if hc := c.GetHealthCheck(); hc != nil {
		check, err := healthCheck(c.GetName(), hc)
		if err != nil {
			return fmt.Errorf("health_check: %w", err)
		}
		out.HealthChecks = []*corev3.HealthCheck{check}
	}
	if od := c.GetOutlierDetection(); od != nil {
		if od.GetMaxEjectionPercent() > bundle.MaxEjectionPercent {
			return fmt.Errorf("outlier_detection.max_ejection_percent %d is more than %d", od.GetMaxEjectionPercent(), bundle.MaxEjectionPercent)
		}
		out.OutlierDetection = &clusterv3.OutlierDetection{
			// TCP connect failures count as 5xx (Envoy's default
			// split_external_local_origin_errors: false).
			Consecutive_5Xx:          wrapperspb.UInt32(orUint32(od.GetConsecutiveFailures(), DefaultConsecutiveFailures)),
			Interval:                 orDuration(od.GetInterval(), DefaultOutlierInterval),
			BaseEjectionTime:         orDuration(od.GetBaseEjectionTime(), DefaultBaseEjectionTime),
			MaxEjectionPercent:       wrapperspb.UInt32(orUint32(od.GetMaxEjectionPercent(), DefaultMaxEjectionPercent)),
			EnforcingConsecutive_5Xx: wrapperspb.UInt32(100),
		}
	}
	if c.PanicThreshold != nil {
		if c.GetPanicThreshold() > 100 {
			return fmt.Errorf("panic_threshold %d is more than 100", c.GetPanicThreshold())
		}
		out.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{
			HealthyPanicThreshold: &typev3.Percent{Value: float64(c.GetPanicThreshold())},
		}
	}
	out.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		Priority:       corev3.RoutingPriority_DEFAULT,
		MaxConnections: wrapperspb.UInt32(orUint32(c.GetMaxConnections(), DefaultMaxConnections)),
	}}}
	return nil
}

// healthCheck compiles a cluster's health check with every default written
// out.
func healthCheck(cluster string, hc *configv1.HealthCheck) (*corev3.HealthCheck, error) {
	out := &corev3.HealthCheck{
		Timeout:            orDuration(hc.GetTimeout(), DefaultHealthTimeout),
		Interval:           orDuration(hc.GetInterval(), DefaultHealthInterval),
		UnhealthyThreshold: wrapperspb.UInt32(orUint32(hc.GetUnhealthyThreshold(), DefaultUnhealthyThreshold)),
		HealthyThreshold:   wrapperspb.UInt32(orUint32(hc.GetHealthyThreshold(), DefaultHealthyThreshold)),
	}
	switch tcp, h := hc.GetTcp(), hc.GetHttp(); {
	case (tcp == nil) == (h == nil):
		return nil, fmt.Errorf("needs exactly one of tcp and http")
	case tcp != nil:
		if tcp.GetExpect() != "" && tcp.GetSend() == "" {
			return nil, fmt.Errorf("tcp.expect needs tcp.send")
		}
		check := &corev3.HealthCheck_TcpHealthCheck{}
		if s := tcp.GetSend(); s != "" {
			check.Send = &corev3.HealthCheck_Payload{Payload: &corev3.HealthCheck_Payload_Binary{Binary: []byte(s)}}
		}
		if e := tcp.GetExpect(); e != "" {
			check.Receive = []*corev3.HealthCheck_Payload{{Payload: &corev3.HealthCheck_Payload_Binary{Binary: []byte(e)}}}
		}
		out.HealthChecker = &corev3.HealthCheck_TcpHealthCheck_{TcpHealthCheck: check}
	default:
		if h.GetPath() == "" {
			return nil, fmt.Errorf("http.path: required")
		}
		check := &corev3.HealthCheck_HttpHealthCheck{Host: h.GetHost(), Path: h.GetPath()}
		if check.Host == "" {
			check.Host = cluster // Envoy's default, written out
		}
		for _, s := range h.GetExpectedStatuses() {
			if s < 100 || s > 599 {
				return nil, fmt.Errorf("http.expected_statuses: %d is not an HTTP status", s)
			}
			check.ExpectedStatuses = append(check.ExpectedStatuses, &typev3.Int64Range{Start: int64(s), End: int64(s) + 1})
		}
		if len(check.ExpectedStatuses) == 0 {
			for _, r := range defaultExpectedStatuses {
				check.ExpectedStatuses = append(check.ExpectedStatuses, proto.CloneOf(r))
			}
		}
		out.HealthChecker = &corev3.HealthCheck_HttpHealthCheck_{HttpHealthCheck: check}
	}
	return out, nil
}

// orDuration is a copy of d, or def when d is unset.
func orDuration(d *durationpb.Duration, def time.Duration) *durationpb.Duration {
	if d == nil {
		return durationpb.New(def)
	}
	return proto.CloneOf(d)
}

// orUint32 is n, or def when n is 0 (unset).
func orUint32(n, def uint32) uint32 {
	if n == 0 {
		return def
	}
	return n
}
