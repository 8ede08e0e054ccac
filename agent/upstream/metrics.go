package upstream

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flotilla-proxy/flotilla/agent/promreg"
)

// namespace is the agent's metric namespace, shared with the data plane's metrics.
const namespace = "flotilla_agent"

// metrics are the registry's Prometheus metrics, named after Envoy's cluster statistics
// (see the package documentation).
type metrics struct {
	membershipHealthy *prometheus.GaugeVec
	membershipTotal   *prometheus.GaugeVec
	ejectionsActive   *prometheus.GaugeVec
	overflow          *prometheus.CounterVec
	endpointHealthy   *prometheus.GaugeVec
	hcSuccess         *prometheus.CounterVec
	hcFailure         *prometheus.CounterVec
	ejections         *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, log *slog.Logger) *metrics {
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return promreg.Register(reg, log, "upstream", prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help}, labels))
	}
	gauge := func(name, help string, labels ...string) *prometheus.GaugeVec {
		return promreg.Register(reg, log, "upstream", prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help}, labels))
	}
	return &metrics{
		membershipHealthy: gauge("membership_healthy", "Hosts of a cluster taking traffic: healthy and not ejected.", "cluster"),
		membershipTotal:   gauge("membership_total", "Hosts of a cluster.", "cluster"),
		ejectionsActive:   gauge("outlier_detection_ejections_active", "Hosts of a cluster ejected by outlier detection now.", "cluster"),
		overflow:          counter("upstream_cx_overflow", "Upstream connections refused by a cluster's max_connections circuit breaker.", "cluster"),
		endpointHealthy:   gauge("endpoint_healthy", "1 if the endpoint takes traffic (healthy and not ejected), else 0.", "cluster", "endpoint"),
		hcSuccess:         counter("health_check_success", "Active health checks of an endpoint that passed.", "cluster", "endpoint"),
		hcFailure:         counter("health_check_failure", "Active health checks of an endpoint that failed.", "cluster", "endpoint"),
		ejections:         counter("outlier_detection_ejections_enforced_total", "Ejections of an endpoint by outlier detection.", "cluster", "endpoint"),
	}
}

func (m *metrics) cluster(name string) clusterStats {
	return clusterStats{
		healthy:       m.membershipHealthy.WithLabelValues(name),
		total:         m.membershipTotal.WithLabelValues(name),
		ejectedActive: m.ejectionsActive.WithLabelValues(name),
		overflow:      m.overflow.WithLabelValues(name),
	}
}

func (m *metrics) host(cluster, endpoint string) hostStats {
	return hostStats{
		healthy:   m.endpointHealthy.WithLabelValues(cluster, endpoint),
		hcSuccess: m.hcSuccess.WithLabelValues(cluster, endpoint),
		hcFailure: m.hcFailure.WithLabelValues(cluster, endpoint),
		ejections: m.ejections.WithLabelValues(cluster, endpoint),
	}
}

// deleteHost drops the series of a removed endpoint.
func (m *metrics) deleteHost(cluster, endpoint string) {
	m.endpointHealthy.DeleteLabelValues(cluster, endpoint)
	m.hcSuccess.DeleteLabelValues(cluster, endpoint)
	m.hcFailure.DeleteLabelValues(cluster, endpoint)
	m.ejections.DeleteLabelValues(cluster, endpoint)
}

// deleteCluster drops every series of a removed cluster.
func (m *metrics) deleteCluster(name string) {
	l := prometheus.Labels{"cluster": name}
	for _, v := range []interface{ DeletePartialMatch(prometheus.Labels) int }{
		m.membershipHealthy, m.membershipTotal, m.ejectionsActive, m.overflow,
		m.endpointHealthy, m.hcSuccess, m.hcFailure, m.ejections,
	} {
		v.DeletePartialMatch(l)
	}
}
