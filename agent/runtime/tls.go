package runtime

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/flotilla-proxy/flotilla/agent/fieldcheck"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	upstreamppv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/proxy_protocol/v3"
	rawbufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/flotilla-proxy/flotilla/agent/tlsconf"
)

// TLS on the agent. A filter chain's transport_socket envoy.transport_sockets.tls (a
// DownstreamTlsContext) terminates TLS; a cluster's (an UpstreamTlsContext, alone or inside
// upstream_proxy_protocol) originates it. The contexts name their certificates as SDS
// secrets, which arrive over ADS like load assignments: SDSNames is the subscription, Missing
// waits for them, Build turns contexts and secrets into tlsconf.Server and tlsconf.Client
// values. Secret bytes never appear in an error.

// DefaultHandshakeTimeout bounds a downstream TLS handshake when the listener sets no
// listener_filters_timeout (Envoy's transport_socket_connect_timeout plays this role).
const DefaultHandshakeTimeout = 10 * time.Second

// parseDownstreamSocket checks a filter chain's transport_socket: absent or raw_buffer (plain
// TCP, nil) or tls. The DownstreamTlsContext's fields are checked here (tlsconf.NewServer
// with no secrets); certificates that come over SDS are checked by Build.
func parseDownstreamSocket(ts *corev3.TransportSocket, path string) (*tlsv3.DownstreamTlsContext, error) {
	if ts == nil {
		return nil, nil
	}
	if err := fieldcheck.Only(ts, path, "name", "typed_config"); err != nil {
		return nil, err
	}
	tc := ts.GetTypedConfig()
	if tc == nil {
		return nil, fmt.Errorf("%s.typed_config is required", path)
	}
	path += ".typed_config"
	switch tc.GetTypeUrl() {
	case rawBufferTypeURL:
		rb := &rawbufferv3.RawBuffer{}
		if err := tc.UnmarshalTo(rb); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return nil, fieldcheck.Only(rb, path)
	case downstreamTLSTypeURL:
	default:
		return nil, fmt.Errorf("%s: transport socket type %q is not supported by flotilla-agent on a filter chain (only %s and %s)", path, tc.GetTypeUrl(), tlsconf.TransportSocketName, RawBufferName)
	}
	d := &tlsv3.DownstreamTlsContext{}
	if err := tc.UnmarshalTo(d); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if _, err := tlsconf.NewServer(d, tlsconf.SecretMap(nil)); err != nil && !errors.Is(err, tlsconf.ErrMissingSecret) {
		return nil, fmt.Errorf("%s.%w", path, err)
	}
	return d, nil
}

// chainTLS returns the DownstreamTlsContext of a raw filter chain, nil when it has none or
// it does not decode (Validate reports that).
func chainTLS(fc *listenerv3.FilterChain) *tlsv3.DownstreamTlsContext {
	tc := fc.GetTransportSocket().GetTypedConfig()
	if tc.GetTypeUrl() != downstreamTLSTypeURL {
		return nil
	}
	d := &tlsv3.DownstreamTlsContext{}
	if tc.UnmarshalTo(d) != nil {
		return nil
	}
	return d
}

// clusterTLS returns the UpstreamTlsContext of a raw cluster, directly in its
// transport_socket or inside upstream_proxy_protocol; nil when it has none or it does not
// decode (Validate reports that).
func clusterTLS(c *clusterv3.Cluster) *tlsv3.UpstreamTlsContext {
	tc := c.GetTransportSocket().GetTypedConfig()
	if tc.GetTypeUrl() == upstreamPPTypeURL {
		pp := &upstreamppv3.ProxyProtocolUpstreamTransport{}
		if tc.UnmarshalTo(pp) != nil {
			return nil
		}
		tc = pp.GetTransportSocket().GetTypedConfig()
	}
	if tc.GetTypeUrl() != upstreamTLSTypeURL {
		return nil
	}
	u := &tlsv3.UpstreamTlsContext{}
	if tc.UnmarshalTo(u) != nil {
		return nil
	}
	return u
}

// listenerChains returns a raw listener's filter chains and then its default chain.
func listenerChains(l *listenerv3.Listener) []*listenerv3.FilterChain {
	fcs := l.GetFilterChains()
	if d := l.GetDefaultFilterChain(); d != nil {
		fcs = append(fcs[:len(fcs):len(fcs)], d)
	}
	return fcs
}

// SDSNames returns, sorted and without duplicates, the names of the SDS secrets the
// listeners' filter chains and the clusters in r refer to: the resource names of the SDS
// subscription.
func (r *Resources) SDSNames() []string {
	var names []string
	for _, l := range r.Listeners {
		for _, fc := range listenerChains(l) {
			if d := chainTLS(fc); d != nil {
				names = append(names, tlsconf.SecretNames(d)...)
			}
		}
	}
	for _, c := range r.Clusters {
		if u := clusterTLS(c); u != nil {
			names = append(names, tlsconf.SecretNames(u)...)
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// missingSecrets lists, in a stable order, the secrets r's listeners and clusters refer to
// that r does not hold.
func (r *Resources) missingSecrets() []string {
	var missing []string
	report := func(kind, name string, refs []string) {
		var lacking []string
		for _, s := range refs {
			if _, ok := r.Secrets[s]; !ok && !slices.Contains(lacking, s) {
				lacking = append(lacking, s)
			}
		}
		if len(lacking) > 0 {
			slices.Sort(lacking)
			missing = append(missing, fmt.Sprintf("no secret yet for %s %q: %s", kind, name, strings.Join(lacking, ", ")))
		}
	}
	for _, name := range sortedKeys(r.Listeners) {
		var refs []string
		for _, fc := range listenerChains(r.Listeners[name]) {
			if d := chainTLS(fc); d != nil {
				refs = append(refs, tlsconf.SecretNames(d)...)
			}
		}
		report("listener", name, refs)
	}
	for _, name := range sortedKeys(r.Clusters) {
		if u := clusterTLS(r.Clusters[name]); u != nil {
			report("cluster", name, tlsconf.SecretNames(u))
		}
	}
	return missing
}

// chainPath is the field path of a listener's chain i (len(chains) for the default chain).
func chainPath(i, n int) string {
	if i == n {
		return "default_filter_chain"
	}
	return fmt.Sprintf("filter_chains[%d]", i)
}

// newServer builds the TLS termination of a parsed chain, nil for a plain chain. path is the
// chain's field path, prefixed to tlsconf's.
func newServer(cs chainSpec, secrets tlsconf.Secrets, path string) (*tlsconf.Server, error) {
	if cs.tls == nil {
		return nil, nil
	}
	s, err := tlsconf.NewServer(cs.tls, secrets)
	if err != nil {
		return nil, fmt.Errorf("%s.transport_socket.typed_config.%w", path, err)
	}
	return s, nil
}
