// Package xdstest runs a real go-control-plane ADS server (snapshot cache in
// ADS mode) on a loopback port for tests of the agent's xDS side, and records
// every request it receives and response it sends. Build the resources to
// serve with package runtime/runtimetest.
package xdstest

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// Server is a go-control-plane xDS server listening on loopback. It is safe
// for concurrent use.
type Server struct {
	// Cache is the snapshot cache the server serves, in ADS mode, keyed by node id.
	Cache cache.SnapshotCache

	addr   string
	grpc   *grpc.Server
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	events []Event
}

// Event is one request received or one response sent: exactly one of
// Request and Response is set.
type Event struct {
	Request  *discoveryv3.DiscoveryRequest
	Response *discoveryv3.DiscoveryResponse
	// Time is when the server saw the request or sent the response.
	Time time.Time
}

// NewServer starts a server on addr ("" means 127.0.0.1:0) and stops it when
// the test ends. Pass the Addr of a stopped server to restart on its port.
func NewServer(t testing.TB, addr string) *Server {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("xdstest: listen %s: %v", addr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		Cache:  cache.NewSnapshotCache(true, cache.IDHash{}, nil),
		addr:   ln.Addr().String(),
		grpc:   grpc.NewServer(),
		cancel: cancel,
		done:   make(chan struct{}),
	}
	cb := serverv3.CallbackFuncs{
		StreamRequestFunc: func(_ int64, req *discoveryv3.DiscoveryRequest) error {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.events = append(s.events, Event{Request: proto.Clone(req).(*discoveryv3.DiscoveryRequest), Time: time.Now()})
			return nil
		},
		StreamResponseFunc: func(_ context.Context, _ int64, _ *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.events = append(s.events, Event{Response: proto.Clone(resp).(*discoveryv3.DiscoveryResponse), Time: time.Now()})
		},
	}
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(s.grpc, serverv3.NewServer(ctx, s.Cache, cb))
	go func() {
		defer close(s.done)
		_ = s.grpc.Serve(ln)
	}()
	t.Cleanup(s.Stop)
	return s
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return s.addr }

// Stop closes the listener and every stream at once. It may be called more
// than once.
func (s *Server) Stop() {
	s.cancel()
	s.grpc.Stop()
	<-s.done
}

// SetSnapshot serves version, made of resources (listeners, route configurations,
// clusters, load assignments and SDS secrets, mixed), to node. Every type gets the version, even with
// no resources of it. The snapshot is not checked for consistency, so tests
// can push inconsistent ones.
func (s *Server) SetSnapshot(t testing.TB, node, version string, resources ...types.Resource) {
	t.Helper()
	byType := map[resource.Type][]types.Resource{
		resource.ListenerType: nil,
		resource.ClusterType:  nil,
		resource.EndpointType: nil,
		resource.SecretType:   nil,
		resource.RouteType:    nil,
	}
	for _, r := range resources {
		var typ string
		switch r.(type) {
		case *listenerv3.Listener:
			typ = resource.ListenerType
		case *clusterv3.Cluster:
			typ = resource.ClusterType
		case *endpointv3.ClusterLoadAssignment:
			typ = resource.EndpointType
		case *tlsv3.Secret:
			typ = resource.SecretType
		case *routev3.RouteConfiguration:
			typ = resource.RouteType
		default:
			t.Fatalf("xdstest: unsupported resource %T", r)
		}
		byType[typ] = append(byType[typ], r)
	}
	snap, err := cache.NewSnapshot(version, byType)
	if err != nil {
		t.Fatalf("xdstest: snapshot %s: %v", version, err)
	}
	if err := s.Cache.SetSnapshot(context.Background(), node, snap); err != nil {
		t.Fatalf("xdstest: set snapshot %s: %v", version, err)
	}
}

// Events returns every request received and response sent so far, in the
// order the server saw them.
func (s *Server) Events() []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Event(nil), s.events...)
}

// Requests returns every request received so far, in order. go-control-plane
// fills in the stream's node on requests that carry none.
func (s *Server) Requests() []*discoveryv3.DiscoveryRequest {
	var out []*discoveryv3.DiscoveryRequest
	for _, e := range s.Events() {
		if e.Request != nil {
			out = append(out, e.Request)
		}
	}
	return out
}

// Responses returns every response sent so far, in order.
func (s *Server) Responses() []*discoveryv3.DiscoveryResponse {
	var out []*discoveryv3.DiscoveryResponse
	for _, e := range s.Events() {
		if e.Response != nil {
			out = append(out, e.Response)
		}
	}
	return out
}

// Answered reports whether a response of typeURL carrying version has been
// answered by a request with its nonce and version_info set to want (want ==
// version for an ACK), and returns that request.
func (s *Server) Answered(typeURL, version, want string) (*discoveryv3.DiscoveryRequest, bool) {
	nonces := make(map[string]bool)
	for _, r := range s.Responses() {
		if r.GetTypeUrl() == typeURL && r.GetVersionInfo() == version {
			nonces[r.GetNonce()] = true
		}
	}
	for _, r := range s.Requests() {
		if r.GetTypeUrl() == typeURL && nonces[r.GetResponseNonce()] && r.GetVersionInfo() == want {
			return r, true
		}
	}
	return nil, false
}

// WaitFor polls cond every 10ms until it holds, failing the test after timeout.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
