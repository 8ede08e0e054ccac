package fleet

import (
	"context"
	"fmt"
	"log/slog"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// BenchmarkAgents10000: listing a fleet of 10,000 agents in full (flotctl
// agents and wait) and briefly (the rollout controller, at every tick).
func BenchmarkAgents10000(b *testing.B) {
	r := NewRegistry(Options{Logger: slog.New(slog.DiscardHandler), Desired: func(group, typeURL string) string { return "1" }})
	ctx := context.Background()
	for i := range 10000 {
		id := int64(i + 1)
		_ = r.OnStreamOpen(ctx, id, "")
		for _, t := range []string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType} {
			_ = r.OnStreamRequest(id, &discoveryv3.DiscoveryRequest{Node: testNode(fmt.Sprintf("a%05d", i)), TypeUrl: t})
			r.OnStreamResponse(ctx, id, nil, &discoveryv3.DiscoveryResponse{TypeUrl: t, VersionInfo: "1", Nonce: "1"})
			_ = r.OnStreamRequest(id, &discoveryv3.DiscoveryRequest{TypeUrl: t, VersionInfo: "1", ResponseNonce: "1"})
		}
	}
	b.Run("Agents", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if n := len(r.Agents(nil)); n != 10000 {
				b.Fatalf("%d agents", n)
			}
		}
	})
	b.Run("Briefs", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if n := len(r.Briefs(nil)); n != 10000 {
				b.Fatalf("%d agents", n)
			}
		}
	})
}
