package flotctl

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"sigs.k8s.io/yaml"
)

// jsonOptions renders messages with the field names of the .proto files, the
// same snake_case names people write in config YAML.
var jsonOptions = protojson.MarshalOptions{UseProtoNames: true}

// marshalJSON renders m as indented JSON. protojson deliberately varies its
// whitespace, so the output is compacted and re-indented to stay stable.
func marshalJSON(m proto.Message) ([]byte, error) {
	raw, err := jsonOptions.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("render %s as JSON: %w", m.ProtoReflect().Descriptor().Name(), err)
	}
	var compact, out bytes.Buffer
	if err := json.Compact(&compact, raw); err != nil {
		return nil, fmt.Errorf("render %s as JSON: %w", m.ProtoReflect().Descriptor().Name(), err)
	}
	if err := json.Indent(&out, compact.Bytes(), "", "  "); err != nil {
		return nil, fmt.Errorf("render %s as JSON: %w", m.ProtoReflect().Descriptor().Name(), err)
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

// marshalYAML renders m as YAML (via its JSON form, so the names match).
func marshalYAML(m proto.Message) ([]byte, error) {
	raw, err := jsonOptions.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("render %s as YAML: %w", m.ProtoReflect().Descriptor().Name(), err)
	}
	out, err := yaml.JSONToYAML(raw)
	if err != nil {
		return nil, fmt.Errorf("render %s as YAML: %w", m.ProtoReflect().Descriptor().Name(), err)
	}
	return out, nil
}

// writeMessage writes m to w as JSON or YAML, per format.
func writeMessage(w io.Writer, format string, m proto.Message) error {
	var out []byte
	var err error
	if format == formatYAML {
		out, err = marshalYAML(m)
	} else {
		out, err = marshalJSON(m)
	}
	if err != nil {
		return err
	}
	_, err = w.Write(out)
	return err
}

// xdsVersion shows an xDS version string: "7" becomes "v7"; anything that is
// not a plain number is shown as it is; "" (never) becomes "none".
func xdsVersion(v string) string {
	if v == "" {
		return "none"
	}
	if _, err := strconv.ParseUint(v, 10, 64); err == nil {
		return "v" + v
	}
	return v
}

// shortHash returns the first n characters of a hex hash.
func shortHash(h string, n int) string {
	if len(h) > n {
		return h[:n]
	}
	return h
}

// timestamp formats t in UTC, or "-" when unset.
func timestamp(t *timestamppb.Timestamp) string {
	if t == nil {
		return "-"
	}
	return t.AsTime().UTC().Format(time.RFC3339)
}

// age renders a duration the way kubectl's AGE column does: precise when
// short, coarser as it grows.
func age(d time.Duration) string {
	d = max(d, 0).Round(time.Second)
	s := int(d / time.Second)
	m, h, days := s/60, s/3600, s/86400
	switch {
	case d < 2*time.Minute:
		return fmt.Sprintf("%ds", s)
	case d < 10*time.Minute:
		if s%60 == 0 {
			return fmt.Sprintf("%dm", m)
		}
		return fmt.Sprintf("%dm%ds", m, s%60)
	case d < 3*time.Hour:
		return fmt.Sprintf("%dm", m)
	case d < 8*time.Hour:
		if m%60 == 0 {
			return fmt.Sprintf("%dh", h)
		}
		return fmt.Sprintf("%dh%dm", h, m%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", h)
	case d < 8*24*time.Hour:
		if h%24 == 0 {
			return fmt.Sprintf("%dd", days)
		}
		return fmt.Sprintf("%dd%dh", days, h%24)
	default:
		return fmt.Sprintf("%dd", days)
	}
}

// firstLine returns s up to its first newline.
func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// plural returns "1 file" or "2 files".
func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return strconv.Itoa(n) + " " + word + "s"
}
