package accesslog

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Envoy access-log formats.
//
// The control plane compiles an access_log of Flotilla's schema into Envoy's
// FileAccessLog{log_format: text_format_source or json_format}, translating each nginx
// variable into an Envoy command operator (ToEnvoy); the agent parses what arrives back into a
// Format (ParseEnvoyFormat). Both directions read the one table below, so they cannot drift.
//
// The agent prints what each operator means in Envoy, which is not always what the nginx
// variable means: %DURATION% and %UPSTREAM_CONNECTION_POOL_READY_DURATION% are integer
// milliseconds (nginx's $session_time and $upstream_connect_time are seconds), the
// %START_TIME% forms are the connection's start in UTC (nginx's $time_local is its end, in local
// time). Envoy has no operator for the listener's name; Flotilla uses
// %DYNAMIC_METADATA(flotilla:listener)%, which a real Envoy prints as "-".

// envoyOp is a command operator the agent can print.
type envoyOp int

const (
	opRemoteAddr envoyOp = iota
	opRemotePort
	opRemoteAddrPort
	opLocalAddr
	opLocalPort
	opLocalAddrPort
	opProtocol
	opResponseCode
	opBytesSent
	opBytesReceived
	opDuration
	opUpstreamHost
	opUpstreamBytesSent
	opUpstreamBytesReceived
	opUpstreamConnect
	opSNI
	opStartTime
	opStartTimeLocalStyle
	opStartTimeISO8601
	opStartTimeMsec
	opListener
	opCluster
	opFilterChain
	opResponseDuration
	opRouteName
	opReq  // %REQ(NAME?ALT):N%: envoySeg.hdr, alt, maxLen
	opResp // %RESP(NAME?ALT):N%
)

// Operators of the HTTP variables that are not a single table entry.
const (
	opStrMethod     = "%REQ(:METHOD)%"
	opStrRequestURI = "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"
	opStrAuthority  = "%REQ(:AUTHORITY)%"
)

// envoyTable maps the variables of Flotilla's (nginx-style) formats to Envoy command operators
// and back. Operators without a variable are accepted from any xDS server but never emitted.
var envoyTable = []struct {
	variable string // without "$"; "" when no variable translates to the operator
	operator string // with its "%"s
	op       envoyOp
}{
	{"remote_addr", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", opRemoteAddr},
	{"remote_port", "%DOWNSTREAM_REMOTE_PORT%", opRemotePort},
	{"", "%DOWNSTREAM_REMOTE_ADDRESS%", opRemoteAddrPort},
	{"server_addr", "%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%", opLocalAddr},
	{"server_port", "%DOWNSTREAM_LOCAL_PORT%", opLocalPort},
	{"", "%DOWNSTREAM_LOCAL_ADDRESS%", opLocalAddrPort},
	{"protocol", "%PROTOCOL%", opProtocol},
	{"status", "%RESPONSE_CODE%", opResponseCode},
	{"bytes_sent", "%BYTES_SENT%", opBytesSent},
	{"bytes_received", "%BYTES_RECEIVED%", opBytesReceived},
	{"session_time", "%DURATION%", opDuration},
	{"upstream_addr", "%UPSTREAM_HOST%", opUpstreamHost},
	{"upstream_bytes_sent", "%UPSTREAM_WIRE_BYTES_SENT%", opUpstreamBytesSent},
	{"upstream_bytes_received", "%UPSTREAM_WIRE_BYTES_RECEIVED%", opUpstreamBytesReceived},
	{"upstream_connect_time", "%UPSTREAM_CONNECTION_POOL_READY_DURATION%", opUpstreamConnect},
	{"ssl_preread_server_name", "%REQUESTED_SERVER_NAME%", opSNI},
	{"start_time", "%START_TIME%", opStartTime},
	{"time_local", "%START_TIME(%d/%b/%Y:%H:%M:%S %z)%", opStartTimeLocalStyle},
	{"time_iso8601", "%START_TIME(%Y-%m-%dT%H:%M:%S%z)%", opStartTimeISO8601},
	{"msec", "%START_TIME(%s.%3f)%", opStartTimeMsec},
	{"listener", "%DYNAMIC_METADATA(flotilla:listener)%", opListener},
	{"cluster", "%UPSTREAM_CLUSTER%", opCluster},
	{"filter_chain", "%FILTER_CHAIN_NAME%", opFilterChain},
	{"request_time", "%DURATION%", opDuration},
	{"body_bytes_sent", "%BYTES_SENT%", opBytesSent},
	{"server_protocol", "%PROTOCOL%", opProtocol},
	{"upstream_response_time", "%RESPONSE_DURATION%", opResponseDuration},
	{"route", "%ROUTE_NAME%", opRouteName},
	// Header operators: parsed by scanOperator, listed here for the translation only.
	{"request_method", opStrMethod, opReq},
	{"request_uri", opStrRequestURI, opReq},
	{"host", opStrAuthority, opReq},
	{"request", opStrMethod + " " + opStrRequestURI + " %PROTOCOL%", opReq},
	{"http_referer", "%REQ(REFERER)%", opReq},
	{"http_user_agent", "%REQ(USER-AGENT)%", opReq},
	{"http_x_forwarded_for", "%REQ(X-FORWARDED-FOR)%", opReq},
}

// EnvoyOperator returns the Envoy command operator (with its "%"s) an nginx-style variable
// (with or without its "$") translates to, and whether there is one. $request translates to
// three operators with spaces between them; $http_<name> and $sent_http_<name> to
// %REQ(NAME)% and %RESP(NAME)%.
func EnvoyOperator(nginxVar string) (string, bool) {
	name := strings.TrimPrefix(nginxVar, "$")
	for _, r := range envoyTable {
		if r.variable != "" && r.variable == name {
			return r.operator, true
		}
	}
	if seg, ok := lookupVariable(name); ok && seg.hdr != "" {
		op := "REQ"
		if seg.v == varRespHeader {
			op = "RESP"
		}
		return "%" + op + "(" + strings.ToUpper(seg.hdr) + ")%", true
	}
	return "", false
}

// NginxVar returns the variable (without "$") an Envoy command operator (with its "%"s)
// translates back to, and whether there is one. Operators the agent prints but Flotilla's
// schema has no variable for (%DOWNSTREAM_REMOTE_ADDRESS%) report false.
func NginxVar(envoyOperator string) (string, bool) {
	for _, r := range envoyTable {
		if r.operator == envoyOperator && r.variable != "" {
			return r.variable, true
		}
	}
	return "", false
}

// ToEnvoy translates a format of Flotilla's schema ("json", or a string with $variables)
// into the FileAccessLog log_format the agent and Envoy accept: json non-nil for "json" (the
// JSON keys of ParseFormat("json"), each mapped to its operator), else an Envoy format string
// ending in a newline. A literal '%' cannot be expressed and is an error, like an unknown
// variable.
func ToEnvoy(format string) (text string, json map[string]string, err error) {
	return toEnvoy(format, jsonFields)
}

// ToEnvoyHTTP is ToEnvoy for the access log of an HTTP listener: "json" also carries the
// keys of HTTP requests (request_method, request_uri, host, http_referer, http_user_agent,
// http_x_forwarded_for, upstream_response_time, route).
func ToEnvoyHTTP(format string) (text string, json map[string]string, err error) {
	return toEnvoy(format, append(jsonFields[:len(jsonFields):len(jsonFields)], jsonHTTPFields...))
}

func toEnvoy(format string, fields []variable) (text string, json map[string]string, err error) {
	f, err := ParseFormat(format)
	if err != nil {
		return "", nil, err
	}
	if f.json {
		json = make(map[string]string, len(fields))
		for _, v := range fields {
			op, ok := EnvoyOperator(variableNames[v])
			if !ok {
				return "", nil, fmt.Errorf("access log format: $%s has no Envoy command operator", variableNames[v])
			}
			json[variableNames[v]] = op
		}
		return "", json, nil
	}
	var b strings.Builder
	for _, s := range f.segs {
		if s.lit != "" {
			if strings.Contains(s.lit, "%") {
				return "", nil, fmt.Errorf("access log format: a literal %% cannot be sent to Envoy in %q", format)
			}
			b.WriteString(s.lit)
			continue
		}
		name := variableNames[s.v]
		if s.hdr != "" {
			name += strings.ToLower(strings.ReplaceAll(s.hdr, "-", "_"))
		}
		op, ok := EnvoyOperator(name)
		if !ok {
			return "", nil, fmt.Errorf("access log format: $%s has no Envoy command operator", name)
		}
		b.WriteString(op)
	}
	b.WriteByte('\n')
	return b.String(), nil, nil
}

// envoyFormat is a Format parsed from Envoy's log_format.
type envoyFormat struct {
	text   []envoySeg   // text_format_source
	fields []envoyField // json_format, sorted by key; nil for text
}

// envoySeg is literal text, or an operator when lit is empty.
type envoySeg struct {
	lit string
	op  envoyOp
	// opReq and opResp: the header (canonical, or a lower-case pseudo-header such as
	// ":path"), the alternative when it is absent, and the most bytes printed (0: all).
	hdr, alt string
	maxLen   int
}

// envoyField is one key of a json_format: a single operator prints as a typed JSON value,
// anything else as a string of its text rendering.
type envoyField struct {
	key  string // `"key":` with its separator
	segs []envoySeg
}

// ParseEnvoyFormat parses an Envoy FileAccessLog log_format: either text (a
// text_format_source inline_string; one trailing newline is dropped, the Logger ends every
// line) or json (a json_format whose values are strings, keyed by JSON key), not both. An
// unknown or unsupported command operator is an error naming it.
//
// Text lines print absent values as "-" and escape strings as ParseFormat does. JSON lines
// print the keys in sorted order; a value that is exactly one numeric operator (ports,
// status, byte counts, durations) is a JSON number, other values are strings, absent values
// null, as Envoy's typed JSON does.
func ParseEnvoyFormat(text string, json map[string]string) (*Format, error) {
	switch {
	case text != "" && json != nil:
		return nil, fmt.Errorf("access log format: text and json given, want one")
	case json != nil:
		if len(json) == 0 {
			return nil, fmt.Errorf("access log format: json_format has no keys")
		}
		ef := &envoyFormat{}
		keys := make([]string, 0, len(json))
		for k := range json {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for i, k := range keys {
			segs, err := parseEnvoyText(json[k])
			if err != nil {
				return nil, fmt.Errorf("json_format key %q: %w", k, err)
			}
			sep := ","
			if i == 0 {
				sep = "{"
			}
			ef.fields = append(ef.fields, envoyField{key: sep + strconv.Quote(k) + ":", segs: segs})
		}
		return &Format{src: "json_format", envoy: ef}, nil
	}
	t := strings.TrimSuffix(text, "\n")
	if t == "" {
		return nil, fmt.Errorf("access log format: empty")
	}
	segs, err := parseEnvoyText(t)
	if err != nil {
		return nil, err
	}
	return &Format{src: text, envoy: &envoyFormat{text: segs}}, nil
}

// parseEnvoyText splits an Envoy format string into literals and operators.
func parseEnvoyText(s string) ([]envoySeg, error) {
	var segs []envoySeg
	lit := 0
	for i := 0; i < len(s); {
		if s[i] != '%' {
			i++
			continue
		}
		seg, n, err := scanOperator(s[i:])
		if err != nil {
			return nil, err
		}
		if lit < i {
			segs = append(segs, envoySeg{lit: s[lit:i]})
		}
		segs = append(segs, seg)
		i += n
		lit = i
	}
	if lit < len(s) {
		segs = append(segs, envoySeg{lit: s[lit:]})
	}
	return segs, nil
}

// scanOperator reads the operator at the start of s ("%NAME%", "%NAME(args)%" or, for REQ
// and RESP, "%NAME(args):N%") and returns it with its length.
func scanOperator(s string) (envoySeg, int, error) {
	// The operator's end: the next '%' after the name, or after the closing ')' of its
	// arguments (which may contain '%', as START_TIME's do).
	j := 1
	for j < len(s) && (s[j] == '_' || 'A' <= s[j] && s[j] <= 'Z' || '0' <= s[j] && s[j] <= '9') {
		j++
	}
	if j == 1 {
		return envoySeg{}, 0, fmt.Errorf("access log format: '%%' not followed by a command operator in %q", s)
	}
	if name := s[1:j]; (name == "REQ" || name == "RESP") && j < len(s) && s[j] == '(' {
		return scanHeaderOperator(s, name, j)
	}
	if j < len(s) && s[j] == '(' {
		k := strings.Index(s[j:], ")%")
		if k < 0 {
			return envoySeg{}, 0, fmt.Errorf("access log format: unterminated command operator %s", s)
		}
		j += k + 1
	}
	if j >= len(s) || s[j] != '%' {
		end := min(j, len(s))
		return envoySeg{}, 0, fmt.Errorf("access log format: unterminated command operator %s", s[:end])
	}
	token := s[:j+1]
	for _, r := range envoyTable {
		if r.operator == token && r.op != opReq {
			return envoySeg{op: r.op}, len(token), nil
		}
	}
	return envoySeg{}, 0, fmt.Errorf("access log format: command operator %s is not supported by flotilla-agent", token)
}

// scanHeaderOperator reads %REQ(NAME?ALT):N% or %RESP(...)% from s, whose '(' is at s[j].
func scanHeaderOperator(s, name string, j int) (envoySeg, int, error) {
	k := strings.IndexByte(s[j:], ')')
	if k < 0 {
		return envoySeg{}, 0, fmt.Errorf("access log format: unterminated command operator %s", s)
	}
	args := s[j+1 : j+k]
	end := j + k + 1
	seg := envoySeg{op: opReq}
	if name == "RESP" {
		seg.op = opResp
	}
	if end < len(s) && s[end] == ':' {
		n := end + 1
		for n < len(s) && '0' <= s[n] && s[n] <= '9' {
			n++
		}
		l, err := strconv.Atoi(s[end+1 : n])
		if err != nil || l <= 0 {
			return envoySeg{}, 0, fmt.Errorf("access log format: bad length in command operator %s", s[:min(n+1, len(s))])
		}
		seg.maxLen, end = l, n
	}
	if end >= len(s) || s[end] != '%' {
		return envoySeg{}, 0, fmt.Errorf("access log format: unterminated command operator %s", s[:min(end, len(s))])
	}
	hdr, alt, _ := strings.Cut(args, "?")
	if seg.hdr = headerName(hdr); seg.hdr == "" || strings.Contains(alt, "?") {
		return envoySeg{}, 0, fmt.Errorf("access log format: bad header name in command operator %s", s[:end+1])
	}
	if alt != "" {
		if seg.alt = headerName(alt); seg.alt == "" {
			return envoySeg{}, 0, fmt.Errorf("access log format: bad header name in command operator %s", s[:end+1])
		}
	}
	return seg, end + 1, nil
}

// headerName returns a header name of a REQ or RESP operator as Entry looks it up:
// pseudo-headers in lower case, others canonical; "" if it is not a valid name.
func headerName(h string) string {
	if h == "" {
		return ""
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c == '-' || c == '_' || c == '.' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == ':' && i == 0) {
			return ""
		}
	}
	if h[0] == ':' {
		return strings.ToLower(h)
	}
	return http.CanonicalHeaderKey(h)
}

// headerValue returns what a REQ or RESP segment prints for e, "" when absent.
func (s *envoySeg) headerValue(e *Entry) string {
	v := entryHeader(e, s.op, s.hdr)
	if v == "" && s.alt != "" {
		v = entryHeader(e, s.op, s.alt)
	}
	if s.maxLen > 0 && len(v) > s.maxLen {
		v = v[:s.maxLen]
	}
	return v
}

// entryHeader looks up one header of e; the request's pseudo-headers come from its fields.
func entryHeader(e *Entry, op envoyOp, name string) string {
	if op == opResp {
		return e.ResponseHeader.Get(name)
	}
	switch name {
	case ":method":
		return e.Method
	case ":path":
		return e.RequestURI
	case ":authority", "Host":
		return e.Host
	case ":scheme":
		return e.Scheme
	}
	if name[0] == ':' {
		return ""
	}
	return e.RequestHeader.Get(name)
}

// append writes the line for e.
func (f *envoyFormat) append(b []byte, e *Entry) []byte {
	if f.fields == nil {
		for i := range f.text {
			b = appendEnvoySeg(b, e, &f.text[i])
		}
		return b
	}
	for _, fl := range f.fields {
		b = append(b, fl.key...)
		if len(fl.segs) == 1 && fl.segs[0].lit == "" {
			if s := &fl.segs[0]; s.op == opReq || s.op == opResp {
				if v := s.headerValue(e); v != "" {
					b = appendJSONString(b, v)
				} else {
					b = append(b, "null"...)
				}
				continue
			}
			b = appendEnvoyJSON(b, e, fl.segs[0].op)
			continue
		}
		// A string made of several parts: render as text, then quote.
		start := len(b)
		for i := range fl.segs {
			b = appendEnvoySeg(b, e, &fl.segs[i])
		}
		part := string(b[start:])
		b = appendJSONString(b[:start], part)
	}
	return append(b, '}')
}

// appendEnvoySeg appends one segment of a text line.
func appendEnvoySeg(b []byte, e *Entry, s *envoySeg) []byte {
	switch {
	case s.lit != "":
		return append(b, s.lit...)
	case s.op == opReq || s.op == opResp:
		return appendTextString(b, s.headerValue(e))
	}
	return appendEnvoyText(b, e, s.op)
}

// envoyStartTime is what %START_TIME% prints: UTC with milliseconds.
const envoyStartTime = "2006-01-02T15:04:05.000Z"

// Layouts of the %START_TIME(...)% forms in the table (strftime in Envoy).
const (
	envoyLocalStyle = "02/Jan/2006:15:04:05 -0700"
	envoyISO8601    = "2006-01-02T15:04:05-0700"
)

// sameAsVariable returns the variable that prints exactly as operator op does in a text
// line; the others (durations in milliseconds, start times in UTC, address:port pairs) are
// printed here.
func sameAsVariable(op envoyOp) (variable, bool) {
	switch op {
	case opRemoteAddr:
		return varRemoteAddr, true
	case opRemotePort:
		return varRemotePort, true
	case opLocalAddr:
		return varServerAddr, true
	case opLocalPort:
		return varServerPort, true
	case opUpstreamHost:
		return varUpstreamAddr, true
	case opProtocol:
		return varProtocol, true
	case opResponseCode:
		return varStatus, true
	case opBytesSent:
		return varBytesSent, true
	case opBytesReceived:
		return varBytesReceived, true
	case opUpstreamBytesSent:
		return varUpstreamBytesSent, true
	case opUpstreamBytesReceived:
		return varUpstreamBytesReceived, true
	case opSNI:
		return varSNI, true
	case opListener:
		return varListener, true
	case opCluster:
		return varCluster, true
	case opFilterChain:
		return varFilterChain, true
	case opRouteName:
		return varRoute, true
	}
	return 0, false
}

// appendEnvoyText appends operator op of e as Envoy's text formatter prints it: "-" when
// absent.
func appendEnvoyText(b []byte, e *Entry, op envoyOp) []byte {
	if v, ok := sameAsVariable(op); ok {
		return appendText(b, e, v)
	}
	switch op {
	case opRemoteAddrPort:
		return appendAddrPort(b, e.Client, "-")
	case opLocalAddrPort:
		return appendAddrPort(b, e.Server, "-")
	case opStartTime, opStartTimeLocalStyle, opStartTimeISO8601, opStartTimeMsec:
		if e.Start.IsZero() {
			return append(b, '-')
		}
		return appendEnvoyTime(b, e.Start, op)
	case opDuration:
		return strconv.AppendInt(b, max(e.Duration.Milliseconds(), 0), 10)
	case opResponseDuration:
		if !e.Upstream.IsValid() || e.UpstreamResponseTime <= 0 {
			return append(b, '-')
		}
		return strconv.AppendInt(b, e.UpstreamResponseTime.Milliseconds(), 10)
	case opUpstreamConnect:
		if !e.Upstream.IsValid() {
			return append(b, '-')
		}
		return strconv.AppendInt(b, max(e.UpstreamConnectTime.Milliseconds(), 0), 10)
	}
	return append(b, '-')
}

// appendEnvoyJSON appends operator op of e as a typed JSON value: a number for ports,
// status, byte counts and durations, a string otherwise, null when absent.
func appendEnvoyJSON(b []byte, e *Entry, op envoyOp) []byte {
	start := len(b)
	b = appendEnvoyText(b, e, op)
	text := b[start:]
	if string(text) == "-" {
		return append(b[:start], "null"...)
	}
	switch op {
	case opRemotePort, opLocalPort, opResponseCode, opBytesSent, opBytesReceived, opDuration,
		opUpstreamBytesSent, opUpstreamBytesReceived, opUpstreamConnect, opResponseDuration:
		return b
	case opProtocol, opSNI, opListener, opCluster, opFilterChain, opRouteName:
		// The text form is escaped for text lines; JSON escapes the raw value.
		v, _ := sameAsVariable(op)
		return appendJSONString(b[:start], stringVar(e, v))
	}
	return appendJSONString(b[:start], string(text))
}

func appendEnvoyTime(b []byte, t time.Time, op envoyOp) []byte {
	t = t.UTC()
	switch op {
	case opStartTimeLocalStyle:
		return t.AppendFormat(b, envoyLocalStyle)
	case opStartTimeISO8601:
		return t.AppendFormat(b, envoyISO8601)
	case opStartTimeMsec:
		return appendMsec(b, t)
	}
	return t.AppendFormat(b, envoyStartTime)
}
