// Package httproute is the compiled form of an Envoy HTTP connection manager
// (envoy.filters.network.http_connection_manager) and of the RouteConfiguration it gets over
// RDS: virtual hosts chosen by the request's authority, routes matched on path, headers and
// method, and what each route does (forward to a cluster or weighted clusters, redirect, or
// answer directly), with header mutations, timeouts, retries and upgrades.
//
// Package runtime builds these values from Envoy v3 protos (rejecting any field outside the
// documented subset); package httpproxy serves them. Everything here is read-only after it is
// built and safe to share between goroutines. Matching (Table.Select) does not allocate on
// the common paths.
package httproute

import (
	"net/http"
	"regexp"
	"time"

	"github.com/flotilla-proxy/flotilla/agent/accesslog"
)

// Manager is a compiled http_connection_manager: how the listener speaks HTTP and which
// route table it serves. The route table itself comes over RDS and may change without the
// listener changing, so the Manager names it (RouteConfigName) and the graph resolves it.
type Manager struct {
	// StatPrefix names the manager in stats (http.<stat_prefix>.*).
	StatPrefix string
	// RouteConfigName is the RDS RouteConfiguration the manager serves (rds.route_config_name).
	RouteConfigName string
	// Codec is the downstream codec: CodecAuto (HTTP/1.1, and HTTP/2 when ALPN says h2 or the
	// client sends the HTTP/2 preface in the clear, i.e. h2c with prior knowledge),
	// CodecHTTP1 or CodecHTTP2.
	Codec Codec
	// ServerName is the Server response header the proxy sets (server_name); "" means
	// "flotilla" (Envoy: "envoy"). ServerHeaderPassThrough keeps the upstream's instead.
	ServerName              string
	ServerHeaderPassThrough bool
	// UseRemoteAddress and XFFNumTrustedHops are Envoy's use_remote_address and
	// xff_num_trusted_hops: with UseRemoteAddress, the client address is the peer address
	// (after the PROXY protocol, if any) unless XFFNumTrustedHops > 0, in which case it is
	// the address XFFNumTrustedHops entries from the right of X-Forwarded-For; the proxy
	// appends the peer address to X-Forwarded-For (unless SkipXFFAppend) and sets
	// X-Forwarded-Proto from the downstream connection (https when TLS was terminated)
	// unless the request came from a trusted hop that set it.
	UseRemoteAddress  bool
	XFFNumTrustedHops uint32
	SkipXFFAppend     bool
	// IdleTimeout closes a downstream connection with no active request for this long
	// (common_http_protocol_options.idle_timeout; Envoy default 1h; 0 disables).
	IdleTimeout time.Duration
	// RequestHeadersTimeout bounds the time from the first byte of a request to the end of
	// its headers (request_headers_timeout): slowloris protection. 0 disables.
	RequestHeadersTimeout time.Duration
	// RequestTimeout bounds the whole request, headers and body (request_timeout). 0
	// disables.
	RequestTimeout time.Duration
	// StreamIdleTimeout resets a request/response with no bytes either way for this long
	// (stream_idle_timeout, Envoy default 5m; 0 disables). A route may override it.
	StreamIdleTimeout time.Duration
	// MaxRequestHeadersBytes is max_request_headers_kb × 1024 (Envoy default 60 KiB): a
	// request whose headers are larger gets 431.
	MaxRequestHeadersBytes int
	// MaxRequestBodyBytes, when > 0, is the buffer filter's max_request_bytes: a request
	// whose body is larger gets 413 (at once when Content-Length says so; otherwise when the
	// limit is crossed). The agent streams the body instead of buffering it.
	MaxRequestBodyBytes int64
	// NormalizePath (normalize_path) normalises the request path before routing and
	// forwards the normalised path, as nginx does before `location` matching: percent-
	// escapes of unreserved characters are decoded, "." and ".." segments removed (RFC 3986
	// remove_dot_segments; a ".." above the root is dropped). MergeSlashes (merge_slashes)
	// also collapses runs of "/" into one.
	NormalizePath bool
	MergeSlashes  bool
	// EscapedSlashes is path_with_escaped_slashes_action: what a path containing %2F or
	// %5C (either case) gets. EscapedSlashesKeep leaves it as it is.
	EscapedSlashes EscapedSlashesAction
	// Upgrades lists the upgrade types (lower case, e.g. "websocket") enabled for every
	// route (upgrade_configs); a route may enable or disable one for itself.
	Upgrades map[string]bool
	// Compression, when not nil, gzips responses (envoy.filters.http.compressor with the
	// gzip library).
	Compression *Compression
	// AccessLog, when not nil, gets one line per request.
	AccessLog *AccessLog
}

// EscapedSlashesAction is an http_connection_manager's path_with_escaped_slashes_action.
type EscapedSlashesAction int

// The path_with_escaped_slashes_action values the agent honours
// (IMPLEMENTATION_SPECIFIC_DEFAULT is Keep, as in Envoy).
const (
	// EscapedSlashesKeep forwards the path as it is.
	EscapedSlashesKeep EscapedSlashesAction = iota
	// EscapedSlashesReject answers 400.
	EscapedSlashesReject
	// EscapedSlashesUnescapeAndForward decodes %2F to "/" and %5C to "\" before
	// normalisation and routing, and forwards the result.
	EscapedSlashesUnescapeAndForward
	// EscapedSlashesUnescapeAndRedirect answers a redirect to the unescaped path.
	EscapedSlashesUnescapeAndRedirect
)

// Codec is a downstream codec_type.
type Codec int

// The codecs of http_connection_manager.codec_type.
const (
	CodecAuto Codec = iota
	CodecHTTP1
	CodecHTTP2
)

// Compression is the compressor filter's gzip setup.
type Compression struct {
	// ContentTypes are the response media types compressed (without parameters, lower
	// case); empty means Envoy's default list (text/html, text/plain, text/css,
	// application/javascript, application/json, application/xml, image/svg+xml, …).
	ContentTypes []string
	// MinContentLength: responses with a known Content-Length below this are not
	// compressed (Envoy default 30).
	MinContentLength int
	// Level is the gzip level, 1–9 (default: compress/gzip.DefaultCompression).
	Level int
}

// AccessLog is one envoy.access_loggers.file of an HTTP connection manager.
type AccessLog struct {
	Path   string
	Format *accesslog.Format
}

// Table is a compiled RouteConfiguration.
type Table struct {
	// Name is the RouteConfiguration's name.
	Name string
	// VirtualHosts in configuration order. Select picks one by the request's authority with
	// Envoy's rules: exact domain, then the longest "*." suffix wildcard, then the longest
	// "prefix*" wildcard, then "*".
	VirtualHosts []*VirtualHost
	// Header mutations of the whole table, applied after the virtual host's and route's.
	Headers HeaderMutations
	// IgnorePort matches virtual hosts on the authority without its port even when a
	// domain names one (ignore_port_in_host_matching); such a domain then never matches.
	IgnorePort bool

	index *domainIndex // built by Index; nil means Select scans
}

// VirtualHost is one virtual_hosts entry.
type VirtualHost struct {
	Name    string
	Domains []string
	// RequireTLS: TLSNone, TLSExternalOnly or TLSAll (require_tls): a request over plain
	// HTTP is answered with a 301 to https:// (External only: when X-Forwarded-Proto does
	// not already say https).
	RequireTLS RequireTLS
	// Routes in order; the first that matches wins.
	Routes  []*Route
	Headers HeaderMutations
}

// RequireTLS is a virtual host's require_tls.
type RequireTLS int

// The values of virtual_host.require_tls.
const (
	TLSNone RequireTLS = iota
	TLSExternalOnly
	TLSAll
)

// Route is one route: a match and an action (exactly one of Forward, Redirect, Direct).
type Route struct {
	Name     string
	Match    Match
	Forward  *Forward
	Redirect *Redirect
	Direct   *Direct
	Headers  HeaderMutations
}

// Match is a route's match: a path condition (exactly one of Prefix, Path, Regex; Prefix
// "/" matches everything), header conditions and, Envoy-style, the method as a
// ":method" header condition.
type Match struct {
	Prefix string
	Path   string
	Regex  *regexp.Regexp // matched against the whole path (without the query), anchored
	// CaseInsensitive makes Prefix and Path match without regard to case
	// (case_sensitive: false).
	CaseInsensitive bool
	Headers         []HeaderMatch
	// GRPC matches only requests with content-type application/grpc… (grpc: {}).
	GRPC bool
}

// HeaderMatch is one headers entry of a route match. Name is canonical for net/http
// (http.CanonicalHeaderKey) except the pseudo-headers ":method", ":authority", ":path" and
// ":scheme", which stay as they are.
type HeaderMatch struct {
	Name string
	// Exactly one of: Exact, Prefix, Suffix, Contains, Regex (anchored), Present.
	Exact, Prefix, Suffix, Contains string
	Regex                           *regexp.Regexp
	Present                         bool
	Kind                            HeaderMatchKind
	// Invert negates the result (invert_match).
	Invert bool
	// IgnoreCase compares Exact, Prefix, Suffix and Contains (which are then lower case)
	// without regard to ASCII case (string_match.ignore_case).
	IgnoreCase bool
	// MissingAsEmpty matches a header the request does not carry as if it were present
	// with an empty value (treat_missing_header_as_empty); otherwise a missing header fails
	// every condition but Present.
	MissingAsEmpty bool
}

// HeaderMatchKind says which field of a HeaderMatch applies.
type HeaderMatchKind int

// The kinds of header match.
const (
	HeaderExact HeaderMatchKind = iota
	HeaderPrefix
	HeaderSuffix
	HeaderContains
	HeaderRegex
	HeaderPresent
)

// Forward is a route action: proxy to a cluster.
type Forward struct {
	// Clusters to send to: one entry for route.cluster, several for weighted_clusters
	// (picked at random by Weight).
	Clusters    []WeightedCluster
	TotalWeight uint32
	// PrefixRewrite replaces the matched Prefix (or the whole Path) of the path.
	PrefixRewrite string
	// HostRewrite sets the Host header sent upstream (host_rewrite_literal);
	// AutoHostRewrite sets it to the chosen endpoint's address.
	HostRewrite     string
	AutoHostRewrite bool
	// Timeout bounds the time from the end of the downstream request to the end of the
	// upstream response headers (route timeout; Envoy default 15s, 0 disables). It also
	// bounds, before response headers, how long the upstream may take none of the request
	// body bytes the proxy has for it (a hung upstream never reading a large upload). A
	// timeout answers 504.
	Timeout time.Duration
	// IdleTimeout overrides the manager's StreamIdleTimeout for this route when
	// IdleTimeoutSet (0 then disables it): long read timeouts for WebSockets and streams.
	IdleTimeout    time.Duration
	IdleTimeoutSet bool
	// Upgrades overrides the manager's Upgrades per upgrade type for this route.
	Upgrades map[string]bool
	// Retry is the route's retry policy; nil means no retries.
	Retry *RetryPolicy
}

// WeightedCluster is one cluster of a Forward, with its weight and header mutations.
type WeightedCluster struct {
	Name    string
	Weight  uint32
	Headers HeaderMutations
}

// RetryPolicy is a route's retry_policy.
type RetryPolicy struct {
	// On holds the retry_on conditions, each one of RetryConnectFailure, Retry5xx,
	// RetryGatewayError, RetryReset, RetryRetriableStatusCodes.
	On map[string]bool
	// NumRetries is how many times to retry (Envoy default 1).
	NumRetries uint32
	// PerTryTimeout bounds each attempt; 0 means the route's Timeout only.
	PerTryTimeout time.Duration
	// RetriableStatusCodes for RetryRetriableStatusCodes.
	RetriableStatusCodes []int
}

// The retry_on conditions the agent honours.
const (
	RetryConnectFailure       = "connect-failure"
	Retry5xx                  = "5xx"
	RetryGatewayError         = "gateway-error"
	RetryReset                = "reset"
	RetryRetriableStatusCodes = "retriable-status-codes"
)

// Redirect is a route action: answer with a redirect. Empty fields keep the request's
// value.
type Redirect struct {
	Scheme        string // https_redirect sets "https"
	Host          string
	Port          uint32
	Path          string // path_redirect
	PrefixRewrite string // prefix_rewrite: replaces the matched prefix
	StripQuery    bool
	Code          int // 301 (default), 302, 303, 307, 308
}

// Direct is a route action: answer with this status and body.
type Direct struct {
	Status int
	Body   []byte
}

// HeaderMutations are request_headers_to_add/remove and response_headers_to_add/remove.
// Values may contain Envoy substitution operators such as
// %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% (how X-Real-IP is set); Value.Render expands
// them.
type HeaderMutations struct {
	RequestAdd     []HeaderValue
	RequestRemove  []string
	ResponseAdd    []HeaderValue
	ResponseRemove []string
}

// HeaderValue is one header to add. Append adds a value (append_action
// APPEND_IF_EXISTS_OR_ADD); otherwise the header is overwritten (OVERWRITE_IF_EXISTS_OR_ADD).
type HeaderValue struct {
	Name   string // canonical (http.CanonicalHeaderKey)
	Value  *accesslog.Format
	Append bool
}

// compile-time use of net/http so the canonical-name contract above stays honest.
var _ = http.CanonicalHeaderKey
