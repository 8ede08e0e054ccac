package fleet

import (
	"context"
	"log/slog"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
)

func testNode(id string) *corev3.Node {
	md, _ := structpb.NewStruct(map[string]any{"labels": map[string]any{"dc": "ams", "role": "edge"}})
	return &corev3.Node{Id: id, Metadata: md}
}

// event is one thing that happens on stream 1 of node "a".
type event struct {
	respond     string // send a response of this version with the next nonce
	ack, nack   string // answer the latest nonce with an ACK of this version / a NACK message
	staleAnswer bool   // answer an older nonce instead
	reconnect   bool   // close stream 1 and open stream 2
}

func TestStatus(t *testing.T) {
	tests := []struct {
		name    string
		desired string
		events  []event
		want    adminv1.SyncState
	}{
		{"nothing sent", "1", nil, adminv1.SyncState_SYNC_STATE_NOT_SENT},
		{"sent, not answered", "1", []event{{respond: "1"}}, adminv1.SyncState_SYNC_STATE_STALE},
		{"acked", "1", []event{{respond: "1"}, {ack: "1"}}, adminv1.SyncState_SYNC_STATE_SYNCED},
		{"acked, newer desired", "2", []event{{respond: "1"}, {ack: "1"}}, adminv1.SyncState_SYNC_STATE_STALE},
		{"nacked", "2", []event{{respond: "1"}, {ack: "1"}, {respond: "2"}, {nack: "bind failed"}}, adminv1.SyncState_SYNC_STATE_NACKED},
		{"nack of an old nonce is ignored", "2", []event{{respond: "1"}, {respond: "2"}, {nack: "old", staleAnswer: true}}, adminv1.SyncState_SYNC_STATE_STALE},
		{"nacked survives reconnect", "2", []event{{respond: "2"}, {nack: "bind failed"}, {reconnect: true}}, adminv1.SyncState_SYNC_STATE_NACKED},
		{"newer version acked after nack", "3", []event{{respond: "2"}, {nack: "bind failed"}, {respond: "3"}, {ack: "3"}}, adminv1.SyncState_SYNC_STATE_SYNCED},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewRegistry(Options{
				Logger:  slog.New(slog.DiscardHandler),
				Desired: func(group, typeURL string) string { return tt.desired },
			})
			ctx := context.Background()
			stream := int64(1)
			open := func() {
				_ = r.OnStreamOpen(ctx, stream, "")
				_ = r.OnStreamRequest(stream, &discoveryv3.DiscoveryRequest{Node: testNode("a"), TypeUrl: resource.ListenerType})
			}
			open()
			nonce := 0
			for _, e := range tt.events {
				switch {
				case e.reconnect:
					r.OnStreamClosed(stream, nil)
					stream++
					open()
				case e.respond != "":
					nonce++
					r.OnStreamResponse(ctx, stream, nil, &discoveryv3.DiscoveryResponse{
						TypeUrl: resource.ListenerType, VersionInfo: e.respond, Nonce: string(rune('0' + nonce)),
					})
				default:
					n := nonce
					if e.staleAnswer {
						n--
					}
					req := &discoveryv3.DiscoveryRequest{TypeUrl: resource.ListenerType, VersionInfo: e.ack, ResponseNonce: string(rune('0' + n))}
					if e.nack != "" {
						req.ErrorDetail = &statuspb.Status{Code: 3, Message: e.nack}
					}
					_ = r.OnStreamRequest(stream, req)
				}
			}
			agents := r.Agents(map[string]string{"role": "edge"})
			if len(agents) != 1 {
				t.Fatalf("%d agents, want 1", len(agents))
			}
			a := agents[0]
			if a.GetLabels()["dc"] != "ams" {
				t.Errorf("labels = %v", a.GetLabels())
			}
			var lds *adminv1.ResourceStatus
			for _, rs := range a.GetResources() {
				if rs.GetShort() == "LDS" {
					lds = rs
				}
			}
			if lds.GetState() != tt.want {
				t.Fatalf("LDS state %v (sent %q acked %q nack %v), want %v", lds.GetState(), lds.GetSent(), lds.GetAcked(), lds.GetLastNack(), tt.want)
			}
			if tt.want == adminv1.SyncState_SYNC_STATE_NACKED && lds.GetLastNack().GetMessage() == "" {
				t.Error("NACKED without the agent's message")
			}
			// Briefs says what Agents says, briefly.
			briefs := r.Briefs(map[string]string{"role": "edge"})
			if len(briefs) != 1 {
				t.Fatalf("%d briefs, want 1", len(briefs))
			}
			b := briefs[0]
			wantNack := ""
			if tt.want == adminv1.SyncState_SYNC_STATE_NACKED {
				wantNack = "LDS"
			}
			if b.NodeID != a.GetNodeId() || b.Labels["dc"] != "ams" || b.ConfigVersion != a.GetConfigVersion() ||
				b.NackType != wantNack || (wantNack != "" && b.Nack.GetMessage() != lds.GetLastNack().GetMessage()) {
				t.Fatalf("brief %+v, agent %v", b, a)
			}
		})
	}
}

func TestDisconnectForgetsAgentButNotRejection(t *testing.T) {
	r := NewRegistry(Options{Logger: slog.New(slog.DiscardHandler)})
	ctx := context.Background()
	_ = r.OnStreamOpen(ctx, 1, "")
	_ = r.OnStreamRequest(1, &discoveryv3.DiscoveryRequest{Node: testNode("a"), TypeUrl: resource.ClusterType})
	r.OnStreamResponse(ctx, 1, nil, &discoveryv3.DiscoveryResponse{TypeUrl: resource.ClusterType, VersionInfo: "5", Nonce: "1"})
	_ = r.OnStreamRequest(1, &discoveryv3.DiscoveryRequest{TypeUrl: resource.ClusterType, ResponseNonce: "1", ErrorDetail: &statuspb.Status{Message: "no"}})
	r.OnStreamClosed(1, nil)
	if n := len(r.Agents(nil)); n != 0 {
		t.Fatalf("%d agents after disconnect, want 0", n)
	}
	if !r.Rejected("a", resource.ClusterType, "5") || r.Rejected("a", resource.ClusterType, "6") {
		t.Fatal("rejection of version 5 not remembered exactly")
	}
	if GroupKey(map[string]string{"role": "edge", "dc": "ams"}) != "dc=ams,role=edge" {
		t.Fatal("group key is not canonical")
	}
}
