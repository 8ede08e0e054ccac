package proxy

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flotilla-proxy/flotilla/agent/promreg"
)

// metrics are the data plane's Prometheus metrics, named after Envoy's listener and cluster
// statistics: namespace flotilla_agent, label "listener" or "cluster".
type metrics struct {
	downstreamTotal  *prometheus.CounterVec
	downstreamActive *prometheus.GaugeVec
	downstreamDrain  *prometheus.CounterVec
	upstreamTotal    *prometheus.CounterVec
	connectFail      *prometheus.CounterVec
	upstreamActive   *prometheus.GaugeVec
	txBytes          *prometheus.CounterVec
	rxBytes          *prometheus.CounterVec
	noHealthy        *prometheus.CounterVec
	proxyProtoError  *prometheus.CounterVec
	preTimeout       *prometheus.CounterVec
	noChain          *prometheus.CounterVec
	clientHelloError *prometheus.CounterVec
	downstreamOver   *prometheus.CounterVec
	limited          *prometheus.CounterVec
	sslHandshake     *prometheus.CounterVec
	sslHandshakeErr  *prometheus.CounterVec
	sslConnErr       *prometheus.CounterVec
	upstreamSSLErr   *prometheus.CounterVec
}

const namespace = "flotilla_agent"

func newMetrics(reg prometheus.Registerer, log *slog.Logger) *metrics {
	counter := func(name, help, label string) *prometheus.CounterVec {
		return promreg.Register(reg, log, "data plane", prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help}, []string{label}))
	}
	gauge := func(name, help, label string) *prometheus.GaugeVec {
		return promreg.Register(reg, log, "data plane", prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help}, []string{label}))
	}
	return &metrics{
		downstreamTotal:  counter("downstream_cx_total", "Connections accepted by a listener.", "listener"),
		downstreamActive: gauge("downstream_cx_active", "Connections of a listener being served.", "listener"),
		downstreamDrain:  counter("downstream_cx_destroy_drain", "Connections of a removed listener closed at the drain deadline.", "listener"),
		upstreamTotal:    counter("upstream_cx_total", "Connection attempts to a cluster's endpoints.", "cluster"),
		connectFail:      counter("upstream_cx_connect_fail", "Connection attempts to a cluster's endpoints that failed or timed out.", "cluster"),
		upstreamActive:   gauge("upstream_cx_active", "Open connections to a cluster's endpoints.", "cluster"),
		txBytes:          counter("upstream_cx_tx_bytes_total", "Bytes sent to a cluster's endpoints, counted when a connection ends.", "cluster"),
		rxBytes:          counter("upstream_cx_rx_bytes_total", "Bytes received from a cluster's endpoints, counted when a connection ends.", "cluster"),
		noHealthy:        counter("no_healthy_upstream", "Connections closed because the cluster had no endpoint taking traffic.", "cluster"),
		proxyProtoError:  counter("downstream_cx_proxy_proto_error", "Connections closed because their PROXY protocol header was missing, malformed or too large.", "listener"),
		preTimeout:       counter("downstream_pre_cx_timeout", "Connections whose listener filters timed out waiting for the client's bytes.", "listener"),
		noChain:          counter("no_filter_chain_match", "Connections closed because no filter chain (and no default chain) matched them.", "listener"),
		clientHelloError: counter("tls_inspector_client_hello_error", "Connections closed because their TLS ClientHello was malformed or too large.", "listener"),
		downstreamOver:   counter("downstream_cx_overflow", "Connections closed at once because the listener had its connection_limit of open connections.", "listener"),
		limited:          counter("connection_limit_limited_connections", "The same as downstream_cx_overflow, under the name of Envoy's connection_limit statistic.", "listener"),
		sslHandshake:     counter("ssl_handshake", "Downstream TLS handshakes completed on a listener's TLS filter chains.", "listener"),
		sslHandshakeErr:  counter("ssl_handshake_error", "Downstream TLS handshakes that failed or timed out on a listener (the connection is closed).", "listener"),
		sslConnErr:       counter("ssl_connection_error", "Terminated TLS connections of a listener ended by a TLS error after the handshake (bad record, alert).", "listener"),
		upstreamSSLErr:   counter("upstream_ssl_handshake_error", "TLS handshakes with a cluster's endpoints that failed or timed out (also counted in upstream_cx_connect_fail).", "cluster"),
	}
}

// listenerStats are one listener's metric children, resolved once per listener rather
// than per connection.
type listenerStats struct {
	total       prometheus.Counter
	active      prometheus.Gauge
	drainClosed prometheus.Counter

	proxyProtoError, preTimeout, noChain, clientHelloError prometheus.Counter
	overflow, limited                                      prometheus.Counter
	sslHandshake, sslHandshakeError, sslConnectionError    prometheus.Counter
}

func (m *metrics) listener(name string) listenerStats {
	return listenerStats{
		total:       m.downstreamTotal.WithLabelValues(name),
		active:      m.downstreamActive.WithLabelValues(name),
		drainClosed: m.downstreamDrain.WithLabelValues(name),

		proxyProtoError:  m.proxyProtoError.WithLabelValues(name),
		preTimeout:       m.preTimeout.WithLabelValues(name),
		noChain:          m.noChain.WithLabelValues(name),
		clientHelloError: m.clientHelloError.WithLabelValues(name),
		overflow:         m.downstreamOver.WithLabelValues(name),
		limited:          m.limited.WithLabelValues(name),

		sslHandshake:       m.sslHandshake.WithLabelValues(name),
		sslHandshakeError:  m.sslHandshakeErr.WithLabelValues(name),
		sslConnectionError: m.sslConnErr.WithLabelValues(name),
	}
}

// clusterStats are one cluster's metric children.
type clusterStats struct {
	total, connectFail, noHealthy, txBytes, rxBytes prometheus.Counter
	sslHandshakeError                               prometheus.Counter
	active                                          prometheus.Gauge
}

func (m *metrics) cluster(name string) clusterStats {
	return clusterStats{
		total:       m.upstreamTotal.WithLabelValues(name),
		connectFail: m.connectFail.WithLabelValues(name),
		noHealthy:   m.noHealthy.WithLabelValues(name),
		txBytes:     m.txBytes.WithLabelValues(name),
		rxBytes:     m.rxBytes.WithLabelValues(name),
		active:      m.upstreamActive.WithLabelValues(name),

		sslHandshakeError: m.upstreamSSLErr.WithLabelValues(name),
	}
}
