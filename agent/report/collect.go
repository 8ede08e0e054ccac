package report

import (
	"maps"
	"slices"
	"time"

	dto "github.com/prometheus/client_model/go"

	reportv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/report/v1"
)

// The series a report is read from: the data plane's metrics (agent/proxy,
// agent/httpproxy, agent/upstream), by full name.
const (
	mDownstreamCx       = "flotilla_agent_downstream_cx_total"
	mDownstreamActive   = "flotilla_agent_downstream_cx_active"
	mSessTotal          = "flotilla_agent_downstream_sess_total"
	mSessActive         = "flotilla_agent_downstream_sess_active"
	mSessRxBytes        = "flotilla_agent_downstream_sess_rx_bytes"
	mSessTxBytes        = "flotilla_agent_downstream_sess_tx_bytes"
	mHTTPDownstreamXX   = "flotilla_agent_http_downstream_rq_xx"
	mUpstreamCx         = "flotilla_agent_upstream_cx_total"
	mUpstreamFail       = "flotilla_agent_upstream_cx_connect_fail"
	mUpstreamActive     = "flotilla_agent_upstream_cx_active"
	mUpstreamTxBytes    = "flotilla_agent_upstream_cx_tx_bytes_total"
	mUpstreamRxBytes    = "flotilla_agent_upstream_cx_rx_bytes_total"
	mUpstreamRqXX       = "flotilla_agent_upstream_rq_xx"
	mEndpointHealthy    = "flotilla_agent_endpoint_healthy"
	labelListener       = "listener"
	labelCluster        = "cluster"
	labelEndpoint       = "endpoint"
	labelResponseClass  = "response_code_class"
	classCount          = 6 // index by status/100: 1xx..5xx
	class2xx, class4xx  = 2, 4
	class5xx            = 5
	defaultMaxListeners = 256
	defaultMaxClusters  = 256
	defaultMaxEndpoints = 64
)

// counters are one listener's or cluster's cumulative counters and gauges.
type counters struct {
	cx, fail, rx, tx uint64
	active           uint64 // gauge
	rq               [classCount]uint64
	http             bool
	endpoints        map[string]bool // address → healthy (clusters only)
}

// sample is one gather of the registry, reduced to what reports carry.
type sample struct {
	at        time.Time
	listeners map[string]*counters
	clusters  map[string]*counters
}

// readSample reduces gathered metric families to a sample.
func readSample(families []*dto.MetricFamily, at time.Time) *sample {
	s := &sample{at: at, listeners: map[string]*counters{}, clusters: map[string]*counters{}}
	get := func(m map[string]*counters, name string) *counters {
		c := m[name]
		if c == nil {
			c = &counters{}
			m[name] = c
		}
		return c
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			v := value(m)
			lbl := labels(m)
			switch f.GetName() {
			case mDownstreamCx, mSessTotal:
				get(s.listeners, lbl[labelListener]).cx += v
			case mDownstreamActive, mSessActive:
				get(s.listeners, lbl[labelListener]).active += v
			case mSessRxBytes:
				get(s.listeners, lbl[labelListener]).rx += v
			case mSessTxBytes:
				get(s.listeners, lbl[labelListener]).tx += v
			case mHTTPDownstreamXX:
				c := get(s.listeners, lbl[labelListener])
				c.http = true
				c.rq[classOf(lbl[labelResponseClass])] += v
			case mUpstreamCx:
				get(s.clusters, lbl[labelCluster]).cx += v
			case mUpstreamFail:
				get(s.clusters, lbl[labelCluster]).fail += v
			case mUpstreamActive:
				get(s.clusters, lbl[labelCluster]).active += v
			case mUpstreamTxBytes:
				get(s.clusters, lbl[labelCluster]).tx += v
			case mUpstreamRxBytes:
				get(s.clusters, lbl[labelCluster]).rx += v
			case mUpstreamRqXX:
				c := get(s.clusters, lbl[labelCluster])
				c.http = true
				c.rq[classOf(lbl[labelResponseClass])] += v
			case mEndpointHealthy:
				c := get(s.clusters, lbl[labelCluster])
				if c.endpoints == nil {
					c.endpoints = map[string]bool{}
				}
				c.endpoints[lbl[labelEndpoint]] = v > 0
			}
		}
	}
	return s
}

// value is a metric's value as a count; negative or fractional values
// (never written by the data plane) are clamped.
func value(m *dto.Metric) uint64 {
	var f float64
	switch {
	case m.GetCounter() != nil:
		f = m.GetCounter().GetValue()
	case m.GetGauge() != nil:
		f = m.GetGauge().GetValue()
	case m.GetUntyped() != nil:
		f = m.GetUntyped().GetValue()
	}
	if f <= 0 {
		return 0
	}
	return uint64(f)
}

func labels(m *dto.Metric) map[string]string {
	out := make(map[string]string, len(m.GetLabel()))
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// classOf maps "2xx" to 2; anything unexpected counts as 5xx, as the data
// plane does for odd status codes.
func classOf(class string) int {
	if len(class) == 3 && class[1:] == "xx" && class[0] >= '1' && class[0] <= '5' {
		return int(class[0] - '0')
	}
	return class5xx
}

// delta is cur - prev for a counter; a counter that went backwards was reset
// (its listener or cluster was removed and came back), so all of cur is new.
func delta(cur, prev uint64) uint64 {
	if cur >= prev {
		return cur - prev
	}
	return cur
}

// limits bound the size of a report.
type limits struct {
	listeners, clusters, endpoints int
}

// diff builds the listener and cluster stats of a report: deltas of cur
// against prev (nil: everything since the start), gauges from cur. Entries
// with no delta, no open connections and no endpoints are left out. It
// reports whether anything was left out by the limits.
func diff(cur, prev *sample, lim limits) (ls []*reportv1.ListenerStats, cs []*reportv1.ClusterStats, truncated bool) {
	if prev == nil {
		prev = &sample{}
	}
	for _, name := range slices.Sorted(maps.Keys(cur.listeners)) {
		c := cur.listeners[name]
		p := prev.listeners[name]
		if p == nil {
			p = &counters{}
		}
		st := &reportv1.ListenerStats{
			Name:               name,
			DownstreamCxTotal:  delta(c.cx, p.cx),
			DownstreamCxActive: c.active,
			RxBytes:            delta(c.rx, p.rx),
			TxBytes:            delta(c.tx, p.tx),
			Http:               httpDelta(c, p),
		}
		if st.DownstreamCxTotal == 0 && st.DownstreamCxActive == 0 && st.RxBytes == 0 && st.TxBytes == 0 && st.Http.GetRqTotal() == 0 {
			continue
		}
		if len(ls) == lim.listeners {
			truncated = true
			continue
		}
		ls = append(ls, st)
	}
	for _, name := range slices.Sorted(maps.Keys(cur.clusters)) {
		c := cur.clusters[name]
		p := prev.clusters[name]
		if p == nil {
			p = &counters{}
		}
		st := &reportv1.ClusterStats{
			Name:                  name,
			UpstreamCxTotal:       delta(c.cx, p.cx),
			UpstreamCxConnectFail: delta(c.fail, p.fail),
			UpstreamCxActive:      c.active,
			RxBytes:               delta(c.rx, p.rx),
			TxBytes:               delta(c.tx, p.tx),
			Http:                  httpDelta(c, p),
		}
		for _, addr := range slices.Sorted(maps.Keys(c.endpoints)) {
			if len(st.Endpoints) == lim.endpoints {
				truncated = true
				break
			}
			st.Endpoints = append(st.Endpoints, &reportv1.EndpointHealth{Address: addr, Healthy: c.endpoints[addr]})
		}
		if st.UpstreamCxTotal == 0 && st.UpstreamCxConnectFail == 0 && st.UpstreamCxActive == 0 &&
			st.RxBytes == 0 && st.TxBytes == 0 && st.Http.GetRqTotal() == 0 && len(st.Endpoints) == 0 {
			continue
		}
		if len(cs) == lim.clusters {
			truncated = true
			continue
		}
		cs = append(cs, st)
	}
	return ls, cs, truncated
}

// httpDelta is the HTTP part of a delta, nil for what never served HTTP.
func httpDelta(c, p *counters) *reportv1.HttpStats {
	if !c.http {
		return nil
	}
	h := &reportv1.HttpStats{
		Rq_2Xx: delta(c.rq[class2xx], p.rq[class2xx]),
		Rq_4Xx: delta(c.rq[class4xx], p.rq[class4xx]),
		Rq_5Xx: delta(c.rq[class5xx], p.rq[class5xx]),
	}
	for i := range c.rq {
		h.RqTotal += delta(c.rq[i], p.rq[i])
	}
	return h
}
