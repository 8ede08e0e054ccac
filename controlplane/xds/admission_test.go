package xds

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func TestAdmissionReserve(t *testing.T) {
	t0 := time.Unix(1000, 0)
	tests := []struct {
		name  string
		steps []struct {
			at   time.Duration // since t0
			want time.Duration // wait reserve returns
		}
	}{
		{name: "burst, then one every 1/rate", steps: []struct{ at, want time.Duration }{
			{0, 0}, {0, 0}, {0, 100 * time.Millisecond}, {0, 200 * time.Millisecond},
		}},
		{name: "tokens come back over time, up to the burst", steps: []struct{ at, want time.Duration }{
			{0, 0}, {0, 0}, {0, 100 * time.Millisecond}, {time.Second, 0}, {time.Second, 0}, {time.Second, 100 * time.Millisecond},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAdmission(10, 2)
			for i, st := range tt.steps {
				a.now = func() time.Time { return t0.Add(st.at) }
				if got := a.reserve(); got != st.want {
					t.Fatalf("step %d at %v: wait %v, want %v", i, st.at, got, st.want)
				}
			}
		})
	}
}

// TestAdmissionWaitGivesUp: a stream whose context ends while it waits is
// not served and gives its token back.
func TestAdmissionWaitGivesUp(t *testing.T) {
	a := newAdmission(0.001, 1) // one stream, then one every 1000s
	if err := a.wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := a.wait(ctx); err == nil {
		t.Fatal("admitted a stream past the rate")
	}
	a.mu.Lock()
	tokens := a.tokens
	a.mu.Unlock()
	if tokens < -0.01 || tokens > 0.01 {
		t.Fatalf("tokens after a stream gave up: %v, want 0", tokens)
	}
}

// TestAdmissionOnAServer: on a real gRPC server, streams past the burst are
// served at the configured rate.
func TestAdmissionOnAServer(t *testing.T) {
	s := New(Options{StreamRate: 20, StreamBurst: 2, Logger: slog.New(slog.DiscardHandler)})
	g := grpc.NewServer()
	s.Register(g)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(lis) //nolint:errcheck // ends with Stop
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ads := discoveryv3.NewAggregatedDiscoveryServiceClient(conn)

	// A stream is served once the server answers its first request; with no
	// version set it answers nothing, so "served" is "its node is known".
	start := time.Now()
	for i := range 4 {
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		st, err := ads.StreamAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&discoveryv3.DiscoveryRequest{Node: node(fmt.Sprintf("n%d", i), nil), TypeUrl: resource.ClusterType}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "4 agents served", func() bool { return len(s.Agents(nil)) == 4 })
	// Burst 2, then one every 50ms: the 4th is served 100ms after the first.
	if d := time.Since(start); d < 80*time.Millisecond {
		t.Fatalf("4 streams served in %v, want the last two held back about 50ms each", d)
	}
}

// TestAdmissionEveryXDSService: with no token left, a new stream of each
// xDS service waits (here until its deadline, unserved); with a token, it is
// served at once. Other services on the server (the agents' reports, package
// stats) are not wrapped, so they never wait.
func TestAdmissionEveryXDSService(t *testing.T) {
	n := node("n1", nil)
	first := map[string]func(ctx context.Context, conn *grpc.ClientConn) error{
		"ADS": func(ctx context.Context, conn *grpc.ClientConn) error {
			st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
			return answered(st, err, &discoveryv3.DiscoveryRequest{Node: n, TypeUrl: resource.ClusterType})
		},
		"delta ADS": func(ctx context.Context, conn *grpc.ClientConn) error {
			st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
			return answered(st, err, &discoveryv3.DeltaDiscoveryRequest{Node: n, TypeUrl: resource.ClusterType})
		},
		"LDS": func(ctx context.Context, conn *grpc.ClientConn) error {
			st, err := listenerservice.NewListenerDiscoveryServiceClient(conn).StreamListeners(ctx)
			return answered(st, err, &discoveryv3.DiscoveryRequest{Node: n, TypeUrl: resource.ListenerType})
		},
	}
	for name, first := range first {
		for _, tokens := range []float64{0, 1} {
			t.Run(fmt.Sprintf("%s/tokens=%v", name, tokens), func(t *testing.T) {
				s := New(Options{StreamRate: 0.001, StreamBurst: 1, Logger: slog.New(slog.DiscardHandler)})
				s.admission.tokens = tokens
				s.nodeSeen(n)
				if err := s.SetVersion(1, files(7001, nil, "127.0.0.1:9001")); err != nil {
					t.Fatal(err)
				}
				g := grpc.NewServer()
				s.Register(g)
				lis, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				go g.Serve(lis) //nolint:errcheck // ends with Stop
				t.Cleanup(g.Stop)
				conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { conn.Close() })
				// Admitted, the stream is answered at once; held back, it
				// waits until its deadline.
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				err = first(ctx, conn)
				if admitted := err == nil; admitted != (tokens > 0) {
					t.Fatalf("answered = %v (%v), want %v", admitted, err, tokens > 0)
				}
			})
		}
	}
}

// answered sends req on a stream just opened (st, err) and waits for the
// first response.
func answered[Req, Resp any](st grpc.BidiStreamingClient[Req, Resp], err error, req *Req) error {
	if err == nil {
		err = st.Send(req)
	}
	if err == nil {
		_, err = st.Recv()
	}
	return err
}
