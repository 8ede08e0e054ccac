package runtime

import (
	"fmt"

	"github.com/flotilla-proxy/flotilla/agent/fieldcheck"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/flotilla-proxy/flotilla/agent/accesslog"
)

// FileAccessLogName is the well-known name of the only access logger flotilla-agent runs.
const FileAccessLogName = "envoy.access_loggers.file"

// Stdout is the access log path that means the agent's standard output (the compiler's
// translation of "-" and "stdout").
const Stdout = "/dev/stdout"

var fileAccessLogTypeURL = typeURLOf(&filev3.FileAccessLog{})

// AccessLog is a compiled envoy.access_loggers.file: one line per TCP connection or UDP
// session, in Format, appended to Path. It is read-only.
type AccessLog struct {
	// Path is the file to append to; Stdout for the agent's standard output.
	Path string
	// Format renders the lines (accesslog.ParseEnvoyFormat of the log_format).
	Format *accesslog.Format
}

// parseAccessLogs checks an access_log list of a tcp_proxy or udp_proxy: at most one
// envoy.access_loggers.file, without a filter, with a log_format of text_format_source
// inline_string or json_format. It returns nil for an empty list.
func parseAccessLogs(als []*accesslogv3.AccessLog, path string) (*AccessLog, error) {
	switch len(als) {
	case 0:
		return nil, nil
	case 1:
	default:
		return nil, fmt.Errorf("%s: flotilla-agent supports one access log per filter, got %d", path, len(als))
	}
	path += "[0]"
	al := als[0]
	if err := fieldcheck.Only(al, path, "name", "typed_config"); err != nil {
		return nil, err
	}
	tc := al.GetTypedConfig()
	if tc == nil || tc.GetTypeUrl() != fileAccessLogTypeURL {
		return nil, fmt.Errorf("%s.typed_config: only %s is supported by flotilla-agent", path, FileAccessLogName)
	}
	path += ".typed_config"
	fl := &filev3.FileAccessLog{}
	if err := tc.UnmarshalTo(fl); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := fieldcheck.Only(fl, path, "path", "log_format"); err != nil {
		return nil, err
	}
	if fl.GetPath() == "" {
		return nil, fmt.Errorf("%s.path is required", path)
	}
	lf := fl.GetLogFormat()
	if lf == nil {
		return nil, fmt.Errorf("%s.log_format is required (flotilla-agent has no default access log format)", path)
	}
	path += ".log_format"
	if err := fieldcheck.Only(lf, path, "text_format_source", "json_format"); err != nil {
		return nil, err
	}
	var (
		f   *accesslog.Format
		err error
	)
	switch {
	case lf.GetTextFormatSource() != nil:
		ds := lf.GetTextFormatSource()
		if err := fieldcheck.Only(ds, path+".text_format_source", "inline_string"); err != nil {
			return nil, err
		}
		if _, ok := ds.GetSpecifier().(*corev3.DataSource_InlineString); !ok {
			return nil, fmt.Errorf("%s.text_format_source.inline_string is required", path)
		}
		if f, err = accesslog.ParseEnvoyFormat(ds.GetInlineString(), nil); err != nil {
			return nil, fmt.Errorf("%s.text_format_source: %w", path, err)
		}
	case lf.GetJsonFormat() != nil:
		m, err := jsonFormat(lf.GetJsonFormat(), path+".json_format")
		if err != nil {
			return nil, err
		}
		if f, err = accesslog.ParseEnvoyFormat("", m); err != nil {
			return nil, fmt.Errorf("%s.json_format: %w", path, err)
		}
	default:
		return nil, fmt.Errorf("%s: text_format_source or json_format is required", path)
	}
	return &AccessLog{Path: fl.GetPath(), Format: f}, nil
}

// jsonFormat flattens a json_format whose values are all strings.
func jsonFormat(s *structpb.Struct, path string) (map[string]string, error) {
	m := make(map[string]string, len(s.GetFields()))
	for k, v := range s.GetFields() {
		str, ok := v.GetKind().(*structpb.Value_StringValue)
		if !ok {
			return nil, fmt.Errorf("%s: key %q: flotilla-agent supports string values only", path, k)
		}
		m[k] = str.StringValue
	}
	return m, nil
}
