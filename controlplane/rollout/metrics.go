package rollout

import (
	"context"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flotilla-proxy/flotilla/controlplane/store"
	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
)

// metricsCollector exports the stored rollouts at scrape time.
type metricsCollector struct {
	st      store.Store
	byState *prometheus.Desc
	step    *prometheus.Desc
	percent *prometheus.Desc
}

// RegisterMetrics registers, on reg, flotilla_controlplane_rollouts{state}
// (rollouts per state), and for the running or paused rollout
// flotilla_controlplane_rollout_step{rollout,version} (the current step,
// from 1) and flotilla_controlplane_rollout_percent{rollout,version} (its
// share of the selected agents), read from the store at scrape time.
func RegisterMetrics(reg prometheus.Registerer, st store.Store) error {
	return reg.Register(&metricsCollector{
		st: st,
		byState: prometheus.NewDesc("flotilla_controlplane_rollouts", "Rollouts by state.",
			[]string{"state"}, nil),
		step: prometheus.NewDesc("flotilla_controlplane_rollout_step", "Current step (from 1) of the running or paused rollout.",
			[]string{"rollout", "version"}, nil),
		percent: prometheus.NewDesc("flotilla_controlplane_rollout_percent", "Share of the selected agents the current step assigns.",
			[]string{"rollout", "version"}, nil),
	})
}

// Describe implements prometheus.Collector.
func (m *metricsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.byState
	ch <- m.step
	ch <- m.percent
}

// Collect implements prometheus.Collector.
func (m *metricsCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	all, err := m.st.ListRollouts(ctx, 0)
	if err != nil {
		return
	}
	counts := map[adminv1.RolloutState]int{}
	for _, r := range all {
		counts[r.GetState()]++
		if live(r) && int(r.GetStep()) < len(r.GetSteps()) {
			id, v := strconv.FormatUint(r.GetId(), 10), strconv.FormatUint(r.GetVersion(), 10)
			ch <- prometheus.MustNewConstMetric(m.step, prometheus.GaugeValue, float64(r.GetStep()+1), id, v)
			ch <- prometheus.MustNewConstMetric(m.percent, prometheus.GaugeValue, float64(r.GetSteps()[r.GetStep()]), id, v)
		}
	}
	for _, s := range []adminv1.RolloutState{adminv1.RolloutState_ROLLOUT_STATE_RUNNING, adminv1.RolloutState_ROLLOUT_STATE_PAUSED,
		adminv1.RolloutState_ROLLOUT_STATE_COMPLETED, adminv1.RolloutState_ROLLOUT_STATE_ABORTED} {
		ch <- prometheus.MustNewConstMetric(m.byState, prometheus.GaugeValue, float64(counts[s]), stateName(s))
	}
}
