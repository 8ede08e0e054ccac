package accesslog

import (
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// DefaultFormat is a format string close to nginx stream's usual `log_format basic`.
const DefaultFormat = `$remote_addr [$time_local] $protocol $status $bytes_sent $bytes_received ` +
	`$session_time "$upstream_addr" "$ssl_preread_server_name"`

// variable is one field of an Entry as it is printed.
type variable int

const (
	varRemoteAddr variable = iota
	varRemotePort
	varServerAddr
	varServerPort
	varProtocol
	varStatus
	varBytesSent
	varBytesReceived
	varSessionTime
	varUpstreamAddr
	varUpstreamBytesSent
	varUpstreamBytesReceived
	varUpstreamConnectTime
	varSNI
	varListener
	varCluster
	varFilterChain
	varStartTime
	varTimeLocal
	varTimeISO8601
	varMsec
	// HTTP requests.
	varRequestMethod
	varRequestURI
	varServerProtocol
	varRequest
	varBodyBytesSent
	varHTTPReferer
	varHTTPUserAgent
	varHTTPXForwardedFor
	varHost
	varRequestTime
	varUpstreamResponseTime
	varRoute
	varReqHeader  // $http_<name>: segment.hdr names the header
	varRespHeader // $sent_http_<name>: segment.hdr names the header
	numVariables
)

// variableNames are the names of the variables in format strings and the keys of JSON lines,
// named after nginx's stream variables where nginx has one. JSON lines carry every variable
// from varRemoteAddr to varStartTime, in this order.
var variableNames = [numVariables]string{
	varStartTime:             "start_time",
	varRemoteAddr:            "remote_addr",
	varRemotePort:            "remote_port",
	varServerAddr:            "server_addr",
	varServerPort:            "server_port",
	varProtocol:              "protocol",
	varStatus:                "status",
	varBytesSent:             "bytes_sent",
	varBytesReceived:         "bytes_received",
	varSessionTime:           "session_time",
	varUpstreamAddr:          "upstream_addr",
	varUpstreamBytesSent:     "upstream_bytes_sent",
	varUpstreamBytesReceived: "upstream_bytes_received",
	varUpstreamConnectTime:   "upstream_connect_time",
	varSNI:                   "ssl_preread_server_name",
	varListener:              "listener",
	varCluster:               "cluster",
	varFilterChain:           "filter_chain",
	varTimeLocal:             "time_local",
	varTimeISO8601:           "time_iso8601",
	varMsec:                  "msec",
	varRequestMethod:         "request_method",
	varRequestURI:            "request_uri",
	varServerProtocol:        "server_protocol",
	varRequest:               "request",
	varBodyBytesSent:         "body_bytes_sent",
	varHTTPReferer:           "http_referer",
	varHTTPUserAgent:         "http_user_agent",
	varHTTPXForwardedFor:     "http_x_forwarded_for",
	varHost:                  "host",
	varRequestTime:           "request_time",
	varUpstreamResponseTime:  "upstream_response_time",
	varRoute:                 "route",
	varReqHeader:             "http_",
	varRespHeader:            "sent_http_",
}

// CombinedFormat is what the format name "combined" stands for: nginx's combined log format
// followed by the upstream address, the upstream response time and the request time.
const CombinedFormat = `$remote_addr - - [$time_local] "$request" $status $body_bytes_sent ` +
	`"$http_referer" "$http_user_agent" $upstream_addr $upstream_response_time $request_time`

// jsonHTTPFields are the fields a JSON line of an HTTP request (Entry.Method set) carries
// after jsonFields, in order.
var jsonHTTPFields = []variable{
	varRequestMethod, varRequestURI, varHost, varHTTPReferer, varHTTPUserAgent,
	varHTTPXForwardedFor, varUpstreamResponseTime, varRoute,
}

// jsonFields are the fields of a JSON line, in order.
var jsonFields = []variable{
	varStartTime, varRemoteAddr, varRemotePort, varServerAddr, varServerPort, varProtocol,
	varStatus, varBytesSent, varBytesReceived, varSessionTime, varUpstreamAddr,
	varUpstreamBytesSent, varUpstreamBytesReceived, varUpstreamConnectTime, varSNI,
	varListener, varCluster, varFilterChain,
}

// jsonKeys holds `"key":` for each JSON field, with the separating comma, built once.
var jsonKeys = func() [numVariables]string {
	var keys [numVariables]string
	for i, v := range jsonFields {
		sep := ","
		if i == 0 {
			sep = "{"
		}
		keys[v] = sep + strconv.Quote(variableNames[v]) + ":"
	}
	for _, v := range jsonHTTPFields {
		keys[v] = "," + strconv.Quote(variableNames[v]) + ":"
	}
	return keys
}()

var variablesByName = func() map[string]variable {
	m := make(map[string]variable, numVariables)
	for v, name := range variableNames {
		if variable(v) != varReqHeader && variable(v) != varRespHeader {
			m[name] = variable(v)
		}
	}
	return m
}()

// Time layouts of nginx's $time_local and $time_iso8601, and of start_time.
const (
	layoutTimeLocal = "02/Jan/2006:15:04:05 -0700"
	layoutISO8601   = "2006-01-02T15:04:05-07:00"
	layoutStartTime = "2006-01-02T15:04:05.000Z07:00"
)

// segment is a piece of a format string: literal text, or a variable when lit is empty.
type segment struct {
	lit string
	v   variable
	hdr string // the header of varReqHeader and varRespHeader, canonical
}

// Format is a parsed log line format. It is immutable and safe for concurrent use.
//
// In format strings, the variables are those of nginx's stream module that Entry carries —
// $remote_addr, $remote_port, $server_addr, $server_port, $protocol, $status, $bytes_sent,
// $bytes_received, $session_time, $upstream_addr, $upstream_bytes_sent,
// $upstream_bytes_received, $upstream_connect_time, $ssl_preread_server_name, $time_local,
// $time_iso8601, $msec — and Flotilla's $listener, $cluster, $filter_chain and $start_time.
// HTTP requests add nginx's http variables $request_method, $request_uri, $server_protocol,
// $request ("$request_method $request_uri $server_protocol"), $body_bytes_sent, $host,
// $request_time (the same as $session_time), $upstream_response_time (to the upstream's
// response headers), $http_<name> (any request header, e.g. $http_user_agent,
// $http_x_forwarded_for), $sent_http_<name> (any response header), and Flotilla's $route.
// ${name} may be used where a name is followed by a letter, digit or underscore. Times are
// printed in Entry.Start's location; like nginx, $time_local, $time_iso8601 and $msec are the
// time the session ended (Start+Duration), $start_time is when it began. Durations are seconds
// with millisecond precision ("0.015"). A value that is absent (an empty name, an invalid
// address, no upstream) prints as "-"; strings are escaped as nginx's escape=default does (\xHH
// for '"', '\\', control and non-ASCII bytes), so a hostile SNI cannot forge lines.
//
// "json" selects JSON lines instead: one object per line with the keys start_time,
// remote_addr, remote_port, server_addr, server_port, protocol, status, bytes_sent,
// bytes_received, session_time, upstream_addr, upstream_bytes_sent, upstream_bytes_received,
// upstream_connect_time, ssl_preread_server_name, listener, cluster, filter_chain, in that order.
// Numbers are JSON numbers (durations in seconds), absent strings and addresses are "" and absent
// numbers 0, so every line has the same keys and types. Lines of HTTP requests (Entry.Method
// set) add request_method, request_uri, host, http_referer, http_user_agent,
// http_x_forwarded_for, upstream_response_time and route at the end.
//
// "combined" is CombinedFormat.
type Format struct {
	src   string
	json  bool
	segs  []segment
	envoy *envoyFormat // set by ParseEnvoyFormat; then json and segs are unused
}

// ParseFormat parses "json" (JSON lines with snake_case keys named after nginx variables) or an
// nginx-style format string with $variables. Unknown variables are errors naming the variable.
func ParseFormat(s string) (*Format, error) {
	f := &Format{src: s}
	if s == "json" {
		f.json = true
		return f, nil
	}
	if s == "combined" {
		s = CombinedFormat
	}
	if s == "" {
		return nil, fmt.Errorf("access log format: empty (use %q or a format string)", "json")
	}
	lit := 0 // start of the pending literal
	for i := 0; i < len(s); {
		if s[i] != '$' {
			i++
			continue
		}
		if lit < i {
			f.segs = append(f.segs, segment{lit: s[lit:i]})
		}
		name, end, err := scanVariable(s, i)
		if err != nil {
			return nil, err
		}
		seg, ok := lookupVariable(name)
		if !ok {
			return nil, fmt.Errorf("access log format: unknown variable $%s at offset %d", name, i)
		}
		f.segs = append(f.segs, seg)
		i, lit = end, end
	}
	if lit < len(s) {
		f.segs = append(f.segs, segment{lit: s[lit:]})
	}
	return f, nil
}

// lookupVariable resolves a variable name, including the header variables $http_<name> and
// $sent_http_<name>.
func lookupVariable(name string) (segment, bool) {
	if v, ok := variablesByName[name]; ok {
		return segment{v: v}, true
	}
	for _, v := range []variable{varRespHeader, varReqHeader} {
		if h, ok := strings.CutPrefix(name, variableNames[v]); ok && h != "" {
			return segment{v: v, hdr: http.CanonicalHeaderKey(strings.ReplaceAll(h, "_", "-"))}, true
		}
	}
	return segment{}, false
}

// scanVariable reads the variable name after the '$' at s[i], as $name or ${name}, and returns
// it with the offset just past it.
func scanVariable(s string, i int) (name string, end int, err error) {
	j := i + 1
	braced := j < len(s) && s[j] == '{'
	if braced {
		j++
	}
	k := j
	for k < len(s) && isNameByte(s[k]) {
		k++
	}
	if k == j {
		return "", 0, fmt.Errorf("access log format: '$' at offset %d is not followed by a variable name",
			i)
	}
	if braced {
		if k >= len(s) || s[k] != '}' {
			return "", 0, fmt.Errorf("access log format: missing '}' after ${%s at offset %d", s[j:k], i)
		}
		return s[j:k], k + 1, nil
	}
	return s[j:k], k, nil
}

func isNameByte(c byte) bool {
	return c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// String returns the format as it was parsed.
func (f *Format) String() string { return f.src }

// Append appends the line for e, without its trailing newline, to b and returns the extended
// slice. It allocates only when b must grow.
func (f *Format) Append(b []byte, e *Entry) []byte {
	if f.envoy != nil {
		return f.envoy.append(b, e)
	}
	if f.json {
		for _, v := range jsonFields {
			b = append(b, jsonKeys[v]...)
			b = appendJSON(b, e, v)
		}
		if e.Method != "" {
			for _, v := range jsonHTTPFields {
				b = append(b, jsonKeys[v]...)
				b = appendJSON(b, e, v)
			}
		}
		return append(b, '}')
	}
	for _, s := range f.segs {
		switch {
		case s.lit != "":
			b = append(b, s.lit...)
		case s.hdr != "":
			b = appendTextString(b, headerVar(e, s.v, s.hdr))
		default:
			b = appendText(b, e, s.v)
		}
	}
	return b
}

// headerVar returns a header of e for varReqHeader or varRespHeader.
func headerVar(e *Entry, v variable, name string) string {
	if v == varRespHeader {
		return e.ResponseHeader.Get(name)
	}
	return e.RequestHeader.Get(name)
}

// appendTextString appends s escaped, or "-" when it is empty.
func appendTextString(b []byte, s string) []byte {
	if s == "" {
		return append(b, '-')
	}
	return appendEscaped(b, s)
}

// appendText appends variable v of e as a format string prints it.
func appendText(b []byte, e *Entry, v variable) []byte {
	switch v {
	case varRemoteAddr:
		return appendAddr(b, e.Client.Addr(), "-")
	case varRemotePort:
		return appendPort(b, e.Client, "-")
	case varServerAddr:
		return appendAddr(b, e.Server.Addr(), "-")
	case varServerPort:
		return appendPort(b, e.Server, "-")
	case varUpstreamAddr:
		return appendAddrPort(b, e.Upstream, "-")
	case varUpstreamConnectTime:
		if !e.Upstream.IsValid() {
			return append(b, '-')
		}
		return appendSeconds(b, e.UpstreamConnectTime)
	case varProtocol, varSNI, varListener, varCluster, varFilterChain, varRequestMethod,
		varRequestURI, varServerProtocol, varHTTPReferer, varHTTPUserAgent, varHTTPXForwardedFor,
		varHost, varRoute:
		return appendTextString(b, stringVar(e, v))
	case varRequest:
		if e.Method == "" {
			return append(b, '-')
		}
		b = appendEscaped(b, e.Method)
		b = append(b, ' ')
		b = appendEscaped(b, e.RequestURI)
		b = append(b, ' ')
		return appendEscaped(b, e.Protocol)
	case varUpstreamResponseTime:
		if !e.Upstream.IsValid() {
			return append(b, '-')
		}
		return appendSeconds(b, e.UpstreamResponseTime)
	case varTimeLocal:
		return endTime(e).AppendFormat(b, layoutTimeLocal)
	case varTimeISO8601:
		return endTime(e).AppendFormat(b, layoutISO8601)
	case varMsec:
		return appendMsec(b, endTime(e))
	case varStartTime:
		return e.Start.AppendFormat(b, layoutStartTime)
	}
	return appendNumber(b, e, v)
}

// appendJSON appends variable v of e as a JSON value.
func appendJSON(b []byte, e *Entry, v variable) []byte {
	switch v {
	case varRemoteAddr:
		b = append(b, '"')
		return append(appendAddr(b, e.Client.Addr(), ""), '"')
	case varServerAddr:
		b = append(b, '"')
		return append(appendAddr(b, e.Server.Addr(), ""), '"')
	case varUpstreamAddr:
		b = append(b, '"')
		return append(appendAddrPort(b, e.Upstream, ""), '"')
	case varRemotePort:
		return strconv.AppendUint(b, uint64(e.Client.Port()), 10)
	case varServerPort:
		return strconv.AppendUint(b, uint64(e.Server.Port()), 10)
	case varProtocol, varSNI, varListener, varCluster, varFilterChain, varRequestMethod,
		varRequestURI, varServerProtocol, varHTTPReferer, varHTTPUserAgent, varHTTPXForwardedFor,
		varHost, varRoute:
		return appendJSONString(b, stringVar(e, v))
	case varRequest:
		return appendJSONString(b, e.Method+" "+e.RequestURI+" "+e.Protocol)
	case varStartTime:
		b = append(b, '"')
		return append(e.Start.AppendFormat(b, layoutStartTime), '"')
	}
	return appendNumber(b, e, v)
}

// appendNumber appends the numeric variables, which print the same in both forms.
func appendNumber(b []byte, e *Entry, v variable) []byte {
	switch v {
	case varStatus:
		return strconv.AppendInt(b, int64(e.Status), 10)
	case varBytesSent, varBodyBytesSent:
		return strconv.AppendInt(b, e.BytesSent, 10)
	case varBytesReceived:
		return strconv.AppendInt(b, e.BytesReceived, 10)
	case varUpstreamBytesSent:
		return strconv.AppendInt(b, e.UpstreamBytesSent, 10)
	case varUpstreamBytesReceived:
		return strconv.AppendInt(b, e.UpstreamBytesReceived, 10)
	case varSessionTime, varRequestTime:
		return appendSeconds(b, e.Duration)
	case varUpstreamConnectTime:
		return appendSeconds(b, e.UpstreamConnectTime)
	case varUpstreamResponseTime:
		return appendSeconds(b, e.UpstreamResponseTime)
	}
	panic(fmt.Sprintf("accesslog: variable %d has no printer", v))
}

func stringVar(e *Entry, v variable) string {
	switch v {
	case varProtocol:
		return e.Protocol
	case varSNI:
		return e.SNI
	case varListener:
		return e.Listener
	case varCluster:
		return e.Cluster
	case varFilterChain:
		return e.FilterChain
	case varRequestMethod:
		return e.Method
	case varRequestURI:
		return e.RequestURI
	case varServerProtocol:
		return e.Protocol
	case varHTTPReferer:
		return e.RequestHeader.Get("Referer")
	case varHTTPUserAgent:
		return e.RequestHeader.Get("User-Agent")
	case varHTTPXForwardedFor:
		return e.RequestHeader.Get("X-Forwarded-For")
	case varHost:
		return e.Host
	case varRoute:
		return e.Route
	}
	return ""
}

func endTime(e *Entry) time.Time { return e.Start.Add(e.Duration) }

// appendAddr appends an IP address, IPv4-mapped IPv6 addresses as IPv4 (what a dual-stack
// listener reports for IPv4 clients), or absent when it is invalid.
func appendAddr(b []byte, a netip.Addr, absent string) []byte {
	if !a.IsValid() {
		return append(b, absent...)
	}
	return a.Unmap().AppendTo(b)
}

func appendPort(b []byte, ap netip.AddrPort, absent string) []byte {
	if !ap.IsValid() {
		return append(b, absent...)
	}
	return strconv.AppendUint(b, uint64(ap.Port()), 10)
}

// appendAddrPort appends "ip:port" ("[ip]:port" for IPv6), or absent when ap is invalid.
func appendAddrPort(b []byte, ap netip.AddrPort, absent string) []byte {
	if !ap.IsValid() {
		return append(b, absent...)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).AppendTo(b)
}

// appendSeconds appends d in seconds with millisecond precision, as nginx prints
// $session_time: "12.345". Negative durations print as 0.
func appendSeconds(b []byte, d time.Duration) []byte {
	ms := max(d.Milliseconds(), 0)
	b = strconv.AppendInt(b, ms/1000, 10)
	frac := ms % 1000
	return append(b, '.', byte('0'+frac/100), byte('0'+frac/10%10), byte('0'+frac%10))
}

// appendMsec appends t as nginx's $msec: Unix seconds with millisecond precision.
func appendMsec(b []byte, t time.Time) []byte {
	ms := t.UnixMilli()
	b = strconv.AppendInt(b, ms/1000, 10)
	frac := ms % 1000
	return append(b, '.', byte('0'+frac/100), byte('0'+frac/10%10), byte('0'+frac%10))
}

const hexDigits = "0123456789ABCDEF"

// appendEscaped appends s with nginx's escape=default: '"', '\\', bytes below 0x20 and from
// 0x7f up as \xHH.
func appendEscaped(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '"' || c == '\\' || c < 0x20 || c >= 0x7f {
			b = append(b, '\\', 'x', hexDigits[c>>4], hexDigits[c&0xf])
			continue
		}
		b = append(b, c)
	}
	return b
}

// appendJSONString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD, so a line is
// always valid JSON whatever a client sent.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20:
				switch c {
				case '\n':
					b = append(b, '\\', 'n')
				case '\r':
					b = append(b, '\\', 'r')
				case '\t':
					b = append(b, '\\', 't')
				default:
					b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
				}
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
