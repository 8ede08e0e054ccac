package stats

import (
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flotilla-proxy/flotilla/controlplane/fleet"
	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
)

// ConvergenceBuckets are the bounds of the convergence histogram, in seconds.
var ConvergenceBuckets = []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}

// maxVersions bounds how many config versions' publication times are
// remembered.
const maxVersions = 64

// Metrics are the control plane's Prometheus metrics (namespace
// flotilla_controlplane):
//
//	xds_pushes_total{type}              responses sent to agents (cds, eds, lds, rds, sds)
//	xds_acks_total{type}, xds_nacks_total{type}   answers to the latest response of a type
//	agents{type,state}                  connected agents per type and sync state (SYNCED, STALE, NACKED, NOT_SENT)
//	agents_connected                    agents with an xDS stream
//	proxy_convergence_seconds           from the push of a config version to an agent's ACK of all of it
//	reports_received_total, reports_rejected_total, reporting_agents   the report stream
//
// The convergence histogram is Istio's pilot_proxy_convergence_time measured
// up to the ACK: one observation per agent and config version it converges
// on, from the moment the control plane made that version the agent's to the
// ACK that completes it (whichever type comes last). The clock starts when
// the version was published as the active one (VersionPublished: an apply,
// a rollback, a rollout completing), or, if later, when an assignment moved
// the agent's stream to it (a rollout step pinning a version on it, or an
// aborted rollout sending it back to the active version). Not observed:
//   - an agent that connected after the clock started (a new agent, a
//     restarted or reconnecting one, every agent after a control plane
//     restart): it gets the version as its first config, not as a change,
//     and its time to connect is no measure of propagation (Istio likewise
//     records pushes of a change to connected proxies only);
//   - the same version again on the same stream: other types' ACKs, re-ACKs,
//     a rollout completing (the canaries move to their labels' group,
//     which now serves the version they run);
//   - a version that changes nothing for the agent's group (nothing is
//     pushed), and a version this Metrics was never told about.
//
// Metrics implements fleet.Observer; pass it to xds.Options.Observer.
type Metrics struct {
	pushes, acks, nacks *prometheus.CounterVec
	convergence         prometheus.Histogram
	reports, rejected   prometheus.Counter
	fleet               func(map[string]string) []*adminv1.Agent
	reporting           func() int
	now                 func() time.Time

	mu       sync.Mutex
	versions map[uint64]time.Time // config version → when it was last published as the active one
}

var _ fleet.Observer = (*Metrics)(nil)

// NewMetrics returns the metrics. agents lists the connected agents (for the
// gauges; nil means none are exported).
func NewMetrics(agents func(selector map[string]string) []*adminv1.Agent) *Metrics {
	const ns = "flotilla_controlplane"
	perType := func(name, help string) *prometheus.CounterVec {
		v := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: name, Help: help}, []string{"type"})
		for _, t := range fleet.TrackedTypes {
			v.WithLabelValues(typeLabel(t))
		}
		return v
	}
	return &Metrics{
		pushes: perType("xds_pushes_total", "xDS responses sent to agents, by type."),
		acks:   perType("xds_acks_total", "ACKs of the latest xDS response of a type."),
		nacks:  perType("xds_nacks_total", "NACKs (rejections) of the latest xDS response of a type."),
		convergence: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "proxy_convergence_seconds",
			Help:    "Time from a config version's push to an agent (its publication as the active version, or an assignment moving the agent to it) to the agent's ACK of all of that version's snapshot for its group; agents that connected after the push are not observed.",
			Buckets: ConvergenceBuckets}),
		reports: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "reports_received_total",
			Help: "Agent stats reports accepted."}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "reports_rejected_total",
			Help: "Agent stats reports rejected as malformed or over the limits (the stream is ended)."}),
		fleet:    agents,
		now:      time.Now,
		versions: map[uint64]time.Time{},
	}
}

// typeLabel is the lower-case short name of a type URL: cds, eds, lds, rds, sds.
func typeLabel(typeURL string) string {
	switch s := fleet.ShortName(typeURL); s {
	case "CDS", "EDS", "LDS", "RDS", "SDS":
		return strings.ToLower(s)
	}
	return "other"
}

// Register registers the metrics with reg.
func (m *Metrics) Register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.pushes, m.acks, m.nacks, m.convergence, m.reports, m.rejected, m} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Watch counts the reports an Aggregator accepts and rejects, and exports
// how many agents report.
func (m *Metrics) Watch(a *Aggregator) {
	a.received = m.reports.Inc
	a.rejected = m.rejected.Inc
	m.reporting = a.Agents
}

// VersionPublished starts the convergence clock of config version number for
// the agents that follow the active version: call it as the control plane
// starts publishing it as the active version (before xds.Server.SetVersion,
// so that compiling the snapshots counts). The clock starts now, not at the
// version's creation: a version staged for a rollout is pushed to the fleet
// when the rollout completes, and its age is no part of convergence.
func (m *Metrics) VersionPublished(number uint64) {
	start := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.versions[number] = start
	for len(m.versions) > maxVersions {
		oldest := number
		for n := range m.versions {
			oldest = min(oldest, n)
		}
		delete(m.versions, oldest)
	}
}

// Pushed implements fleet.Observer.
func (m *Metrics) Pushed(_, typeURL, _ string) { m.pushes.WithLabelValues(typeLabel(typeURL)).Inc() }

// Answered implements fleet.Observer.
func (m *Metrics) Answered(_, typeURL, _ string, nack bool) {
	if nack {
		m.nacks.WithLabelValues(typeLabel(typeURL)).Inc()
		return
	}
	m.acks.WithLabelValues(typeLabel(typeURL)).Inc()
}

// Converged implements fleet.Observer: it observes the convergence histogram
// (see Metrics for what is and is not observed).
func (m *Metrics) Converged(_ string, _ map[string]string, version uint64, opened, moved time.Time) {
	m.mu.Lock()
	start, ok := m.versions[version]
	m.mu.Unlock()
	if moved.After(start) {
		// An assignment moved the agent to the version after it was
		// published, or to a version never published (a canary's).
		start, ok = moved, true
	}
	if !ok || opened.After(start) {
		return
	}
	m.convergence.Observe(max(0, m.now().Sub(start).Seconds()))
}

var (
	agentsDesc    = prometheus.NewDesc("flotilla_controlplane_agents", "Connected agents per xDS type and sync state (SYNCED, STALE, NACKED, NOT_SENT).", []string{"type", "state"}, nil)
	connectedDesc = prometheus.NewDesc("flotilla_controlplane_agents_connected", "Agents with an xDS stream to this control plane.", nil, nil)
	reportingDesc = prometheus.NewDesc("flotilla_controlplane_reporting_agents", "Agents that sent a stats report in the last 10 minutes.", nil, nil)
)

// Describe implements prometheus.Collector for the fleet gauges.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- agentsDesc
	ch <- connectedDesc
	ch <- reportingDesc
}

// Collect implements prometheus.Collector: the fleet gauges, computed at
// scrape time from the fleet registry.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	if m.reporting != nil {
		ch <- prometheus.MustNewConstMetric(reportingDesc, prometheus.GaugeValue, float64(m.reporting()))
	}
	if m.fleet == nil {
		return
	}
	agents := m.fleet(nil)
	ch <- prometheus.MustNewConstMetric(connectedDesc, prometheus.GaugeValue, float64(len(agents)))
	states := []adminv1.SyncState{adminv1.SyncState_SYNC_STATE_SYNCED, adminv1.SyncState_SYNC_STATE_STALE,
		adminv1.SyncState_SYNC_STATE_NACKED, adminv1.SyncState_SYNC_STATE_NOT_SENT}
	counts := map[string]map[adminv1.SyncState]int{}
	for _, t := range fleet.TrackedTypes {
		counts[t] = map[adminv1.SyncState]int{}
	}
	for _, a := range agents {
		for _, rs := range a.GetResources() {
			if c := counts[rs.GetTypeUrl()]; c != nil {
				c[rs.GetState()]++
			}
		}
	}
	for _, t := range fleet.TrackedTypes {
		for _, st := range states {
			ch <- prometheus.MustNewConstMetric(agentsDesc, prometheus.GaugeValue, float64(counts[t][st]),
				typeLabel(t), st.String()[len("SYNC_STATE_"):])
		}
	}
}
