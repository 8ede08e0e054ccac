package runtime

import (
	"cmp"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"math/big"
	"net/netip"
	"time"

	"github.com/flotilla-proxy/flotilla/agent/fieldcheck"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/flotilla-proxy/flotilla/agent/upstream"
)

// The load-balancing, health-checking and circuit-breaking part of a Cluster: what the data
// plane hands to upstream.Registry.Update. Everything here follows Envoy's semantics for the
// fields flotilla-agent accepts; see docs/xds-support.md.

// DefaultMaxConnections is a cluster's circuit breaker when circuit_breakers sets none:
// Envoy's default max_connections, 1024.
const DefaultMaxConnections = upstream.DefaultMaxConnections

// maxExpectedStatuses bounds how many status codes http_health_check.expected_statuses may
// expand to (every code from 100 to 599 fits).
const maxExpectedStatuses = 500

// parseLB reads lb_policy, its lb_config message and common_lb_config into cfg.
func parseLB(c *clusterv3.Cluster, cfg *upstream.ClusterConfig) error {
	switch p := c.GetLbPolicy(); p {
	case clusterv3.Cluster_ROUND_ROBIN:
		cfg.Policy = upstream.RoundRobin
	case clusterv3.Cluster_LEAST_REQUEST:
		cfg.Policy = upstream.LeastRequest
	case clusterv3.Cluster_RING_HASH:
		cfg.Policy = upstream.RingHash
	case clusterv3.Cluster_MAGLEV:
		cfg.Policy = upstream.Maglev
	case clusterv3.Cluster_RANDOM:
		cfg.Policy = upstream.Random
	default:
		return fmt.Errorf("lb_policy %s is not supported by flotilla-agent (ROUND_ROBIN, LEAST_REQUEST, RING_HASH, MAGLEV or RANDOM)", p)
	}
	// An lb config message must belong to the policy, as in Envoy (which ignores a
	// mismatched one; we refuse it rather than ignore a setting silently).
	mismatch := func(field string) error {
		return fmt.Errorf("%s does not apply to lb_policy %s", field, c.GetLbPolicy())
	}
	switch lc := c.GetLbConfig().(type) {
	case nil:
	case *clusterv3.Cluster_LeastRequestLbConfig_:
		const path = "least_request_lb_config"
		if cfg.Policy != upstream.LeastRequest {
			return mismatch(path)
		}
		m := lc.LeastRequestLbConfig
		if err := fieldcheck.Only(m, path, "choice_count"); err != nil {
			return err
		}
		if m.ChoiceCount != nil && m.GetChoiceCount().GetValue() != 2 {
			return fmt.Errorf("%s.choice_count %d is not supported by flotilla-agent (2 only, the power of two choices)", path, m.GetChoiceCount().GetValue())
		}
	case *clusterv3.Cluster_RingHashLbConfig_:
		const path = "ring_hash_lb_config"
		if cfg.Policy != upstream.RingHash {
			return mismatch(path)
		}
		m := lc.RingHashLbConfig
		if err := fieldcheck.Only(m, path, "minimum_ring_size", "maximum_ring_size", "hash_function"); err != nil {
			return err
		}
		if m.GetHashFunction() != clusterv3.Cluster_RingHashLbConfig_XX_HASH {
			return fmt.Errorf("%s.hash_function %s is not supported by flotilla-agent (XX_HASH only)", path, m.GetHashFunction())
		}
		cfg.MinRingSize = m.GetMinimumRingSize().GetValue()
		cfg.MaxRingSize = m.GetMaximumRingSize().GetValue()
		if m.MinimumRingSize != nil && cfg.MinRingSize == 0 {
			return errors.New(path + ".minimum_ring_size: must be at least 1")
		}
		if m.MaximumRingSize != nil && cfg.MaxRingSize == 0 {
			return errors.New(path + ".maximum_ring_size: must be at least 1")
		}
		lo, hi := cmp.Or(cfg.MinRingSize, upstream.DefaultMinRingSize), cmp.Or(cfg.MaxRingSize, upstream.DefaultMaxRingSize)
		if lo > hi {
			return fmt.Errorf("%s: minimum_ring_size %d exceeds maximum_ring_size %d", path, lo, hi)
		}
	case *clusterv3.Cluster_MaglevLbConfig_:
		const path = "maglev_lb_config"
		if cfg.Policy != upstream.Maglev {
			return mismatch(path)
		}
		if err := fieldcheck.Only(lc.MaglevLbConfig, path, "table_size"); err != nil {
			return err
		}
		if ts := lc.MaglevLbConfig.TableSize; ts != nil {
			cfg.TableSize = ts.GetValue()
			// Exact below 2^64 (Baillie-PSW).
			if !new(big.Int).SetUint64(cfg.TableSize).ProbablyPrime(0) {
				return fmt.Errorf("%s.table_size: %d is not a prime number", path, cfg.TableSize)
			}
		}
	case *clusterv3.Cluster_RoundRobinLbConfig_:
		const path = "round_robin_lb_config"
		if cfg.Policy != upstream.RoundRobin {
			return mismatch(path)
		}
		if err := fieldcheck.Only(lc.RoundRobinLbConfig, path); err != nil {
			return err
		}
	default:
		return fieldcheck.Unsupported(string(c.ProtoReflect().WhichOneof(c.ProtoReflect().Descriptor().Oneofs().ByName("lb_config")).Name()))
	}
	if clb := c.GetCommonLbConfig(); clb != nil {
		const path = "common_lb_config"
		if err := fieldcheck.Only(clb, path, "healthy_panic_threshold"); err != nil {
			return err
		}
		if t := clb.GetHealthyPanicThreshold(); t != nil {
			v := t.GetValue()
			if !(v >= 0 && v <= 100) {
				return fmt.Errorf("%s.healthy_panic_threshold: %g is not a percentage (0 to 100)", path, v)
			}
			cfg.PanicThreshold = &v
		}
	}
	return nil
}

// parseHealthCheck reads health_checks: at most one, with a tcp_health_check or an
// http_health_check. Envoy requires timeout, interval and both thresholds (Validate
// enforces it); the agent honours them as given.
func parseHealthCheck(c *clusterv3.Cluster, cfg *upstream.ClusterConfig) error {
	switch n := len(c.GetHealthChecks()); {
	case n == 0:
		return nil
	case n > 1:
		return fmt.Errorf("health_checks: flotilla-agent supports one health check per cluster, got %d", n)
	}
	hc := c.GetHealthChecks()[0]
	const path = "health_checks[0]"
	if err := fieldcheck.Only(hc, path, "timeout", "interval", "healthy_threshold", "unhealthy_threshold",
		"tcp_health_check", "http_health_check", "reuse_connection"); err != nil {
		return err
	}
	// reuse_connection (default true) keeps a health-check connection open between checks;
	// the agent opens one per check, which probes the same thing.
	out := &upstream.HealthCheck{
		HealthyThreshold:   hc.GetHealthyThreshold().GetValue(),
		UnhealthyThreshold: hc.GetUnhealthyThreshold().GetValue(),
	}
	var err error
	if out.Timeout, err = positive(hc.GetTimeout(), path+".timeout"); err != nil {
		return err
	}
	if out.Interval, err = positive(hc.GetInterval(), path+".interval"); err != nil {
		return err
	}
	if hc.HealthyThreshold == nil || out.HealthyThreshold == 0 {
		return errors.New(path + ".healthy_threshold: must be at least 1")
	}
	if hc.UnhealthyThreshold == nil || out.UnhealthyThreshold == 0 {
		return errors.New(path + ".unhealthy_threshold: must be at least 1")
	}
	switch {
	case hc.GetTcpHealthCheck() != nil:
		p := path + ".tcp_health_check"
		t := hc.GetTcpHealthCheck()
		if err := fieldcheck.Only(t, p, "send", "receive"); err != nil {
			return err
		}
		out.TCP = &upstream.TCPCheck{}
		if t.Send != nil {
			if out.TCP.Send, err = payload(t.GetSend(), p+".send"); err != nil {
				return err
			}
		}
		switch len(t.GetReceive()) {
		case 0:
		case 1:
			if len(out.TCP.Send) == 0 {
				return errors.New(p + ".receive needs send")
			}
			if out.TCP.Expect, err = payload(t.GetReceive()[0], p+".receive[0]"); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s.receive: flotilla-agent supports one payload (matched as a prefix of the reply), got %d", p, len(t.GetReceive()))
		}
	case hc.GetHttpHealthCheck() != nil:
		p := path + ".http_health_check"
		h := hc.GetHttpHealthCheck()
		if err := fieldcheck.Only(h, p, "host", "path", "expected_statuses", "codec_client_type", "method"); err != nil {
			return err
		}
		if h.GetCodecClientType() != typev3.CodecClientType_HTTP1 {
			return fmt.Errorf("%s.codec_client_type %s is not supported by flotilla-agent (HTTP1 only)", p, h.GetCodecClientType())
		}
		if m := h.GetMethod(); m != corev3.RequestMethod_METHOD_UNSPECIFIED && m != corev3.RequestMethod_GET {
			return fmt.Errorf("%s.method %s is not supported by flotilla-agent (GET only)", p, m)
		}
		if h.GetPath() == "" || h.GetPath()[0] != '/' {
			return fmt.Errorf("%s.path: %q must start with /", p, h.GetPath())
		}
		out.HTTP = &upstream.HTTPCheck{Path: h.GetPath(), Host: h.GetHost()}
		for i, r := range h.GetExpectedStatuses() {
			q := fmt.Sprintf("%s.expected_statuses[%d]", p, i)
			// Envoy: [start, end) within [100, 600).
			if r.GetStart() < 100 || r.GetEnd() > 600 || r.GetStart() >= r.GetEnd() {
				return fmt.Errorf("%s: [%d, %d) is not a range of HTTP status codes within [100, 600)", q, r.GetStart(), r.GetEnd())
			}
			for s := r.GetStart(); s < r.GetEnd(); s++ {
				out.HTTP.ExpectedStatuses = append(out.HTTP.ExpectedStatuses, int(s))
			}
			if len(out.HTTP.ExpectedStatuses) > maxExpectedStatuses {
				return fmt.Errorf("%s: too many status codes", q)
			}
		}
		if len(out.HTTP.ExpectedStatuses) == 0 {
			// Envoy's default is 200 only (upstream's own default would be 2xx and 3xx).
			out.HTTP.ExpectedStatuses = []int{200}
		}
	default:
		return errors.New(path + ": one of tcp_health_check and http_health_check is required")
	}
	cfg.HealthCheck = out
	return nil
}

// payload decodes a health-check Payload: text is hex, as in Envoy.
func payload(p *corev3.HealthCheck_Payload, path string) ([]byte, error) {
	if err := fieldcheck.Only(p, path, "text", "binary"); err != nil {
		return nil, err
	}
	switch v := p.GetPayload().(type) {
	case *corev3.HealthCheck_Payload_Text:
		b, err := hex.DecodeString(v.Text)
		if err != nil {
			return nil, fmt.Errorf("%s.text: not hex: %w", path, err)
		}
		if len(b) == 0 {
			return nil, fmt.Errorf("%s.text: must not be empty", path)
		}
		return b, nil
	case *corev3.HealthCheck_Payload_Binary:
		if len(v.Binary) == 0 {
			return nil, fmt.Errorf("%s.binary: must not be empty", path)
		}
		return v.Binary, nil
	}
	return nil, fmt.Errorf("%s: one of text and binary is required", path)
}

// outlierDefaults are the Envoy defaults of the OutlierDetection fields the agent does not
// implement: a resource may set them, but only to these values (they then change nothing).
// Fields of other types (bools, durations, lists) must stay unset or at their zero value.
var outlierDefaults = map[protoreflect.Name]uint32{
	"enforcing_success_rate":                     100,
	"success_rate_minimum_hosts":                 5,
	"success_rate_request_volume":                100,
	"success_rate_stdev_factor":                  1900,
	"consecutive_gateway_failure":                5,
	"enforcing_consecutive_gateway_failure":      0,
	"consecutive_local_origin_failure":           5,
	"enforcing_consecutive_local_origin_failure": 100,
	"enforcing_local_origin_success_rate":        100,
	"failure_percentage_threshold":               85,
	"enforcing_failure_percentage":               0,
	"enforcing_failure_percentage_local_origin":  0,
	"failure_percentage_minimum_hosts":           5,
	"failure_percentage_request_volume":          50,
}

// parseOutlier reads outlier_detection: consecutive_5xx (connect failures count as 5xx, as
// with Envoy's default split_external_local_origin_errors false), base_ejection_time,
// max_ejection_time, max_ejection_percent and interval.
func parseOutlier(c *clusterv3.Cluster, cfg *upstream.ClusterConfig) error {
	od := c.GetOutlierDetection()
	if od == nil {
		return nil
	}
	const path = "outlier_detection"
	var bad error
	od.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch fd.Name() {
		case "consecutive_5xx", "enforcing_consecutive_5xx", "base_ejection_time", "max_ejection_time", "max_ejection_percent", "interval":
			return true
		}
		if def, ok := outlierDefaults[fd.Name()]; ok {
			if got := v.Message().Interface().(*wrapperspb.UInt32Value).GetValue(); got != def {
				bad = fmt.Errorf("%s.%s %d is not supported by flotilla-agent (only Envoy's default %d; the agent ejects on consecutive connect failures)", path, fd.Name(), got, def)
				return false
			}
			return true
		}
		bad = fieldcheck.Unsupported(path + "." + string(fd.Name()))
		return false
	})
	if bad != nil {
		return bad
	}
	if err := fieldcheck.Only(od, path, append(mapKeys(outlierDefaults), "consecutive_5xx", "enforcing_consecutive_5xx",
		"base_ejection_time", "max_ejection_time", "max_ejection_percent", "interval")...); err != nil {
		return err
	}
	if e := od.EnforcingConsecutive_5Xx; e != nil {
		switch e.GetValue() {
		case 100:
		case 0:
			return nil // detection without enforcement: nothing is ever ejected
		default:
			return fmt.Errorf("%s.enforcing_consecutive_5xx %d is not supported by flotilla-agent (0 or 100)", path, e.GetValue())
		}
	}
	o := &upstream.Outlier{}
	if v := od.Consecutive_5Xx; v != nil {
		if v.GetValue() == 0 {
			return errors.New(path + ".consecutive_5xx: must be at least 1")
		}
		o.Consecutive5xxOrConnectFailures = v.GetValue()
	}
	if v := od.MaxEjectionPercent; v != nil {
		if v.GetValue() == 0 || v.GetValue() > 100 {
			return fmt.Errorf("%s.max_ejection_percent: %d is not within 1-100", path, v.GetValue())
		}
		o.MaxEjectionPercent = v.GetValue()
	}
	var err error
	if od.BaseEjectionTime != nil {
		if o.BaseEjection, err = positive(od.GetBaseEjectionTime(), path+".base_ejection_time"); err != nil {
			return err
		}
	}
	if od.MaxEjectionTime != nil {
		if o.MaxEjection, err = positive(od.GetMaxEjectionTime(), path+".max_ejection_time"); err != nil {
			return err
		}
	}
	if od.Interval != nil {
		if o.Interval, err = positive(od.GetInterval(), path+".interval"); err != nil {
			return err
		}
	}
	cfg.Outlier = o
	return nil
}

// parseCircuitBreakers reads circuit_breakers.thresholds: at most one, of priority DEFAULT,
// setting max_connections. Without one the limit is Envoy's default, 1024.
func parseCircuitBreakers(c *clusterv3.Cluster, cfg *upstream.ClusterConfig) error {
	cfg.MaxConnections = DefaultMaxConnections
	cb := c.GetCircuitBreakers()
	if cb == nil {
		return nil
	}
	const path = "circuit_breakers"
	if err := fieldcheck.Only(cb, path, "thresholds"); err != nil {
		return err
	}
	if n := len(cb.GetThresholds()); n > 1 {
		return fmt.Errorf("%s.thresholds: flotilla-agent supports one (priority DEFAULT), got %d", path, n)
	}
	for i, t := range cb.GetThresholds() {
		p := fmt.Sprintf("%s.thresholds[%d]", path, i)
		// retry_budget is read by parseCluster (it is for HTTP retries, not upstream's).
		if err := fieldcheck.Only(t, p, "priority", "max_connections", "retry_budget"); err != nil {
			return err
		}
		if t.GetPriority() != corev3.RoutingPriority_DEFAULT {
			return fmt.Errorf("%s.priority %s is not supported by flotilla-agent (DEFAULT only)", p, t.GetPriority())
		}
		if t.MaxConnections != nil {
			if t.GetMaxConnections().GetValue() == 0 {
				return errors.New(p + ".max_connections: must be at least 1")
			}
			cfg.MaxConnections = t.GetMaxConnections().GetValue()
		}
	}
	return nil
}

// positive converts a Duration that must be greater than 0.
func positive(d *durationpb.Duration, path string) (time.Duration, error) {
	if d == nil {
		return 0, fmt.Errorf("%s is required", path)
	}
	v, err := duration(d, path)
	if err != nil {
		return 0, err
	}
	if v == 0 {
		return 0, fmt.Errorf("%s: must be greater than 0", path)
	}
	return v, nil
}

// mapKeys returns the keys of m, in no particular order.
func mapKeys[V any](m map[protoreflect.Name]V) []protoreflect.Name {
	out := make([]protoreflect.Name, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// mergeEndpoints folds endpoints with the same address into one whose weight is the sum
// (an address is a host's identity in package upstream); Envoy keeps them as separate hosts,
// which balances the same way.
func mergeEndpoints(eps []Endpoint) []Endpoint {
	out := eps[:0:0]
	at := make(map[netip.AddrPort]int, len(eps))
	for _, e := range eps {
		if i, ok := at[e.Addr]; ok {
			out[i].Weight = uint32(min(uint64(out[i].Weight)+uint64(e.Weight), math.MaxUint32))
			continue
		}
		at[e.Addr] = len(out)
		out = append(out, e)
	}
	return out
}
