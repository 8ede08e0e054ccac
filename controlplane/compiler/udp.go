package compiler

import (
	"errors"
	"fmt"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	udpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/udp/udp_proxy/v3"

	"github.com/flotilla-proxy/flotilla/controlplane/bundle"
	configv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/config/v1"
)

// DefaultUDPIdleTimeout is UdpProxy.idle_timeout when unset (Envoy's
// default, written out).
const DefaultUDPIdleTimeout = 60 * time.Second

// UDPProxy is the name of Envoy's UDP proxy listener filter
// (go-control-plane's wellknown has none).
const UDPProxy = "envoy.filters.udp_listener.udp_proxy"

// ConnectionLimit is the name of Envoy's connection_limit network filter.
const ConnectionLimit = "envoy.filters.network.connection_limit"

// udpListener fills in a UDP listener: no filter chains, one udp_proxy
// listener filter to cluster c. Its sessions are bounded by c's
// circuit_breakers max_connections, as in Envoy.
func udpListener(out *listenerv3.Listener, l *configv1.Listener, c *configv1.Cluster) error {
	if c == nil {
		return errors.New("udp.cluster: unknown cluster")
	}
	if c.GetProxyProtocol() != "" {
		return fmt.Errorf("udp.cluster: cluster %q sends the PROXY protocol, which UDP cannot carry", c.GetName())
	}
	if c.GetTls() != nil {
		return fmt.Errorf("udp.cluster: cluster %q originates TLS, which UDP cannot carry", c.GetName())
	}
	if l.GetTls() != nil {
		return errors.New("tls is only for tcp listeners")
	}
	switch {
	case bundle.Routed(l):
		return errors.New("sni, routes and proxy_protocol are only for tcp listeners")
	case l.GetMaxConnections() != 0:
		return errors.New("max_connections is only for tcp listeners")
	case l.GetPrereadTimeout() != nil:
		return errors.New("preread_timeout is only for tcp listeners with sni, routes or proxy_protocol")
	}
	logs, err := accessLogs(l.GetAccessLog())
	if err != nil {
		return fmt.Errorf("access_log: %w", err)
	}
	cfg := &udpproxyv3.UdpProxyConfig{
		StatPrefix:     l.GetName(),
		RouteSpecifier: &udpproxyv3.UdpProxyConfig_Cluster{Cluster: c.GetName()},
		IdleTimeout:    orDuration(l.GetUdp().GetIdleTimeout(), DefaultUDPIdleTimeout),
		AccessLog:      logs,
	}
	if bundle.HashesSource(c) {
		cfg.HashPolicies = []*udpproxyv3.UdpProxyConfig_HashPolicy{{
			PolicySpecifier: &udpproxyv3.UdpProxyConfig_HashPolicy_SourceIp{SourceIp: true},
		}}
	}
	f, err := listenerFilter(UDPProxy, cfg)
	if err != nil {
		return err
	}
	out.ListenerFilters = []*listenerv3.ListenerFilter{f}
	return nil
}
