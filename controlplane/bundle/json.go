package bundle

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/durationpb"

	configv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/config/v1"
)

// This file works on the generic JSON form of a file (maps, slices, strings,
// json.Number) guided by the schema's descriptors: it expands shorthands
// before protojson reads the file, and when protojson fails it finds the
// field path to blame, since protojson only gives a position in JSON the
// user never wrote.

var (
	durationName  = (&durationpb.Duration{}).ProtoReflect().Descriptor().FullName()
	endpointName  = (&configv1.Endpoint{}).ProtoReflect().Descriptor().FullName()
	pemSourceName = (&configv1.PemSource{}).ProtoReflect().Descriptor().FullName()
)

func decodeJSON(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber() // keep integers exact for protojson
	return dec.Decode(v)
}

func encodeJSON(v any) ([]byte, error) { return json.Marshal(v) }

// field finds the field a JSON key names, by JSON name or proto name as
// protojson does.
func field(md protoreflect.MessageDescriptor, key string) protoreflect.FieldDescriptor {
	if fd := md.Fields().ByJSONName(key); fd != nil {
		return fd
	}
	return md.Fields().ByTextName(key)
}

// isObject reports whether a message kind field is written as a JSON object
// (and not, like a Duration, as a string).
func isObject(fd protoreflect.FieldDescriptor) bool {
	return fd.Message() != nil && fd.Message().FullName() != durationName
}

// normalize expands shorthands in place in v, a JSON object for message md.
// Values of unexpected types are left alone for protojson to report.
func normalize(md protoreflect.MessageDescriptor, v any) {
	obj, ok := v.(map[string]any)
	if !ok {
		return
	}
	for key, val := range obj {
		fd := field(md, key)
		if fd == nil && key == "true" && field(md, "on") != nil {
			// YAML 1.1 reads the key `on` (retries: { on: [5xx] }) as true.
			delete(obj, key)
			obj["on"], key, fd = val, "on", field(md, "on")
		}
		if fd == nil || fd.IsMap() {
			continue
		}
		if fd.IsList() {
			list, ok := val.([]any)
			if !ok {
				continue
			}
			for i, e := range list {
				list[i] = normalizeValue(fd, e)
			}
			continue
		}
		if n, isNumber := val.(json.Number); isNumber && sizeFields[fd.FullName()] {
			obj[key] = n.String() // max_request_body: 1048576 is a number of bytes
			continue
		}
		obj[key] = normalizeValue(fd, val)
	}
}

// sizeFields are string fields holding a size ("10MiB") that may also be
// written as a plain number of bytes.
var sizeFields = map[protoreflect.FullName]bool{
	(&configv1.HttpListener{}).ProtoReflect().Descriptor().Fields().ByName("max_request_body").FullName(): true,
}

// normalizeValue expands one value (or list element) of field fd.
func normalizeValue(fd protoreflect.FieldDescriptor, v any) any {
	if fd.Message() == nil {
		return v
	}
	s, isString := v.(string)
	switch {
	case fd.Message().FullName() == durationName && isString:
		return durationJSON(s)
	case fd.Message().FullName() == endpointName && isString:
		return map[string]any{"address": s}
	case fd.Message().FullName() == pemSourceName && isString:
		return map[string]any{"file": s}
	}
	normalize(fd.Message(), v)
	return v
}

// durationJSON turns a Go duration ("1h30m", "250ms") into protojson's form
// ("5400s", "0.250s"). Anything else is returned unchanged.
func durationJSON(s string) string {
	d, err := time.ParseDuration(s)
	if err != nil {
		return s
	}
	sign := ""
	if d < 0 {
		sign, d = "-", -d
	}
	secs, nanos := int64(d/time.Second), int64(d%time.Second)
	if nanos == 0 {
		return fmt.Sprintf("%s%ds", sign, secs)
	}
	return fmt.Sprintf("%s%d.%09ds", sign, secs, nanos)
}

// locate finds why v, a JSON object for message md at path, fails protojson,
// and returns the deepest field path to blame with a reason.
func locate(md protoreflect.MessageDescriptor, v any, path string) (string, string) {
	obj, ok := v.(map[string]any)
	if !ok {
		return path, fmt.Sprintf("must be a mapping, got %s", describe(v))
	}
	for _, key := range sortedKeys(obj) {
		val := obj[key]
		fd := field(md, key)
		if fd == nil {
			return join(path, key), fmt.Sprintf("unknown field %q (known fields: %s)", key, knownFields(md))
		}
		sub := join(path, string(fd.Name()))
		err := tryUnmarshal(md, map[string]any{key: val})
		if err == nil {
			continue
		}
		switch {
		case fd.IsList():
			list, ok := val.([]any)
			if !ok {
				return sub, fmt.Sprintf("must be a list, got %s", describe(val))
			}
			for i, e := range list {
				if err := tryUnmarshal(md, map[string]any{key: []any{e}}); err != nil {
					return locateValue(fd, e, fmt.Sprintf("%s[%d]", sub, i), err)
				}
			}
		case fd.IsMap():
			m, ok := val.(map[string]any)
			if !ok {
				return sub, fmt.Sprintf("must be a mapping, got %s", describe(val))
			}
			for _, k := range sortedKeys(m) {
				if err := tryUnmarshal(md, map[string]any{key: map[string]any{k: m[k]}}); err != nil {
					return locateValue(fd.MapValue(), m[k], join(sub, k), err)
				}
			}
		default:
			return locateValue(fd, val, sub, err)
		}
		return sub, mismatch(kindName(fd), val, err)
	}
	return path, "invalid value"
}

// locateValue blames a single value of field fd (a list element, a map value
// or a singular field) that failed with err, descending into objects.
func locateValue(fd protoreflect.FieldDescriptor, v any, path string, err error) (string, string) {
	if isObject(fd) {
		if _, ok := v.(map[string]any); ok {
			return locate(fd.Message(), v, path)
		}
		return path, fmt.Sprintf("must be a mapping, got %s", describe(v))
	}
	return path, mismatch(kindName(fd), v, err)
}

// mismatch explains that value v does not fit type want, falling back on
// protojson's err for types without a plainer explanation.
func mismatch(want string, v any, err error) string {
	switch want {
	case "string":
		if _, isString := v.(string); !isString {
			return fmt.Sprintf("must be a string, got %s (in YAML, quote values such as yes, no, on, off and numbers)", describe(v))
		}
	case string(durationName):
		return fmt.Sprintf("must be a duration such as \"30s\", \"1m30s\" or \"1h\", got %s", describe(v))
	case "uint32", "uint64":
		return fmt.Sprintf("must be a whole number, got %s", describe(v))
	}
	if err != nil {
		return cleanProtoError(err)
	}
	return fmt.Sprintf("invalid value %s", describe(v))
}

// kindName names the type of a field's values: a message's full name, or a
// scalar kind ("string", "uint32").
func kindName(fd protoreflect.FieldDescriptor) string {
	if fd.Message() != nil {
		return string(fd.Message().FullName())
	}
	return fd.Kind().String()
}

var (
	protoErrorPrefix   = regexp.MustCompile(`^proto:\s*`)
	protoErrorPosition = regexp.MustCompile(`\s*\(line \d+:\d+\)`)
)

// cleanProtoError drops protojson's prefix and its position in the generated
// JSON, which would only mislead.
func cleanProtoError(err error) string {
	s := strings.ReplaceAll(err.Error(), "\u00a0", " ")
	s = protoErrorPrefix.ReplaceAllString(s, "")
	// "(line 1:2): reason" → "reason"; "syntax error (line 1:2): x" → "syntax error: x"
	return strings.TrimLeft(protoErrorPosition.ReplaceAllString(s, ""), ": ")
}

// describe quotes a JSON value for an error message.
func describe(v any) string {
	switch v := v.(type) {
	case nil:
		return "nothing"
	case string:
		return strconv.Quote(v)
	case map[string]any:
		return "a mapping"
	case []any:
		return "a list"
	}
	return fmt.Sprint(v)
}

// tryUnmarshal reads v into a fresh message of type md with protojson.
func tryUnmarshal(md protoreflect.MessageDescriptor, v any) error {
	mt, err := protoregistry.GlobalTypes.FindMessageByName(md.FullName())
	if err != nil {
		return err
	}
	js, err := encodeJSON(v)
	if err != nil {
		return err
	}
	return protojson.Unmarshal(js, mt.New().Interface())
}

func knownFields(md protoreflect.MessageDescriptor) string {
	names := make([]string, md.Fields().Len())
	for i := range names {
		names[i] = string(md.Fields().Get(i).Name())
	}
	return strings.Join(names, ", ")
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}
