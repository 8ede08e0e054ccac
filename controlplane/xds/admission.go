package xds

import (
	"context"
	"sync"
	"time"

	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	secretservice "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
)

// Defaults of Options.StreamRate and Options.StreamBurst.
const (
	defaultStreamRate  = 5000
	defaultStreamBurst = 1000
)

func (o Options) streamRate() float64 {
	if o.StreamRate == 0 {
		return defaultStreamRate
	}
	return o.StreamRate
}

func (o Options) streamBurst() int {
	if o.StreamBurst <= 0 {
		return defaultStreamBurst
	}
	return o.StreamBurst
}

// admission is a token bucket on new xDS streams. A control plane that
// restarts is reconnected to by its whole fleet within a second or two (the
// agents' backoff starts at 250ms); each new stream costs a full push. Streams
// past the rate wait, in arrival order, before they are served, so the
// streams being served finish their push instead of all of them slowing down
// together, and memory grows at a pace the collector keeps up with.
type admission struct {
	rate  float64 // tokens per second
	burst float64

	mu     sync.Mutex
	tokens float64
	last   time.Time
	now    func() time.Time // time.Now; tests replace it
}

func newAdmission(rate float64, burst int) *admission {
	return &admission{rate: rate, burst: float64(burst), tokens: float64(burst), now: time.Now}
}

// reserve takes a token and returns how long to wait before it is due.
func (a *admission) reserve() time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	if !a.last.IsZero() {
		a.tokens = min(a.burst, a.tokens+now.Sub(a.last).Seconds()*a.rate)
	}
	a.last = now
	a.tokens--
	if a.tokens >= 0 {
		return 0
	}
	return time.Duration(-a.tokens / a.rate * float64(time.Second))
}

// cancel gives back a token a stream that gave up waiting did not use.
func (a *admission) cancel() {
	a.mu.Lock()
	a.tokens = min(a.burst, a.tokens+1)
	a.mu.Unlock()
}

// wait blocks until the stream is admitted or ctx is done.
func (a *admission) wait(ctx context.Context) error {
	d := a.reserve()
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		a.cancel()
		return ctx.Err()
	}
}

// admit waits for st's admission (none when a is nil), then serves it.
func admit[S interface{ Context() context.Context }](a *admission, st S, serve func(S) error) error {
	if a != nil {
		if err := a.wait(st.Context()); err != nil {
			return err
		}
	}
	return serve(st)
}

// admitted is go-control-plane's server with its streams admitted. The xDS
// services are wrapped one by one rather than with a gRPC interceptor: an
// interceptor would also see the agents' stats reports, which cost no push
// and must not use up the tokens a reconnecting fleet needs, and its frames
// would sit under every idle ADS stream's wait (see adsServer).
type admitted struct {
	serverv3.Server
	adm *admission
}

func (a admitted) DeltaAggregatedResources(st discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	return admit(a.adm, st, a.Server.DeltaAggregatedResources)
}

func (a admitted) StreamClusters(st clusterservice.ClusterDiscoveryService_StreamClustersServer) error {
	return admit(a.adm, st, a.Server.StreamClusters)
}

func (a admitted) DeltaClusters(st clusterservice.ClusterDiscoveryService_DeltaClustersServer) error {
	return admit(a.adm, st, a.Server.DeltaClusters)
}

func (a admitted) StreamEndpoints(st endpointservice.EndpointDiscoveryService_StreamEndpointsServer) error {
	return admit(a.adm, st, a.Server.StreamEndpoints)
}

func (a admitted) DeltaEndpoints(st endpointservice.EndpointDiscoveryService_DeltaEndpointsServer) error {
	return admit(a.adm, st, a.Server.DeltaEndpoints)
}

func (a admitted) StreamListeners(st listenerservice.ListenerDiscoveryService_StreamListenersServer) error {
	return admit(a.adm, st, a.Server.StreamListeners)
}

func (a admitted) DeltaListeners(st listenerservice.ListenerDiscoveryService_DeltaListenersServer) error {
	return admit(a.adm, st, a.Server.DeltaListeners)
}

func (a admitted) StreamRoutes(st routeservice.RouteDiscoveryService_StreamRoutesServer) error {
	return admit(a.adm, st, a.Server.StreamRoutes)
}

func (a admitted) DeltaRoutes(st routeservice.RouteDiscoveryService_DeltaRoutesServer) error {
	return admit(a.adm, st, a.Server.DeltaRoutes)
}

func (a admitted) StreamSecrets(st secretservice.SecretDiscoveryService_StreamSecretsServer) error {
	return admit(a.adm, st, a.Server.StreamSecrets)
}

func (a admitted) DeltaSecrets(st secretservice.SecretDiscoveryService_DeltaSecretsServer) error {
	return admit(a.adm, st, a.Server.DeltaSecrets)
}
