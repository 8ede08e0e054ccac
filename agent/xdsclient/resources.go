package xdsclient

import (
	"errors"
	"fmt"
	"sort"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/flotilla-proxy/flotilla/agent/runtime"
)

// The xDS resource types the agent subscribes to.
const (
	ListenerType = resource.ListenerType
	ClusterType  = resource.ClusterType
	EndpointType = resource.EndpointType
	SecretType   = resource.SecretType
	RouteType    = resource.RouteType
)

// Types lists the supported type URLs in the order they are applied and
// reported: clusters, then endpoints, then secrets, then listeners, then
// route configurations (Envoy's order: CDS, EDS, LDS, RDS).
var Types = []string{ClusterType, EndpointType, SecretType, ListenerType, RouteType}

// namedTypes are the types subscribed to by resource name (the names the
// candidate config refers to) rather than by wildcard.
var namedTypes = []string{EndpointType, SecretType, RouteType}

// ShortName returns the xDS short name of a type URL ("cds", "eds", "sds", "lds", "rds"),
// used in metric labels and logs, or "other".
func ShortName(typeURL string) string {
	switch typeURL {
	case ClusterType:
		return "cds"
	case EndpointType:
		return "eds"
	case ListenerType:
		return "lds"
	case SecretType:
		return "sds"
	case RouteType:
		return "rds"
	}
	return "other"
}

// Decode unpacks the resources of one type as sent in a response (or stored in
// a snapshot) and checks each one statically: the Any must carry typeURL,
// decode, have a non-empty unique name, and pass runtime.Validate (which also
// refuses fields this build does not know). The result is keyed by resource
// name. The error lists every bad resource, each a *runtime.ResourceError.
func Decode(typeURL string, resources []*anypb.Any) (map[string]proto.Message, error) {
	newMessage, ok := messageTypes[typeURL]
	if !ok {
		return nil, fmt.Errorf("type %q is not supported", typeURL)
	}
	out := make(map[string]proto.Message, len(resources))
	var errs []error
	bad := func(name string, err error) {
		errs = append(errs, &runtime.ResourceError{TypeURL: typeURL, Name: name, Err: err})
	}
	for i, a := range resources {
		if a.GetTypeUrl() != typeURL {
			bad("", fmt.Errorf("resource %d has type %q", i, a.GetTypeUrl()))
			continue
		}
		m := newMessage()
		if err := proto.Unmarshal(a.GetValue(), m); err != nil {
			bad("", fmt.Errorf("resource %d: %w", i, err))
			continue
		}
		name := resourceName(m)
		switch {
		case name == "":
			bad("", fmt.Errorf("resource %d: name is empty", i))
			continue
		case out[name] != nil:
			bad(name, errors.New("sent more than once"))
			continue
		}
		if err := runtime.Validate(typeURL, m); err != nil {
			errs = append(errs, err)
			continue
		}
		out[name] = m
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

var messageTypes = map[string]func() proto.Message{
	ListenerType: func() proto.Message { return new(listenerv3.Listener) },
	ClusterType:  func() proto.Message { return new(clusterv3.Cluster) },
	EndpointType: func() proto.Message { return new(endpointv3.ClusterLoadAssignment) },
	SecretType:   func() proto.Message { return new(tlsv3.Secret) },
	RouteType:    func() proto.Message { return new(routev3.RouteConfiguration) },
}

func resourceName(m proto.Message) string {
	switch r := m.(type) {
	case *listenerv3.Listener:
		return r.GetName()
	case *clusterv3.Cluster:
		return r.GetName()
	case *endpointv3.ClusterLoadAssignment:
		return r.GetClusterName()
	case *tlsv3.Secret:
		return r.GetName()
	case *routev3.RouteConfiguration:
		return r.GetName()
	}
	return ""
}

// Put replaces the resources of typeURL in set with msgs, which must hold the
// message type of typeURL (as returned by Decode).
func Put(set *runtime.Resources, typeURL string, msgs map[string]proto.Message) {
	switch typeURL {
	case ListenerType:
		set.Listeners = make(map[string]*listenerv3.Listener, len(msgs))
		for n, m := range msgs {
			set.Listeners[n] = m.(*listenerv3.Listener)
		}
	case ClusterType:
		set.Clusters = make(map[string]*clusterv3.Cluster, len(msgs))
		for n, m := range msgs {
			set.Clusters[n] = m.(*clusterv3.Cluster)
		}
	case EndpointType:
		set.Endpoints = make(map[string]*endpointv3.ClusterLoadAssignment, len(msgs))
		for n, m := range msgs {
			set.Endpoints[n] = m.(*endpointv3.ClusterLoadAssignment)
		}
	case SecretType:
		set.Secrets = make(map[string]*tlsv3.Secret, len(msgs))
		for n, m := range msgs {
			set.Secrets[n] = m.(*tlsv3.Secret)
		}
	case RouteType:
		set.Routes = make(map[string]*routev3.RouteConfiguration, len(msgs))
		for n, m := range msgs {
			set.Routes[n] = m.(*routev3.RouteConfiguration)
		}
	}
}

// Get returns the resources of typeURL in set, keyed by name. A nil set has
// none.
func Get(set *runtime.Resources, typeURL string) map[string]proto.Message {
	out := make(map[string]proto.Message)
	if set == nil {
		return out
	}
	switch typeURL {
	case ListenerType:
		for n, m := range set.Listeners {
			out[n] = m
		}
	case ClusterType:
		for n, m := range set.Clusters {
			out[n] = m
		}
	case EndpointType:
		for n, m := range set.Endpoints {
			out[n] = m
		}
	case SecretType:
		for n, m := range set.Secrets {
			out[n] = m
		}
	case RouteType:
		for n, m := range set.Routes {
			out[n] = m
		}
	}
	return out
}

// SortedNames returns the keys of m in order.
func SortedNames(m map[string]proto.Message) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
