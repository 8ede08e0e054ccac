package xds

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
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

func TestGRPCOptions(t *testing.T) {
	if got := len(New(Options{}).GRPCOptions()); got != 1 {
		t.Fatalf("default options: %d, want the admission interceptor", got)
	}
	if got := len(New(Options{StreamRate: -1}).GRPCOptions()); got != 0 {
		t.Fatalf("StreamRate -1: %d options, want none", got)
	}
}

// TestAdmissionOnAServer: on a real gRPC server, streams past the burst are
// served at the configured rate.
func TestAdmissionOnAServer(t *testing.T) {
	s := New(Options{StreamRate: 20, StreamBurst: 2, Logger: slog.New(slog.DiscardHandler)})
	g := grpc.NewServer(s.GRPCOptions()...)
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

// TestAdmissionOnlyXDS: with no tokens left, an xDS stream waits but a stream of another
// service on the same server (the agents' reports) is served at once.
func TestAdmissionOnlyXDS(t *testing.T) {
	tests := []struct {
		method string
		xds    bool
	}{
		{"/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources", true},
		{"/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources", true},
		{"/envoy.service.listener.v3.ListenerDiscoveryService/StreamListeners", true},
		{"/flotilla.report.v1.ReportService/Report", false},
	}
	for _, tt := range tests {
		t.Run(tt.method, func(t *testing.T) {
			if got := isXDS(&grpc.StreamServerInfo{FullMethod: tt.method}); got != tt.xds {
				t.Errorf("isXDS(%q) = %v, want %v", tt.method, got, tt.xds)
			}
		})
	}
}
