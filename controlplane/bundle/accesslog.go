package bundle

import (
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"

	"github.com/flotilla-proxy/flotilla/agent/accesslog"
	configv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/config/v1"
)

// AccessLog.format values and paths with a meaning of their own.
const (
	// AccessLogJSON is AccessLog.format for JSON lines, the default.
	AccessLogJSON = "json"
	// Stdout is the path the agent's standard output is written to on the
	// wire; AccessLog.path "-" and "stdout" stand for it.
	Stdout = "/dev/stdout"
)

// AccessLogPath checks an AccessLog.path and returns the path agents open:
// an absolute path as is, Stdout for "-" and "stdout".
func AccessLogPath(p string) (string, error) {
	switch {
	case p == "":
		return "", errors.New(`required: a file such as "/var/log/flotilla/access.log", or "-" for the agent's standard output`)
	case p == "-" || p == "stdout":
		return Stdout, nil
	case strings.ContainsRune(p, 0):
		return "", fmt.Errorf("%q contains a NUL byte", p)
	case !filepath.IsAbs(p):
		return "", fmt.Errorf(`%q is not an absolute path (write "-" or "stdout" for the agent's standard output)`, p)
	}
	return p, nil
}

// AccessLogFormat translates an AccessLog.format into the Envoy log_format
// agents receive: json non-nil (keys are the variable names, values Envoy
// command operators) for "json" and for "", else a text format ending in a
// newline. The translation, and the one table of nginx variables and Envoy
// operators behind it, is the agent's (accesslog.ToEnvoy), so what the
// control plane sends is what the agent parses.
func AccessLogFormat(format string) (text string, json map[string]string, err error) {
	if format == "" {
		format = AccessLogJSON
	}
	text, json, err = accesslog.ToEnvoy(format)
	if err != nil {
		return "", nil, errors.New(strings.TrimPrefix(err.Error(), "access log format: "))
	}
	return text, json, nil
}

// accessLog validates a listener's access_log.
func (v *validator) accessLog(at site, al *configv1.AccessLog) {
	if al == nil {
		return
	}
	if _, err := AccessLogPath(al.GetPath()); err != nil {
		v.add(at, "access_log.path", "%v", err)
	}
	if _, _, err := AccessLogFormat(al.GetFormat()); err != nil {
		v.add(at, "access_log.format", "%v", err)
	}
}

// placedLog is a listener's access log as an agent opens it: the file and the Envoy format
// its lines are written in.
type placedLog struct {
	at     site
	name   string
	path   string
	format string // the compiled format, comparable
	agents map[string]string
}

// placeLog records a listener's valid access log for logClashes.
func (v *validator) placeLog(at site, l *configv1.Listener) {
	al := l.GetAccessLog()
	if al == nil {
		return
	}
	path, err := AccessLogPath(al.GetPath())
	if err != nil {
		return
	}
	formatOf := AccessLogFormat
	if l.GetHttp() != nil {
		formatOf = HTTPAccessLogFormat // an HTTP listener's json has the request fields too
	}
	text, json, err := formatOf(al.GetFormat())
	if err != nil {
		return
	}
	var b strings.Builder
	b.WriteString(text)
	for _, k := range slices.Sorted(maps.Keys(json)) {
		fmt.Fprintf(&b, "\x00%s=%s", k, json[k])
	}
	v.logs = append(v.logs, placedLog{at: at, name: l.GetName(), path: path, format: b.String(), agents: l.GetAgents()})
}

// logClashes reports two listeners that can land on the same agent and write one access
// log file ("-" and "stdout" are the same) in different formats: an agent writes a file in
// one format, and would refuse the whole configuration.
func (v *validator) logClashes() {
	for j, b := range v.logs {
		for _, a := range v.logs[:j] {
			if a.path != b.path || a.format == b.format || !selectorsOverlap(a.agents, b.agents) {
				continue
			}
			v.add(b.at, "access_log", "%s is also the access log of listener %q (%s) in another format: an agent writes a file in one format; use the same format (an HTTP listener's json has more fields than a TCP one's) or another file",
				b.path, a.name, a.at)
		}
	}
}
