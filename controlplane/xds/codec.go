package xds

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
)

// ServerOptions are the gRPC server options of the xDS port: keepalive
// (agents ping to keep their stream; streams whose peer vanished without a
// FIN are closed), a bound on streams per connection, and its codec
// (wireCodec). Without the codec a Server works the same, marshalling every
// response again for every agent.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.MaxConcurrentStreams(1000),
		// ForceServerCodecV2 is marked experimental in grpc-go, and
		// documented to be supported throughout 1.x.
		grpc.ForceServerCodecV2(wireCodec{proto: encoding.GetCodecV2(grpcproto.Name)}),
	}
}

// wireCodec is protobuf, except for responses built from a prepared type:
// those go out as the bytes encoded once for the type (version, resources,
// type URL: the same for every agent of the group) followed by the
// stream's nonce, a field of its own. Protobuf decoders take fields in any
// order. Sending a response then copies the resources into the HTTP/2
// frames and allocates nothing for them, where marshalling allocated and
// copied them once more per agent: at 10,000 agents, most of a push's
// garbage.
type wireCodec struct {
	proto encoding.CodecV2
}

// wireResponse is a response and, if encoded is set, its wire form without
// the nonce. Marshalled by another codec it is the plain DiscoveryResponse.
type wireResponse struct {
	*discoveryv3.DiscoveryResponse
	encoded []byte
}

// Marshal implements encoding.CodecV2.
func (c wireCodec) Marshal(v any) (mem.BufferSlice, error) {
	if w, ok := v.(*wireResponse); ok && w.encoded != nil {
		nonce := protowire.AppendTag(nil, 5, protowire.BytesType) // DiscoveryResponse.nonce
		nonce = protowire.AppendString(nonce, w.GetNonce())
		return mem.BufferSlice{mem.SliceBuffer(w.encoded), mem.SliceBuffer(nonce)}, nil
	}
	return c.proto.Marshal(v)
}

// Unmarshal implements encoding.CodecV2.
func (c wireCodec) Unmarshal(data mem.BufferSlice, v any) error { return c.proto.Unmarshal(data, v) }

// Name implements encoding.CodecV2.
func (c wireCodec) Name() string { return grpcproto.Name }
