// Package runtime turns a consistent set of Envoy xDS v3 resources into the agent's runtime
// graph: an immutable, validated description of every listener the agent serves (TCP with
// filter chains running a tcp_proxy or an http_connection_manager, or UDP with a udp_proxy),
// its access logs and TLS termination, the route tables HTTP chains serve (RDS, compiled into
// package httproute's form: http.go, routes.go), the clusters, and each cluster's endpoints,
// TLS origination, HTTP protocol options, load-balancing policy, health check, outlier
// detection and circuit breaker (as the upstream.ClusterConfig package upstream runs). TLS
// configs are built by package tlsconf from the transport sockets and the SDS secrets of the
// set (tls.go).
//
// The flow is: the xDS client decodes each resource and calls Validate on it the moment it
// arrives (so a bad one is NACKed at once), buffers resources in a Resources set until
// Missing reports nothing missing, then calls Build and hands the Graph to the data plane
// (package proxy), which swaps it in atomically. flotilla-agent supports a documented subset of
// Envoy's API (docs/xds-support.md); any field outside it that would change behaviour is
// rejected with an error naming the resource and the field, never silently ignored.
//
// Nothing in this package touches the network. A Graph and everything reachable from it is
// read-only after Build and safe to share between goroutines.
package runtime

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// Resources is a candidate set of xDS resources, keyed by resource name: listeners,
// clusters and SDS secrets by their name, load assignments by their cluster_name (which, for
// an EDS cluster, is the cluster's EDS service name). The messages are treated as read-only;
// secrets hold private keys and must never be logged.
type Resources struct {
	Listeners map[string]*listenerv3.Listener
	Clusters  map[string]*clusterv3.Cluster
	Endpoints map[string]*endpointv3.ClusterLoadAssignment // keyed by cluster_name / service_name
	Secrets   map[string]*tlsv3.Secret                     // SDS secrets, keyed by name
	Routes    map[string]*routev3.RouteConfiguration       // RDS route configurations, keyed by name
}

// ResourceError names the resource at fault so the xDS client can NACK the right type.
// TypeURL is the xDS type URL of the resource (go-control-plane's resource/v3 constants);
// Name is the resource's name, empty when the resource could not be identified.
type ResourceError struct {
	TypeURL string
	Name    string
	Err     error
}

// Error reads like `listener "web": filter_chains[0].filter_chain_match.source_ports is not supported by
// flotilla-agent`.
func (e *ResourceError) Error() string {
	if e.Name == "" {
		return fmt.Sprintf("%s: %v", kindOf(e.TypeURL), e.Err)
	}
	return fmt.Sprintf("%s %q: %v", kindOf(e.TypeURL), e.Name, e.Err)
}

// Unwrap returns the underlying error.
func (e *ResourceError) Unwrap() error { return e.Err }

// kindOf names a resource type the way operators read it in errors.
func kindOf(typeURL string) string {
	switch typeURL {
	case resourcev3.ListenerType:
		return "listener"
	case resourcev3.ClusterType:
		return "cluster"
	case resourcev3.EndpointType:
		return "load assignment"
	case resourcev3.SecretType:
		return "secret"
	case resourcev3.RouteType:
		return "route configuration"
	}
	return "resource " + strings.TrimPrefix(typeURL, resourcev3.APITypePrefix)
}

// edsServiceName returns the name under which an EDS cluster's endpoints are published:
// eds_cluster_config.service_name, defaulting to the cluster's name (as Envoy does). It
// returns "" for a cluster that is not of type EDS.
func edsServiceName(c *clusterv3.Cluster) string {
	if c.GetType() != clusterv3.Cluster_EDS {
		return ""
	}
	if s := c.GetEdsClusterConfig().GetServiceName(); s != "" {
		return s
	}
	return c.GetName()
}

// EDSNames returns, sorted and without duplicates, the EDS service names the clusters in r
// need: the resource names of the EDS subscription.
func (r *Resources) EDSNames() []string {
	var names []string
	for _, c := range r.Clusters {
		if n := edsServiceName(c); n != "" {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// Missing returns nil when r is consistent: every cluster a listener's tcp_proxy or udp_proxy names
// exists, every route configuration an http_connection_manager names has arrived (RDS) and every
// cluster its routes send to exists, every EDS cluster has its ClusterLoadAssignment and every SDS secret a TLS filter
// chain or cluster names has arrived (as Envoy keeps such a listener warming). Otherwise the error lists, in
// a stable order, everything that is missing, e.g.
// `listener "dicom" references unknown cluster "pacs"; no endpoints yet for cluster "db"`.
// Resources that are malformed are skipped here; Validate and Build report them.
func (r *Resources) Missing() error {
	var missing []string
	for _, name := range sortedKeys(r.Listeners) {
		seen := map[string]bool{}
		refs := []string{udpClusterOf(r.Listeners[name])}
		for _, tp := range tcpProxiesOf(r.Listeners[name]) {
			refs = append(refs, tp.GetCluster())
		}
		for _, c := range refs {
			if c == "" || seen[c] {
				continue
			}
			seen[c] = true
			if _, ok := r.Clusters[c]; !ok {
				missing = append(missing, fmt.Sprintf("listener %q references unknown cluster %q", name, c))
			}
		}
	}
	for _, name := range sortedKeys(r.Clusters) {
		svc := edsServiceName(r.Clusters[name])
		if svc == "" {
			continue
		}
		if _, ok := r.Endpoints[svc]; ok {
			continue
		}
		if svc == name {
			missing = append(missing, fmt.Sprintf("no endpoints yet for cluster %q", name))
		} else {
			missing = append(missing, fmt.Sprintf("no endpoints yet for cluster %q (EDS service %q)", name, svc))
		}
	}
	missing = append(missing, r.missingRoutes()...)
	missing = append(missing, r.missingSecrets()...)
	if len(missing) == 0 {
		return nil
	}
	return errors.New(strings.Join(missing, "; "))
}

// sortedKeys returns the keys of m in ascending order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
