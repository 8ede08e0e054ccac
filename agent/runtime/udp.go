package runtime

import (
	"errors"
	"fmt"
	"time"

	"github.com/flotilla-proxy/flotilla/agent/fieldcheck"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	udpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/udp/udp_proxy/v3"
)

// UDPProxyFilterName is the well-known name of the listener filter of a UDP listener.
const UDPProxyFilterName = "envoy.filters.udp_listener.udp_proxy"

// DefaultUDPIdleTimeout is a udp_proxy's idle_timeout when unset (Envoy's).
const DefaultUDPIdleTimeout = 60 * time.Second

var udpProxyTypeURL = typeURLOf(&udpproxyv3.UdpProxyConfig{})

// UDPProxy is the compiled udp_proxy of a UDP listener: sessions per client address, each
// with an upstream picked from Cluster.
type UDPProxy struct {
	// Cluster receives the sessions; never nil in a built Graph. Its MaxConnections bounds
	// the listener's sessions (as Envoy's circuit breaker does).
	Cluster *Cluster
	// IdleTimeout ends a session without datagrams in either direction for this long.
	IdleTimeout time.Duration
	// HashSourceIP is hash_policies source_ip: a ring hash or Maglev cluster hashes the
	// client's address; without it such a cluster picks at random.
	HashSourceIP bool
	// AccessLog, if not nil, gets one line per session.
	AccessLog *AccessLog
}

// udpSpec is a parsed udp_proxy before its cluster is linked.
type udpSpec struct {
	cluster     string
	idleTimeout time.Duration
	hashSource  bool
	accessLog   *AccessLog
}

// parseUDPListener checks a UDP listener: exactly one listener filter, the udp_proxy, and no
// filter chains.
func parseUDPListener(l *listenerv3.Listener, spec *listenerSpec) error {
	if err := fieldcheck.Only(l, "", "name", "address", "stat_prefix", "metadata", "listener_filters"); err != nil {
		return fmt.Errorf("%w (a UDP listener has a %s listener filter and no filter chains)", err, UDPProxyFilterName)
	}
	if n := len(l.GetListenerFilters()); n != 1 {
		return fmt.Errorf("listener_filters: a UDP listener needs exactly one, %s; got %d", UDPProxyFilterName, n)
	}
	const path = "listener_filters[0]"
	f := l.GetListenerFilters()[0]
	if err := fieldcheck.Only(f, path, "name", "typed_config"); err != nil {
		return err
	}
	tc := f.GetTypedConfig()
	if tc == nil || tc.GetTypeUrl() != udpProxyTypeURL {
		return fmt.Errorf("%s.typed_config: a UDP listener supports only %s", path, UDPProxyFilterName)
	}
	cfg := &udpproxyv3.UdpProxyConfig{}
	if err := tc.UnmarshalTo(cfg); err != nil {
		return fmt.Errorf("%s.typed_config: %w", path, err)
	}
	p := path + ".typed_config"
	if err := fieldcheck.Only(cfg, p, "stat_prefix", "cluster", "idle_timeout", "hash_policies", "access_log"); err != nil {
		return err
	}
	if cfg.GetCluster() == "" {
		return fmt.Errorf("%s.cluster is required", p)
	}
	us := &udpSpec{cluster: cfg.GetCluster(), idleTimeout: DefaultUDPIdleTimeout}
	if cfg.IdleTimeout != nil {
		d, err := positive(cfg.GetIdleTimeout(), p+".idle_timeout")
		if err != nil {
			return err
		}
		us.idleTimeout = d
	}
	switch hps := cfg.GetHashPolicies(); len(hps) {
	case 0:
	case 1:
		if err := fieldcheck.Only(hps[0], p+".hash_policies[0]", "source_ip"); err != nil {
			return err
		}
		if !hps[0].GetSourceIp() {
			return errors.New(p + ".hash_policies[0].source_ip must be true")
		}
		us.hashSource = true
	default:
		return fmt.Errorf("%s.hash_policies: flotilla-agent supports one (source_ip), got %d", p, len(hps))
	}
	al, err := parseAccessLogs(cfg.GetAccessLog(), p+".access_log")
	if err != nil {
		return err
	}
	us.accessLog = al
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	spec.udp = us
	return nil
}

// udpClusterOf returns the cluster a UDP listener's udp_proxy names, "" if none decodes.
func udpClusterOf(l *listenerv3.Listener) string {
	fs := l.GetListenerFilters()
	if len(fs) != 1 || fs[0].GetTypedConfig().GetTypeUrl() != udpProxyTypeURL {
		return ""
	}
	cfg := &udpproxyv3.UdpProxyConfig{}
	if fs[0].GetTypedConfig().UnmarshalTo(cfg) != nil {
		return ""
	}
	return cfg.GetCluster()
}
