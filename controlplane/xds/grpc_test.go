package xds

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/xds"

	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
	configv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/config/v1"
)

// namedBackend is a gRPC TestService that answers UnaryCall with its name.
type namedBackend struct {
	testgrpc.UnimplementedTestServiceServer
	name string
}

func (b *namedBackend) UnaryCall(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	return &testgrpc.SimpleResponse{Hostname: b.name}, nil
}

// startBackend serves a namedBackend on 127.0.0.1 and returns its address.
func startBackend(t *testing.T, name string) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(g, &namedBackend{name: name})
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	return lis.Addr().String()
}

// greeterFiles is a bundle with only the gRPC service "greeter" (for
// clients labelled app=shop) on cluster "greeter-backends" at endpoint.
func greeterFiles(endpoint string) []*adminv1.ConfigFile {
	return []*adminv1.ConfigFile{{Path: "grpc.yaml", Bundle: &configv1.Bundle{
		Clusters: []*configv1.Cluster{{Name: "greeter-backends", Endpoints: []*configv1.Endpoint{{Address: endpoint}}}},
		GrpcServices: []*configv1.GrpcService{
			{Name: "greeter", Cluster: "greeter-backends", Agents: map[string]string{"app": "shop"}},
		},
	}}}
}

// TestProxylessGRPC runs grpc-go's own xDS resolver against the server: a
// client dialling xds:///greeter reaches the service's endpoint, and moves
// to the new endpoint when the config changes.
func TestProxylessGRPC(t *testing.T) {
	b1, b2 := startBackend(t, "backend-1"), startBackend(t, "backend-2")
	s, conn := startServer(t)
	if err := s.SetVersion(1, greeterFiles(b1)); err != nil {
		t.Fatal(err)
	}
	bootstrap := fmt.Sprintf(`{
		"xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
		"node": {"id": "shop-client-1", "metadata": {"labels": {"app": "shop"}}}
	}`, conn.Target())
	resolver, err := xds.NewXDSResolverWithConfigForTesting([]byte(bootstrap))
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("xds:///greeter", grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(resolver))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	client := testgrpc.NewTestServiceClient(cc)

	// reaches waits until calls are answered by backend want.
	reaches := func(want string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		var last string
		var lastErr error
		for time.Now().Before(deadline) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			resp, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{})
			cancel()
			if err == nil && resp.GetHostname() == want {
				return
			}
			last, lastErr = resp.GetHostname(), err
			time.Sleep(20 * time.Millisecond) // poll interval between calls
		}
		t.Fatalf("calls never reached %s: last answer %q, error %v", want, last, lastErr)
	}
	reaches("backend-1")

	agents := s.Agents(map[string]string{"app": "shop"})
	if len(agents) != 1 || agents[0].GetNodeId() != "shop-client-1" {
		t.Fatalf("fleet lists %v, want the gRPC client", agents)
	}
	for _, short := range []string{"LDS", "RDS", "CDS", "EDS"} {
		waitFor(t, short+" synced", func() bool {
			st, _ := state(s, "shop-client-1", short)
			return st == adminv1.SyncState_SYNC_STATE_SYNCED
		})
	}

	if err := s.SetVersion(2, greeterFiles(b2)); err != nil {
		t.Fatal(err)
	}
	reaches("backend-2")
	waitFor(t, "EDS synced on 2", func() bool {
		for _, r := range s.Agents(nil)[0].GetResources() {
			if r.GetShort() == "EDS" {
				return r.GetAcked() == "2" && r.GetState() == adminv1.SyncState_SYNC_STATE_SYNCED
			}
		}
		return false
	})
}
