package xds

import (
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/protobuf/proto"
)

// A prepared response sent through wireCodec decodes to the message the
// plain protobuf codec would have sent.
func TestWireCodec(t *testing.T) {
	p := prepare(resource.ClusterType, "7", map[string][]byte{"b": []byte("\x0a\x01b"), "a": []byte("\x0a\x01a")})
	c := wireCodec{proto: encoding.GetCodecV2(grpcproto.Name)}
	for _, tc := range []struct {
		name string
		msg  any
	}{
		{"prepared", &wireResponse{DiscoveryResponse: &discoveryv3.DiscoveryResponse{VersionInfo: "7", Resources: p.resources, TypeUrl: resource.ClusterType, Nonce: "12"}, encoded: p.encoded}},
		{"prepared, empty nonce", &wireResponse{DiscoveryResponse: &discoveryv3.DiscoveryResponse{VersionInfo: "7", Resources: p.resources, TypeUrl: resource.ClusterType}, encoded: p.encoded}},
		{"not prepared", &wireResponse{DiscoveryResponse: &discoveryv3.DiscoveryResponse{VersionInfo: "7", Resources: p.resources, TypeUrl: resource.ClusterType, Nonce: "3"}}},
		{"plain message", &discoveryv3.DiscoveryResponse{VersionInfo: "7", Resources: p.resources, TypeUrl: resource.ClusterType, Nonce: "4"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, err := c.Marshal(tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			var got discoveryv3.DiscoveryResponse
			if err := c.Unmarshal(data, &got); err != nil {
				t.Fatal(err)
			}
			want := tc.msg
			if w, ok := want.(*wireResponse); ok {
				want = w.DiscoveryResponse
			}
			if !proto.Equal(&got, want.(*discoveryv3.DiscoveryResponse)) {
				t.Fatalf("decoded %v, want %v", &got, want)
			}
			// The plain codec sends a wireResponse as its DiscoveryResponse.
			plain, err := encoding.GetCodecV2(grpcproto.Name).Marshal(tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			var got2 discoveryv3.DiscoveryResponse
			if err := c.Unmarshal(plain, &got2); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(&got2, &got) {
				t.Fatalf("plain codec: %v, wire codec: %v", &got2, &got)
			}
		})
	}
	if p.encoded == nil {
		t.Fatal("prepare did not encode the response")
	}
}
