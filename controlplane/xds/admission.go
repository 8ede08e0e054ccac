package xds

import (
	"context"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
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

// GRPCOptions are the gRPC server options the xDS port needs besides
// keepalive: admission of new streams at Options.StreamRate (see admission).
// Pass them to grpc.NewServer before Register.
func (s *Server) GRPCOptions() []grpc.ServerOption {
	if s.admission == nil {
		return nil
	}
	return []grpc.ServerOption{grpc.ChainStreamInterceptor(s.admission.intercept)}
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

// intercept admits an xDS stream before its handler runs. Other streams on the same
// server (the agents' stats reports) cost no push and pass at once: they must not use up
// the tokens a reconnecting fleet needs for its configuration.
func (a *admission) intercept(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if !isXDS(info) {
		return handler(srv, ss)
	}
	if err := a.wait(ss.Context()); err != nil {
		return err
	}
	return handler(srv, ss)
}

// isXDS reports whether a stream is one of Envoy's discovery services (ADS, or a
// per-type service such as /envoy.service.listener.v3.ListenerDiscoveryService/…).
func isXDS(info *grpc.StreamServerInfo) bool {
	return info == nil || strings.HasPrefix(info.FullMethod, "/envoy.service.")
}
