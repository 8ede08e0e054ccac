// Package fieldcheck is how the agent refuses what it does not implement: it
// checks which fields of an Envoy message are set against an allowlist, so a
// field that would change behaviour — including one added to Envoy's API after
// this build — is rejected with its path instead of being silently ignored.
// The messages name the field the way NACKs and docs/xds-support.md do.
package fieldcheck

import (
	"fmt"
	"slices"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Only returns an error naming the first field set in m, in declaration order,
// that is not in allowed, or the first field m carries that this build does not
// know. path names m ("" for the root).
func Only(m proto.Message, path string, allowed ...protoreflect.Name) error {
	rm := m.ProtoReflect()
	if !rm.IsValid() {
		return nil
	}
	// Range visits only the fields that are set, in no promised order: report
	// the first offender in declaration order so errors are stable.
	var bad protoreflect.FieldDescriptor
	rm.Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		if !slices.Contains(allowed, fd.Name()) && (bad == nil || fd.Index() < bad.Index()) {
			bad = fd
		}
		return true
	})
	if bad != nil {
		return Unsupported(Join(path, string(bad.Name())))
	}
	if u := rm.GetUnknown(); len(u) > 0 {
		num, _, _ := protowire.ConsumeTag(u)
		return fmt.Errorf("%s carries field number %d, which flotilla-agent does not know (an Envoy API newer than the agent?)", OrSelf(path), num)
	}
	return nil
}

// Any reports whether any field of m is set, known or not.
func Any(m proto.Message) bool {
	has := false
	m.ProtoReflect().Range(func(protoreflect.FieldDescriptor, protoreflect.Value) bool {
		has = true
		return false
	})
	return has || len(m.ProtoReflect().GetUnknown()) > 0
}

// Unsupported is the error for a field outside the supported subset.
func Unsupported(path string) error {
	return fmt.Errorf("%s is not supported by flotilla-agent", path)
}

// Join appends a field name to a path.
func Join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// OrSelf names the message at path in an error, even at the root.
func OrSelf(path string) string {
	if path == "" {
		return "resource"
	}
	return path
}
