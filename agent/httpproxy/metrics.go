package httpproxy

import (
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flotilla-proxy/flotilla/agent/promreg"
)

// Metrics are the HTTP engine's Prometheus metrics, named after Envoy's HTTP connection
// manager, virtual host and cluster statistics, with namespace flotilla_agent:
//
//   - http_downstream_rq_total{listener}, http_downstream_rq_xx{listener,response_code_class}
//     and http_downstream_rq_time_seconds{listener}: requests a listener answered, by class
//     ("2xx"…"5xx"), and their duration;
//   - vhost_rq_total{listener,virtual_host,route,response_code_class} and
//     vhost_rq_time_seconds{listener,virtual_host,route}: the same per route;
//   - upstream_rq_total{cluster}, upstream_rq_xx{cluster,response_code_class},
//     upstream_rq_time_seconds{cluster} (to the response headers), upstream_rq_retry{cluster},
//     upstream_rq_retry_overflow{cluster} (retries the budget refused),
//     upstream_rq_timeout{cluster} and upstream_rq_per_try_timeout{cluster}.
//
// One Metrics is shared by the Servers of a Manager.
type Metrics struct {
	downstreamTotal *prometheus.CounterVec
	downstreamXX    *prometheus.CounterVec
	downstreamTime  *prometheus.HistogramVec
	routeTotal      *prometheus.CounterVec
	routeTime       *prometheus.HistogramVec
	upstreamTotal   *prometheus.CounterVec
	upstreamXX      *prometheus.CounterVec
	upstreamTime    *prometheus.HistogramVec
	retry           *prometheus.CounterVec
	retryOverflow   *prometheus.CounterVec
	timeout         *prometheus.CounterVec
	perTryTimeout   *prometheus.CounterVec

	routes sync.Map // routeKey → *routeStats
}

const namespace = "flotilla_agent"

// buckets are the latency histogram's bounds, in seconds: half a millisecond to a minute.
var buckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// NewMetrics returns the engine's metrics, registered with reg when not nil (collectors
// already registered there are shared). log receives registration errors; nil means
// slog.Default().
func NewMetrics(reg prometheus.Registerer, log *slog.Logger) *Metrics {
	if log == nil {
		log = slog.Default()
	}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return promreg.Register(reg, log, "HTTP", prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help}, labels))
	}
	hist := func(name, help string, labels ...string) *prometheus.HistogramVec {
		return promreg.Register(reg, log, "HTTP", prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: name, Help: help, Buckets: buckets}, labels))
	}
	return &Metrics{
		downstreamTotal: counter("http_downstream_rq_total", "HTTP requests a listener answered.", "listener"),
		downstreamXX:    counter("http_downstream_rq_xx", "HTTP requests a listener answered, by response code class.", "listener", "response_code_class"),
		downstreamTime:  hist("http_downstream_rq_time_seconds", "Time from the start of an HTTP request to the end of its response.", "listener"),
		routeTotal:      counter("vhost_rq_total", "HTTP requests per virtual host and route, by response code class.", "listener", "virtual_host", "route", "response_code_class"),
		routeTime:       hist("vhost_rq_time_seconds", "Duration of the HTTP requests of a route.", "listener", "virtual_host", "route"),
		upstreamTotal:   counter("upstream_rq_total", "HTTP requests sent to a cluster's endpoints (retries included).", "cluster"),
		upstreamXX:      counter("upstream_rq_xx", "Responses of a cluster's endpoints, by response code class.", "cluster", "response_code_class"),
		upstreamTime:    hist("upstream_rq_time_seconds", "Time from sending a request to a cluster's endpoint to its response headers.", "cluster"),
		retry:           counter("upstream_rq_retry", "Retries of HTTP requests to a cluster.", "cluster"),
		retryOverflow:   counter("upstream_rq_retry_overflow", "Retries not made because the cluster's retry budget was used up.", "cluster"),
		timeout:         counter("upstream_rq_timeout", "Requests to a cluster that hit the route timeout (answered 504).", "cluster"),
		perTryTimeout:   counter("upstream_rq_per_try_timeout", "Attempts to a cluster that hit the per-try timeout.", "cluster"),
	}
}

// classes are the response code classes, indexed by status/100.
var classes = [6]string{"", "1xx", "2xx", "3xx", "4xx", "5xx"}

func classIndex(status int) int {
	if c := status / 100; c >= 1 && c <= 5 {
		return c
	}
	return 5
}

// listenerStats are one listener's children, resolved once.
type listenerStats struct {
	total prometheus.Counter
	xx    [6]prometheus.Counter
	time  prometheus.Observer
}

func (m *Metrics) listener(name string) listenerStats {
	st := listenerStats{total: m.downstreamTotal.WithLabelValues(name), time: m.downstreamTime.WithLabelValues(name)}
	for i := 1; i < len(classes); i++ {
		st.xx[i] = m.downstreamXX.WithLabelValues(name, classes[i])
	}
	return st
}

// routeKey identifies a route's stats.
type routeKey struct{ listener, vhost, route string }

// routeStats are one route's children, resolved on its first request.
type routeStats struct {
	xx   [6]prometheus.Counter
	time prometheus.Observer
}

func (m *Metrics) route(listener, vhost, route string) *routeStats {
	k := routeKey{listener, vhost, route}
	if st, ok := m.routes.Load(k); ok {
		return st.(*routeStats)
	}
	st := &routeStats{time: m.routeTime.WithLabelValues(listener, vhost, route)}
	for i := 1; i < len(classes); i++ {
		st.xx[i] = m.routeTotal.WithLabelValues(listener, vhost, route, classes[i])
	}
	actual, _ := m.routes.LoadOrStore(k, st)
	return actual.(*routeStats)
}

// clusterStats are one cluster's children.
type clusterStats struct {
	total, retry, retryOverflow, timeout, perTryTimeout prometheus.Counter
	xx                                                  [6]prometheus.Counter
	time                                                prometheus.Observer
}

func (m *Metrics) cluster(name string) clusterStats {
	st := clusterStats{
		total:         m.upstreamTotal.WithLabelValues(name),
		retry:         m.retry.WithLabelValues(name),
		retryOverflow: m.retryOverflow.WithLabelValues(name),
		timeout:       m.timeout.WithLabelValues(name),
		perTryTimeout: m.perTryTimeout.WithLabelValues(name),
		time:          m.upstreamTime.WithLabelValues(name),
	}
	for i := 1; i < len(classes); i++ {
		st.xx[i] = m.upstreamXX.WithLabelValues(name, classes[i])
	}
	return st
}
