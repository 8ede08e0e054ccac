package tlsconf

import (
	"fmt"
	"slices"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// onlyFields rejects the first field of m, in declaration order, that is set and not
// allowed, and any field unknown to the agent's copy of the Envoy API. path names m.
func onlyFields(m proto.Message, path string, allowed ...protoreflect.Name) error {
	rm := m.ProtoReflect()
	if !rm.IsValid() {
		return nil
	}
	var bad protoreflect.FieldDescriptor
	rm.Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		if !slices.Contains(allowed, fd.Name()) && (bad == nil || fd.Index() < bad.Index()) {
			bad = fd
		}
		return true
	})
	if bad != nil {
		return unsupported(join(path, string(bad.Name())))
	}
	if u := rm.GetUnknown(); len(u) > 0 {
		num, _, _ := protowire.ConsumeTag(u)
		return fmt.Errorf("%s carries field number %d, which flotilla-agent does not know (an Envoy API newer than the agent?)", orSelf(path), num)
	}
	return nil
}

// unsupported is the error for a field outside the supported subset.
func unsupported(path string) error {
	return fmt.Errorf("%s is not supported by flotilla-agent", path)
}

// join appends a field name to a path.
func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// orSelf names the message at path in an error, even at the root.
func orSelf(path string) string {
	if path == "" {
		return "the message"
	}
	return path
}
