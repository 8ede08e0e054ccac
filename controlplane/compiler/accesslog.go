package compiler

import (
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/flotilla-proxy/flotilla/controlplane/bundle"
	configv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/config/v1"
)

// accessLogs compiles a listener's access_log into the access_log list of
// its tcp_proxy filters or udp_proxy: one envoy.access_loggers.file, nil
// when al is nil. Format translation is bundle.AccessLogFormat's, which is
// the agent's own (accesslog.ToEnvoy).
func accessLogs(al *configv1.AccessLog) ([]*accesslogv3.AccessLog, error) {
	return fileAccessLogs(al, bundle.AccessLogFormat)
}

// httpAccessLogs compiles the access_log of an HTTP listener into the
// access_log list of its http_connection_manager: as accessLogs, with the
// HTTP variables and formats (bundle.HTTPAccessLogFormat).
func httpAccessLogs(al *configv1.AccessLog) ([]*accesslogv3.AccessLog, error) {
	return fileAccessLogs(al, bundle.HTTPAccessLogFormat)
}

// fileAccessLogs is one envoy.access_loggers.file for al with the format
// translated by toEnvoy, nil when al is nil.
func fileAccessLogs(al *configv1.AccessLog, toEnvoy func(string) (string, map[string]string, error)) ([]*accesslogv3.AccessLog, error) {
	if al == nil {
		return nil, nil
	}
	path, err := bundle.AccessLogPath(al.GetPath())
	if err != nil {
		return nil, err
	}
	text, js, err := toEnvoy(al.GetFormat())
	if err != nil {
		return nil, err
	}
	format := &corev3.SubstitutionFormatString{}
	if js != nil {
		fields := make(map[string]any, len(js))
		for k, op := range js {
			fields[k] = op
		}
		st, err := structpb.NewStruct(fields)
		if err != nil {
			return nil, err
		}
		format.Format = &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: st}
	} else {
		format.Format = &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: &corev3.DataSource{
			Specifier: &corev3.DataSource_InlineString{InlineString: text},
		}}
	}
	// Deterministic: json_format is a map, and the same bundle must compile
	// to the same bytes (resource hashes, caches).
	cfg := &anypb.Any{}
	err = anypb.MarshalFrom(cfg, &filev3.FileAccessLog{
		Path:            path,
		AccessLogFormat: &filev3.FileAccessLog_LogFormat{LogFormat: format},
	}, proto.MarshalOptions{Deterministic: true})
	if err != nil {
		return nil, err
	}
	return []*accesslogv3.AccessLog{{
		Name:       wellknown.FileAccessLog,
		ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: cfg},
	}}, nil
}
