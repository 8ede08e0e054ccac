package stats

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

// TestConvergenceClock: an agent's convergence on a version is measured from
// the version's publication as the active one, or from the assignment that
// moved the agent to it if that came later (a pinned canary version, or the
// active version again after an aborted rollout); an agent that connected
// after the clock started (a new, restarted or reconnecting agent) and a
// version never published nor moved to are not observed.
func TestConvergenceClock(t *testing.T) {
	const active, pinned, unknown = 7, 8, 9
	published := t0 // version 7 becomes the active one
	now := published.Add(2 * time.Second)
	never := time.Time{}
	tests := []struct {
		name          string
		version       uint64
		opened, moved time.Time
		want          float64 // seconds; -1: not observed
	}{
		{"connected before the publication", active, published.Add(-time.Hour), never, 2},
		{"connected as it was published", active, published, never, 2},
		{"connected after the publication: its first config, not a change", active, published.Add(time.Second), never, -1},
		{"moved before the publication", active, published.Add(-time.Hour), published.Add(-time.Minute), 2},
		{"moved back to it after the publication (a rollout aborted)", active, published.Add(-time.Hour), published.Add(time.Second), 1},
		{"moved to a pinned version never published", pinned, published.Add(-time.Hour), published.Add(1500 * time.Millisecond), 0.5},
		{"pinned version, connected after the move", pinned, published.Add(1800 * time.Millisecond), published.Add(1500 * time.Millisecond), -1},
		{"a version it was never told about", unknown, published.Add(-time.Hour), never, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := NewMetrics(nil)
			m.now = func() time.Time { return published }
			m.VersionPublished(active)
			m.now = func() time.Time { return now }
			m.Converged("a1", nil, tt.version, tt.opened, tt.moved)
			var h dto.Metric
			if err := m.convergence.Write(&h); err != nil {
				t.Fatal(err)
			}
			count, sum := h.GetHistogram().GetSampleCount(), h.GetHistogram().GetSampleSum()
			switch {
			case tt.want < 0 && count != 0:
				t.Errorf("observed %d times (sum %vs), want not observed", count, sum)
			case tt.want >= 0 && (count != 1 || sum != tt.want):
				t.Errorf("observed %d times, sum %vs; want once, %vs", count, sum, tt.want)
			}
		})
	}
}

// TestConvergenceExposition: the histogram's name, help and buckets as
// Prometheus scrapes them; a version published again restarts its clock (a
// staged version activated long after its creation is measured from then).
func TestConvergenceExposition(t *testing.T) {
	m := NewMetrics(nil)
	clk := &clock{t: t0}
	m.now = clk.now
	m.VersionPublished(1)
	clk.advance(time.Hour)
	m.VersionPublished(1) // activated again an hour later
	clk.advance(300 * time.Millisecond)
	m.Converged("a1", nil, 1, t0.Add(-time.Minute), time.Time{})
	clk.advance(4 * time.Second)
	m.Converged("a2", nil, 1, t0.Add(-time.Minute), time.Time{})

	reg := prometheus.NewRegistry()
	if err := m.Register(reg); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP flotilla_controlplane_proxy_convergence_seconds Time from a config version's push to an agent (its publication as the active version, or an assignment moving the agent to it) to the agent's ACK of all of that version's snapshot for its group; agents that connected after the push are not observed.
# TYPE flotilla_controlplane_proxy_convergence_seconds histogram
flotilla_controlplane_proxy_convergence_seconds_bucket{le="0.01"} 0
flotilla_controlplane_proxy_convergence_seconds_bucket{le="0.025"} 0
flotilla_controlplane_proxy_convergence_seconds_bucket{le="0.05"} 0
flotilla_controlplane_proxy_convergence_seconds_bucket{le="0.1"} 0
flotilla_controlplane_proxy_convergence_seconds_bucket{le="0.25"} 0
flotilla_controlplane_proxy_convergence_seconds_bucket{le="0.5"} 1
flotilla_controlplane_proxy_convergence_seconds_bucket{le="1"} 1
flotilla_controlplane_proxy_convergence_seconds_bucket{le="2.5"} 1
flotilla_controlplane_proxy_convergence_seconds_bucket{le="5"} 2
flotilla_controlplane_proxy_convergence_seconds_bucket{le="10"} 2
flotilla_controlplane_proxy_convergence_seconds_bucket{le="30"} 2
flotilla_controlplane_proxy_convergence_seconds_bucket{le="60"} 2
flotilla_controlplane_proxy_convergence_seconds_bucket{le="120"} 2
flotilla_controlplane_proxy_convergence_seconds_bucket{le="300"} 2
flotilla_controlplane_proxy_convergence_seconds_bucket{le="+Inf"} 2
flotilla_controlplane_proxy_convergence_seconds_sum 4.6
flotilla_controlplane_proxy_convergence_seconds_count 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "flotilla_controlplane_proxy_convergence_seconds"); err != nil {
		t.Fatal(err)
	}
}
