package main

import (
	"fmt"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// lazyCodec is the load process's gRPC codec. It decodes a DiscoveryResponse
// into its version, type URL and nonce only and skips the resources: the
// simulated agents do not look at them, and on one machine the load
// processes share the cores with the control plane, so every cycle they
// spend is taken from what is measured. Everything else is plain proto.
type lazyCodec struct{}

// Name is "proto": the control plane sees an ordinary application/grpc+proto call.
func (lazyCodec) Name() string { return "proto" }

func (lazyCodec) Marshal(v any) ([]byte, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("marshal: %T is not a proto message", v)
	}
	return proto.Marshal(m)
}

func (lazyCodec) Unmarshal(data []byte, v any) error {
	r, ok := v.(*discoveryv3.DiscoveryResponse)
	if !ok {
		m, ok := v.(proto.Message)
		if !ok {
			return fmt.Errorf("unmarshal: %T is not a proto message", v)
		}
		return proto.Unmarshal(data, m)
	}
	return decodeResponseHeader(data, r)
}

// decodeResponseHeader sets r's version_info (1), type_url (4) and nonce (5)
// from data and skips every other field.
func decodeResponseHeader(data []byte, r *discoveryv3.DiscoveryResponse) error {
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return fmt.Errorf("DiscoveryResponse: %w", protowire.ParseError(n))
		}
		data = data[n:]
		if typ == protowire.BytesType && (num == 1 || num == 4 || num == 5) {
			s, n := protowire.ConsumeString(data)
			if n < 0 {
				return fmt.Errorf("DiscoveryResponse field %d: %w", num, protowire.ParseError(n))
			}
			switch num {
			case 1:
				r.VersionInfo = s
			case 4:
				r.TypeUrl = s
			case 5:
				r.Nonce = s
			}
			data = data[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, data)
		if n < 0 {
			return fmt.Errorf("DiscoveryResponse field %d: %w", num, protowire.ParseError(n))
		}
		data = data[n:]
	}
	return nil
}
