package main

import (
	"errors"
	"fmt"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// lazyCodec is the load process's gRPC codec. It decodes a DiscoveryResponse
// into its version, type URL and nonce only, straight from gRPC's receive
// buffers, and skips the resources without copying them: the simulated
// agents do not look at them, and on one machine the load processes share the
// cores with the control plane, so every cycle they spend is taken from what
// is measured. Everything else is plain proto.
type lazyCodec struct{}

// Name is "proto": the control plane sees an ordinary application/grpc+proto call.
func (lazyCodec) Name() string { return "proto" }

func (lazyCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("marshal: %T is not a proto message", v)
	}
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, err
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (lazyCodec) Unmarshal(data mem.BufferSlice, v any) error {
	r, ok := v.(*discoveryv3.DiscoveryResponse)
	if !ok {
		m, ok := v.(proto.Message)
		if !ok {
			return fmt.Errorf("unmarshal: %T is not a proto message", v)
		}
		buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
		defer buf.Free()
		return proto.Unmarshal(buf.ReadOnlyData(), m)
	}
	s := scanner{}
	for _, b := range data {
		s.bufs = append(s.bufs, b.ReadOnlyData())
	}
	return decodeResponseHeader(&s, r)
}

// scanner reads protobuf wire data spread over several buffers.
type scanner struct {
	bufs [][]byte
}

var errTruncated = errors.New("truncated")

func (s *scanner) empty() bool {
	for len(s.bufs) > 0 && len(s.bufs[0]) == 0 {
		s.bufs = s.bufs[1:]
	}
	return len(s.bufs) == 0
}

func (s *scanner) byte() (byte, error) {
	if s.empty() {
		return 0, errTruncated
	}
	c := s.bufs[0][0]
	s.bufs[0] = s.bufs[0][1:]
	return c, nil
}

func (s *scanner) varint() (uint64, error) {
	var v uint64
	for shift := uint(0); shift < 64; shift += 7 {
		c, err := s.byte()
		if err != nil {
			return 0, err
		}
		v |= uint64(c&0x7f) << shift
		if c < 0x80 {
			return v, nil
		}
	}
	return 0, errors.New("varint overflows")
}

// next returns the next n bytes, copied when they span buffers, or skips
// them (skip true) without copying.
func (s *scanner) next(n uint64, skip bool) ([]byte, error) {
	var out []byte
	for n > 0 {
		if s.empty() {
			return nil, errTruncated
		}
		k := min(n, uint64(len(s.bufs[0])))
		if !skip {
			out = append(out, s.bufs[0][:k]...)
		}
		s.bufs[0] = s.bufs[0][k:]
		n -= k
	}
	return out, nil
}

// decodeResponseHeader sets r's version_info (1), type_url (4) and nonce (5)
// and skips every other field.
func decodeResponseHeader(s *scanner, r *discoveryv3.DiscoveryResponse) error {
	for !s.empty() {
		tag, err := s.varint()
		if err != nil {
			return fmt.Errorf("DiscoveryResponse: %w", err)
		}
		num, typ := protowire.Number(tag>>3), protowire.Type(tag&7)
		var n uint64
		switch typ {
		case protowire.VarintType:
			_, err = s.varint()
		case protowire.Fixed32Type:
			_, err = s.next(4, true)
		case protowire.Fixed64Type:
			_, err = s.next(8, true)
		case protowire.BytesType:
			if n, err = s.varint(); err != nil {
				break
			}
			keep := num == 1 || num == 4 || num == 5
			var b []byte
			if b, err = s.next(n, !keep); err != nil || !keep {
				break
			}
			switch num {
			case 1:
				r.VersionInfo = string(b)
			case 4:
				r.TypeUrl = string(b)
			case 5:
				r.Nonce = string(b)
			}
		default:
			return fmt.Errorf("DiscoveryResponse field %d: unsupported wire type %d", num, typ)
		}
		if err != nil {
			return fmt.Errorf("DiscoveryResponse field %d: %w", num, err)
		}
	}
	return nil
}
