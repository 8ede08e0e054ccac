package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/xds"

	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
)

// TestProxylessGRPCClient: a grpc-go client with its own xDS resolver, its
// bootstrap naming the real control plane, dials xds:///greeter (a
// grpc_services entry applied with flotctl), reaches the cluster's endpoint,
// and moves to the new endpoint after `flotctl apply` changes it. An agent
// with the same labels beside it keeps running its own listener and never
// gets the gRPC client's api_listener.
func TestProxylessGRPCClient(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	g1, g2 := startGRPCBackend(t, "g1"), startGRPCBackend(t, "g2")
	app := startHTTPBackend(t, "app")
	cp := startControlPlane(t)
	ag := startAgent(t, cp, "edge-1", "app=shop")
	web := freeAddr(t)
	bundle := func(endpoint string) string {
		return fmt.Sprintf(`
listeners:
  - name: web
    address: %q
    http:
      routes: [{ match: { prefix: / }, cluster: app }]
grpc_services:
  - name: greeter
    cluster: greeter-backends
    agents: { app: shop }
clusters:
  - { name: app, endpoints: [%q] }
  - { name: greeter-backends, endpoints: [%q] }
`, web, app.addr, endpoint)
	}
	cp.apply(t, writeConfig(t, dir, "v1.yaml", bundle(g1)), "greeter on g1")
	ag.waitReady(t)

	bootstrap := fmt.Sprintf(`{
  "xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
  "node": {"id": "shop-client-1", "metadata": {"labels": {"app": "shop"}}}
}`, cp.xdsAddr)
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
	reaches := func(want string) func() error {
		return func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			resp, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("hi")}})
			if err != nil {
				return err
			}
			if got := string(resp.GetPayload().GetBody()); got != want+":hi" {
				return fmt.Errorf("answer %q, want %q", got, want+":hi")
			}
			return nil
		}
	}
	waitFor(t, convergeTimeout, "xds:///greeter to reach g1", reaches("g1"))

	// Both show in the fleet, synced; the client on the four types gRPC asks for.
	waitFor(t, convergeTimeout, "the gRPC client and the agent to be SYNCED", func() error {
		resp, err := cp.agents(t)
		if err != nil {
			return err
		}
		seen := map[string]bool{}
		for _, a := range resp.GetAgents() {
			seen[a.GetNodeId()] = true
			for _, rs := range a.GetResources() {
				if rs.GetShort() == "SDS" {
					continue
				}
				if rs.GetState() != adminv1.SyncState_SYNC_STATE_SYNCED && rs.GetState() != adminv1.SyncState_SYNC_STATE_NOT_SENT {
					return fmt.Errorf("%s %s is %s (last NACK %q)", a.GetNodeId(), rs.GetShort(), rs.GetState(), rs.GetLastNack().GetMessage())
				}
			}
		}
		if !seen["shop-client-1"] || !seen["edge-1"] {
			return fmt.Errorf("fleet lists %v, want shop-client-1 and edge-1", seen)
		}
		return nil
	})
	// The agent serves its own listener and was never sent the api_listener.
	res, err := httpGet(noRedirects(h1Transport(nil)), "http://"+web+"/", "shop.example", nil)
	if err != nil || res.seen == nil || res.seen.ID != "app" {
		t.Fatalf("the agent's own listener: %v %+v", err, res)
	}
	if _, dump, err := ag.get("/config_dump"); err != nil || strings.Contains(dump, "grpc:greeter") || strings.Contains(dump, "api_listener") {
		t.Errorf("the agent was sent the gRPC client's resources (or /config_dump failed: %v)", err)
	}

	cp.apply(t, writeConfig(t, dir, "v2.yaml", bundle(g2)), "greeter moves to g2")
	waitFor(t, convergeTimeout, "xds:///greeter to move to g2", reaches("g2"))
	if err := ag.ready(); err != nil {
		t.Errorf("the agent after the change: %v", err)
	}
}
