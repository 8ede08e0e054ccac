package proxy

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flotilla-proxy/flotilla/agent/accesslog"
	"github.com/flotilla-proxy/flotilla/agent/runtime"
	"github.com/flotilla-proxy/flotilla/agent/udpproxy"
	"github.com/flotilla-proxy/flotilla/agent/upstream"
)

// UDP listeners. Each runs one udpproxy.Proxy on its bound socket. Apply reconciles them by
// name like TCP listeners: an unchanged address keeps its socket and its sessions (the proxy
// gets the new config with Update; existing sessions keep their upstream), a new or moved
// listener gets a socket bound before anything changes, a removed one drains (no new
// sessions; existing ones end when idle, or at the drain timeout).

// udpEntry is one UDP listener being served. Its fields are guarded by Manager.mu.
type udpEntry struct {
	name     string
	listener *runtime.Listener // the config its proxy runs
	conn     *net.UDPConn
	proxy    *udpproxy.Proxy
}

// listenUDP binds a UDP listener's socket.
func listenUDP(l *runtime.Listener) (*net.UDPConn, error) {
	pc, err := listenConfig(l, false).ListenPacket(context.Background(), l.Network(), l.Addr().String())
	if err != nil {
		return nil, err
	}
	return pc.(*net.UDPConn), nil
}

// udpConfig is the udpproxy config of l: sessions bounded by the cluster's circuit breaker,
// upstreams picked through the upstream registry, one access log line per session.
func (m *Manager) udpConfig(l *runtime.Listener, logs map[string]*accesslog.Logger, conn *net.UDPConn) udpproxy.Config {
	u := l.UDP()
	cl := u.Cluster
	var lg *accesslog.Logger
	if u.AccessLog != nil {
		lg = logs[u.AccessLog.Path]
	}
	return udpproxy.Config{
		IdleTimeout:  u.IdleTimeout,
		MaxSessions:  int(cl.MaxConnections()),
		Pick:         m.udpPicker(u),
		OnSessionEnd: udpSessionLogger(l, lg, udpAddrPort(conn.LocalAddr())),
	}
}

// udpPicker picks a session's upstream from the cluster's live state (policy, health,
// ejections). A session is not an upstream connection: UDP's circuit breaker is the
// listener's MaxSessions, so the pick is released at once and least request does not see
// sessions.
func (m *Manager) udpPicker(u *runtime.UDPProxy) func(netip.AddrPort) (netip.AddrPort, error) {
	name, hashes, bySource := u.Cluster.Name(), u.Cluster.HashesSource(), u.HashSourceIP
	return func(client netip.AddrPort) (netip.AddrPort, error) {
		c := m.up.Cluster(name)
		if c == nil {
			return netip.AddrPort{}, errNoHealthyUpstream
		}
		var hash uint64
		if hashes {
			if bySource {
				hash = upstream.HashAddr(client.Addr())
			} else {
				hash = rand.Uint64()
			}
		}
		h, err := c.Pick(hash, nil)
		if err != nil {
			return netip.AddrPort{}, err
		}
		h.Release()
		return h.Addr(), nil
	}
}

// retireUDP stops e's proxy from creating sessions and lets its sessions end by themselves
// for at most the drain timeout (cut short by Shutdown); then it closes the proxy and the
// socket.
func (m *Manager) retireUDP(e *udpEntry) {
	m.udpDrains.Add(1)
	go func() {
		defer m.udpDrains.Done()
		ctx, cancel := context.WithTimeout(m.stopCtx, m.drain)
		defer cancel()
		e.proxy.Drain(ctx)
		e.proxy.Close()
		e.conn.Close()
	}()
	m.log.Info("listener stopped, draining", "listener", e.name, "address", e.conn.LocalAddr().String(),
		"drain_timeout_s", m.drain.Seconds())
}

// udpAddrPort converts a UDP address, unmapping IPv4-mapped IPv6.
func udpAddrPort(a net.Addr) netip.AddrPort {
	if ua, ok := a.(*net.UDPAddr); ok {
		ap := ua.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// udpCollector exports the counters of every running UDP listener's proxy, named after
// Envoy's udp_proxy statistics, with the label "listener".
type udpCollector struct {
	mu      sync.Mutex
	proxies map[string]*udpproxy.Proxy // replaced whole by Apply
}

var udpDescs = struct {
	total, active, rxDatagrams, rxBytes, txDatagrams, txBytes, noRoute, overflow, idle, dropped *prometheus.Desc
}{
	total:       udpDesc("downstream_sess_total", "UDP sessions created by a listener."),
	active:      udpDesc("downstream_sess_active", "UDP sessions of a listener now."),
	rxDatagrams: udpDesc("downstream_sess_rx_datagrams", "Datagrams received from clients by a UDP listener."),
	rxBytes:     udpDesc("downstream_sess_rx_bytes", "Bytes received from clients by a UDP listener."),
	txDatagrams: udpDesc("downstream_sess_tx_datagrams", "Datagrams sent to clients by a UDP listener."),
	txBytes:     udpDesc("downstream_sess_tx_bytes", "Bytes sent to clients by a UDP listener."),
	noRoute:     udpDesc("downstream_sess_no_route", "Datagrams of new clients dropped because no upstream could be picked or reached."),
	overflow:    udpDesc("downstream_sess_overflow", "Datagrams of new clients dropped because the listener had max sessions (the cluster's max_connections)."),
	idle:        udpDesc("downstream_sess_idle_timeout", "UDP sessions ended by the idle timeout."),
	dropped:     udpDesc("downstream_sess_datagrams_dropped", "Datagrams of a UDP listener not forwarded, in either direction."),
}

func udpDesc(name, help string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, []string{"listener"}, nil)
}

// Describe implements prometheus.Collector.
func (c *udpCollector) Describe(ch chan<- *prometheus.Desc) {
	d := udpDescs
	for _, desc := range []*prometheus.Desc{d.total, d.active, d.rxDatagrams, d.rxBytes, d.txDatagrams, d.txBytes, d.noRoute, d.overflow, d.idle, d.dropped} {
		ch <- desc
	}
}

// Collect implements prometheus.Collector.
func (c *udpCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	proxies := c.proxies
	c.mu.Unlock()
	d := udpDescs
	for name, p := range proxies {
		st := p.Stats()
		counter := func(desc *prometheus.Desc, v uint64) {
			ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(v), name)
		}
		counter(d.total, st.SessionsTotal)
		ch <- prometheus.MustNewConstMetric(d.active, prometheus.GaugeValue, float64(st.SessionsActive), name)
		counter(d.rxDatagrams, st.DatagramsRx)
		counter(d.rxBytes, st.BytesRx)
		counter(d.txDatagrams, st.DatagramsTx)
		counter(d.txBytes, st.BytesTx)
		counter(d.noRoute, st.NoRoute)
		counter(d.overflow, st.SessionsOverflow)
		counter(d.idle, st.SessionsIdleTimeout)
		counter(d.dropped, st.Dropped)
	}
}

// set replaces the exported proxies.
func (c *udpCollector) set(entries map[string]*udpEntry) {
	proxies := make(map[string]*udpproxy.Proxy, len(entries))
	for name, e := range entries {
		proxies[name] = e.proxy
	}
	c.mu.Lock()
	c.proxies = proxies
	c.mu.Unlock()
}

// registerCollector registers c with reg, logging a failure.
func registerCollector(reg prometheus.Registerer, log *slog.Logger, c prometheus.Collector) {
	if reg == nil {
		return
	}
	if err := reg.Register(c); err != nil {
		log.Error("cannot register UDP listener metrics", "error", err)
	}
}
