package httpproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flotilla-proxy/flotilla/agent/accesslog"
	"github.com/flotilla-proxy/flotilla/agent/httproute"
	"github.com/flotilla-proxy/flotilla/agent/upstream"
)

// Causes of a request's cancellation by the proxy, read back with context.Cause.
var (
	errRouteTimeout   = errors.New("upstream request timeout")
	errPerTryTimeout  = errors.New("upstream per-try timeout")
	errStreamIdle     = errors.New("stream idle timeout")
	errRequestTimeout = errors.New("request timeout")
	errResponseDone   = errors.New("response done before the request body")
)

// exchange is one request's state, from ServeHTTP to its access log line. The reverse
// proxy's hooks find it in the request context.
type exchange struct {
	s     *Server
	cfg   *Config
	conn  *connState
	entry accesslog.Entry
	peer  netip.AddrPort // the TCP (or PROXY protocol) peer, appended to X-Forwarded-For

	vh    *httproute.VirtualHost
	route *httproute.Route
	wc    *httproute.WeightedCluster
	ch    *clusterHTTP
	ucl   *upstream.Cluster

	w    *responseWriter
	body *requestBody // nil without a request body
	// fullDuplex: an HTTP/1.x request with a body, served in full duplex (forward).
	fullDuplex bool

	cancel     context.CancelCauseFunc // ends the request (and a read of its body) with a cause
	cancelUp   context.CancelCauseFunc // ends the upstream request only (upstreamBody.Close)
	active     atomic.Bool             // a byte moved since the last stream idle check
	gotHeaders atomic.Bool             // the final upstream response headers arrived
	retrying   bool                    // holds a slot of the cluster's retry budget, given back at the end

	routeTimeout time.Duration
	routeOnce    sync.Once
	timerMu      sync.Mutex // guards timers, idleTimer and finished
	finished     bool       // the handler returned: no timer, no deadline any more
	timers       []*time.Timer
	idle         time.Duration
	idleTimer    *time.Timer
	stallTimer   *time.Timer // see stallStart
	renderBuf    []byte
	upgradeReq   bool
	rewritten    bool   // prefix_rewrite applies: upPath and upRawPath are the path to send
	upPath       string // as url.URL.Path
	upRawPath    string // as url.URL.RawPath
}

// ServeHTTP routes and serves one request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	cfg := s.cfg.Load()
	x := &exchange{s: s, cfg: cfg}
	x.conn, _ = r.Context().Value(connKey).(*connState)
	x.begin(r)
	rw := &responseWriter{ResponseWriter: w, x: x}
	x.w = rw
	defer x.end(r)

	if max := cfg.Manager.MaxRequestHeadersBytes; max > 0 && headerBytes(r) > max {
		// net/http enforces MaxHeaderBytes on the first request of a connection only.
		x.localReply(http.StatusRequestHeaderFieldsTooLarge, "")
		return
	}
	if cfg.Table == nil {
		x.localReply(http.StatusNotFound, "")
		return
	}
	target, ok := x.normalize(r)
	if !ok {
		return
	}
	vh, route := cfg.Table.Select(&httproute.Request{
		Authority: r.Host, Path: target, Method: r.Method, Scheme: x.entry.Scheme, Header: r.Header,
	})
	x.vh, x.route = vh, route
	if vh != nil && x.needsTLS(r) {
		loc := (&httproute.Redirect{Scheme: "https"}).Location(x.entry.Scheme, r.Host, r.URL.EscapedPath(), r.URL.RawQuery, "")
		rw.Header().Set("Location", loc)
		x.localReply(http.StatusMovedPermanently, "")
		return
	}
	if route == nil {
		x.localReply(http.StatusNotFound, "")
		return
	}
	x.entry.Route = route.Name
	switch {
	case route.Redirect != nil:
		x.responseHeaders(rw.Header())
		rd := route.Redirect
		rw.Header().Set("Location", rd.Location(x.entry.Scheme, r.Host, r.URL.EscapedPath(), r.URL.RawQuery, route.Match.Prefix))
		code := rd.Code
		if code == 0 {
			code = http.StatusMovedPermanently
		}
		x.localReply(code, "")
	case route.Direct != nil:
		x.responseHeaders(rw.Header())
		if len(route.Direct.Body) > 0 && rw.Header().Get("Content-Type") == "" {
			rw.Header().Set("Content-Type", "text/plain")
		}
		x.setServer(rw.Header())
		rw.Header().Set("Content-Length", strconv.Itoa(len(route.Direct.Body)))
		rw.WriteHeader(route.Direct.Status)
		if r.Method != http.MethodHead {
			rw.Write(route.Direct.Body)
		}
	case route.Forward != nil:
		x.forward(rw, r)
	default:
		x.localReply(http.StatusNotFound, "")
	}
}

// normalize applies the manager's path normalisation (normalize_path, merge_slashes,
// path_with_escaped_slashes_action) to r before it is routed: r.URL gets the normalised
// path, which is forwarded, and the target to route on (path and query) comes back.
// Without normalisation the target is r.RequestURI, as the client sent it. When the
// request was answered (400 for a rejected or undecodable path, 307 to the unescaped
// path) ok is false.
func (x *exchange) normalize(r *http.Request) (target string, ok bool) {
	m := x.cfg.Manager
	if !m.NormalizePath && !m.MergeSlashes && m.EscapedSlashes == httproute.EscapedSlashesKeep {
		return r.RequestURI, true
	}
	if target = r.RequestURI; !strings.HasPrefix(target, "/") {
		if !strings.HasPrefix(r.URL.Path, "/") {
			return target, true // "*", CONNECT's authority: no path to normalise
		}
		// Absolute form (http://host/p?q): reduced to the path and query.
		target = wirePath(r.URL)
		if r.URL.ForceQuery || r.URL.RawQuery != "" {
			target += "?" + r.URL.RawQuery
		}
	}
	norm, verdict := normalizePath(target, m)
	switch verdict {
	case pathReject:
		x.localReply(http.StatusBadRequest, "Bad Request")
		return "", false
	case pathRedirect:
		x.w.Header().Set("Location", norm)
		x.localReply(http.StatusTemporaryRedirect, "")
		return "", false
	}
	if norm != target {
		p, _, _ := strings.Cut(norm, "?")
		if err := setEscapedPath(r.URL, p); err != nil {
			x.localReply(http.StatusBadRequest, "Bad Request")
			return "", false
		}
	}
	return norm, true
}

// wirePath is u's path escaped as the client sent it (url.URL keeps RawPath only when it
// differs from the default escaping of Path).
func wirePath(u *url.URL) string {
	if u.RawPath != "" {
		return u.RawPath
	}
	return u.EscapedPath()
}

// setEscapedPath sets u's path from an escaped path, which is forwarded as it is when it
// is a valid escaping (url.URL.EscapedPath).
func setEscapedPath(u *url.URL, escaped string) error {
	p, err := url.PathUnescape(escaped)
	if err != nil {
		return fmt.Errorf("path %q: %w", escaped, err)
	}
	u.Path, u.RawPath = p, escaped
	return nil
}

// begin fills what the access log knows of the request before it is routed.
func (x *exchange) begin(r *http.Request) {
	m := x.cfg.Manager
	e := &x.entry
	e.Start = time.Now()
	e.Listener = x.cfg.Listener
	e.Method = r.Method
	e.RequestURI = r.RequestURI
	e.Host = r.Host
	e.RequestHeader = r.Header
	switch {
	case r.ProtoMajor == 2:
		e.Protocol = "HTTP/2"
	default:
		e.Protocol = r.Proto
	}
	e.Scheme = "http"
	if r.TLS != nil || x.conn != nil && x.conn.TLS {
		e.Scheme = "https"
	}
	if x.conn != nil {
		x.peer, e.Server, e.FilterChain = x.conn.Client, x.conn.Server, x.conn.FilterChain
	} else if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		x.peer = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	e.Client = x.peer
	if n := m.XFFNumTrustedHops; n > 0 {
		if a, ok := trustedClient(r.Header["X-Forwarded-For"], int(n)); ok {
			e.Client = netip.AddrPortFrom(a, 0)
		}
	}
	if r.Body != nil && r.Body != http.NoBody {
		// Only the request handed to the reverse proxy reads through x.body (forward):
		// net/http's own request keeps its body, by which, after the handler, it tells
		// whether the rest of the body was discarded or the connection must close.
		x.body = &requestBody{rc: r.Body, x: x, limit: m.MaxRequestBodyBytes, length: r.ContentLength}
	}
}

// headerBytes is the size of r's request line and headers as Envoy counts them for
// max_request_headers_kb (names, values, separators).
func headerBytes(r *http.Request) int {
	n := len(r.Method) + len(r.RequestURI) + len(r.Host) + 16
	for k, vs := range r.Header {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

// trustedClient returns the address n entries from the right of X-Forwarded-For (Envoy's
// xff_num_trusted_hops with use_remote_address), if the header has that many.
func trustedClient(values []string, n int) (netip.Addr, bool) {
	for i := len(values) - 1; i >= 0; i-- {
		v := values[i]
		for {
			j := strings.LastIndexByte(v, ',')
			part := strings.TrimSpace(v[j+1:])
			if part != "" {
				n--
				if n == 0 {
					a, err := netip.ParseAddr(part)
					if err != nil {
						// An address with a port, as some proxies write it.
						ap, err2 := netip.ParseAddrPort(part)
						if err2 != nil {
							return netip.Addr{}, false
						}
						a = ap.Addr()
					}
					return a.Unmap(), true
				}
			}
			if j < 0 {
				break
			}
			v = v[:j]
		}
	}
	return netip.Addr{}, false
}

// needsTLS reports whether the virtual host's require_tls redirects the request.
func (x *exchange) needsTLS(r *http.Request) bool {
	switch x.vh.RequireTLS {
	case httproute.TLSAll:
		return x.entry.Scheme != "https"
	case httproute.TLSExternalOnly:
		return x.entry.Scheme != "https" && r.Header.Get("X-Forwarded-Proto") != "https"
	}
	return false
}

// forward proxies the request to the route's cluster.
func (x *exchange) forward(rw *responseWriter, r *http.Request) {
	fw := x.route.Forward
	m := x.cfg.Manager
	x.wc = fw.PickCluster(rand.Uint32())
	if x.wc == nil {
		x.localReply(http.StatusServiceUnavailable, "no healthy upstream")
		return
	}
	x.entry.Cluster = x.wc.Name
	x.ch = x.s.ups.cluster(x.wc.Name)
	x.ucl = x.s.ups.reg.Cluster(x.wc.Name)
	if x.ch == nil || x.ucl == nil {
		x.localReply(http.StatusServiceUnavailable, "no healthy upstream")
		return
	}
	if isUpgrade(r) {
		typ := strings.ToLower(r.Header.Get("Upgrade"))
		if typ == "h2c" {
			// An HTTP/1.1 upgrade to h2c (curl --http2 on http://): served as the plain
			// HTTP/1.1 request it also is, as Envoy does.
			delete(r.Header, "Upgrade")
			delete(r.Header, "Http2-Settings")
		}
	}
	if isUpgrade(r) {
		typ := strings.ToLower(r.Header.Get("Upgrade"))
		enabled := m.Upgrades[typ]
		if v, ok := fw.Upgrades[typ]; ok {
			enabled = v
		}
		if !enabled {
			x.localReply(http.StatusForbidden, "upgrade not allowed")
			return
		}
		x.upgradeReq = true
	}
	if fw.PrefixRewrite != "" {
		// Built as an escaped path, never parsed as a URL reference: "//x" is a path, not
		// an authority. A rewrite that leaves no valid path is an error, never skipped.
		p := x.route.RewritePath(wirePath(r.URL))
		if !strings.HasPrefix(p, "/") {
			p = "/" + p
		}
		var u url.URL
		if err := setEscapedPath(&u, p); err != nil {
			x.s.log.Error("route prefix_rewrite gives an invalid path", "listener", x.cfg.Listener,
				"route", x.route.Name, "prefix_rewrite", fw.PrefixRewrite, "error", err)
			x.localReply(http.StatusInternalServerError, "invalid path rewrite")
			return
		}
		x.rewritten, x.upPath, x.upRawPath = true, u.Path, u.RawPath
	}
	if lim := m.MaxRequestBodyBytes; lim > 0 && r.ContentLength > lim {
		x.localReply(http.StatusRequestEntityTooLarge, "Payload Too Large")
		return
	}

	ctx, cancelCtx := context.WithCancelCause(r.Context())
	defer cancelCtx(nil)
	cancel := func(cause error) {
		cancelCtx(cause)
		x.abortBody()
	}
	x.cancel, x.cancelUp = cancel, cancelCtx
	x.routeTimeout = fw.Timeout
	if x.body == nil {
		x.armRouteTimeout()
	}
	if t := m.RequestTimeout; t > 0 && x.body != nil {
		x.after(t, func() {
			if !x.body.done.Load() {
				cancel(errRequestTimeout)
			}
		})
	}
	x.idle = m.StreamIdleTimeout
	if fw.IdleTimeoutSet {
		x.idle = fw.IdleTimeout
	}
	if x.idle > 0 {
		x.timerMu.Lock()
		x.idleTimer = time.AfterFunc(x.idle, x.checkIdle)
		x.timers = append(x.timers, x.idleTimer)
		x.timerMu.Unlock()
	}
	if x.body != nil && r.ProtoMajor == 1 {
		// A proxy reads the request body while it writes the response: an upstream may
		// answer before it has read the body (a 413, a 401, an early 200), and the
		// transport goes on sending the body as the response streams back. Half duplex,
		// net/http's HTTP/1.1 server would read the rest of the body (up to 256 KiB) itself
		// when the response headers go out, taking bytes from under the transport, which
		// then fails the body and cuts the response. Once the handler returns, net/http
		// discards what is left of the body (up to 256 KiB, else it closes the
		// connection), so the next request on the connection starts where it should.
		http.NewResponseController(rw).EnableFullDuplex()
		x.fullDuplex = true
	}
	x.ch.requestStarted()
	defer x.ch.requestDone()
	out := r.WithContext(context.WithValue(ctx, exchangeKey, x))
	if x.body != nil {
		out.Body = x.body
	}
	x.s.proxy.ServeHTTP(rw, out)
}

// armRouteTimeout starts the route timeout, once: when the request is complete (at once
// without a body, else when the body ends), as Envoy's timeout starts at the end of the
// downstream request. It ends the request with a 504 unless the response headers came first.
func (x *exchange) armRouteTimeout() {
	if x.routeTimeout <= 0 || x.cancel == nil {
		return
	}
	x.routeOnce.Do(func() {
		x.after(x.routeTimeout, func() {
			if !x.gotHeaders.Load() {
				x.cancel(errRouteTimeout)
			}
		})
	})
}

// stallStart starts (again) the route timeout's bound on the upstream taking the request
// body: the route timeout proper starts only when the body is complete, which an upstream
// that stops reading it (a hung one, with socket buffers full) would put off for ever.
// From each body read until the next one the transport is writing to the upstream; if
// that takes a whole route timeout before the response headers came, the request ends
// with a 504 as a route timeout would. Time spent waiting for the client does not count
// (request_timeout and the stream idle timeout bound that).
func (x *exchange) stallStart() {
	if x.routeTimeout <= 0 || x.cancel == nil {
		return
	}
	x.timerMu.Lock()
	defer x.timerMu.Unlock()
	switch {
	case x.finished:
	case x.stallTimer == nil:
		x.stallTimer = time.AfterFunc(x.routeTimeout, func() {
			if !x.gotHeaders.Load() {
				x.cancel(errRouteTimeout)
			}
		})
		x.timers = append(x.timers, x.stallTimer)
	default:
		x.stallTimer.Reset(x.routeTimeout)
	}
}

// stallStop stops stallStart's bound while the transport waits for the client.
func (x *exchange) stallStop() {
	if x.routeTimeout <= 0 {
		return
	}
	x.timerMu.Lock()
	if x.stallTimer != nil {
		x.stallTimer.Stop()
	}
	x.timerMu.Unlock()
}

// after runs f after d unless the request ends first.
func (x *exchange) after(d time.Duration, f func()) {
	x.timerMu.Lock()
	if !x.finished {
		x.timers = append(x.timers, time.AfterFunc(d, f))
	}
	x.timerMu.Unlock()
}

// checkIdle is the stream idle timer: it cancels the request when no byte moved either way
// since the last check (so a stream is reset after between one and two idle timeouts).
func (x *exchange) checkIdle() {
	if x.active.Swap(false) {
		x.timerMu.Lock()
		if x.idleTimer != nil {
			x.idleTimer.Reset(x.idle)
		}
		x.timerMu.Unlock()
		return
	}
	x.cancel(errStreamIdle)
	// A handler blocked writing to a client that stopped reading sees no
	// cancellation: end its write too. Under timerMu, which end takes before
	// the handler returns, so the writer is still this request's.
	x.timerMu.Lock()
	if x.idleTimer != nil {
		_ = http.NewResponseController(x.w).SetWriteDeadline(time.Now())
	}
	x.timerMu.Unlock()
}

// isUpgrade reports whether r asks for a protocol upgrade (HTTP/1.1 Connection: Upgrade).
func isUpgrade(r *http.Request) bool {
	if r.ProtoMajor != 1 || r.Header.Get("Upgrade") == "" {
		return false
	}
	for _, v := range r.Header["Connection"] {
		for tok := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "upgrade") {
				return true
			}
		}
	}
	return false
}

// localReply answers the request from the proxy: status, and body as text/plain.
func (x *exchange) localReply(status int, body string) {
	h := x.w.Header()
	x.setServer(h)
	if body != "" {
		h.Set("Content-Type", "text/plain")
		body += "\n"
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if x.body != nil && !x.body.done.Load() {
		// The rest of the body is not wanted: close the connection after the reply rather
		// than read what is left.
		x.abortBody()
		if x.entry.Protocol != "HTTP/2" {
			h.Set("Connection", "close")
		}
	}
	x.w.WriteHeader(status)
	if body != "" && x.entry.Method != http.MethodHead {
		io.WriteString(x.w, body)
	}
}

// abortBody ends a read of the request body blocked on a slow client. The transport's
// goroutine may be in one, and until it returns the transport does not give up the request
// and net/http cannot answer (it takes the body's lock before it writes the response).
func (x *exchange) abortBody() {
	if x.body == nil || x.body.done.Load() {
		return
	}
	x.timerMu.Lock()
	defer x.timerMu.Unlock()
	if !x.finished {
		// Never once the handler has returned: the deadline would hit the connection's
		// next request.
		http.NewResponseController(x.w.ResponseWriter).SetReadDeadline(time.Now())
	}
}

// setServer sets the Server header as server_name says.
func (x *exchange) setServer(h http.Header) {
	m := x.cfg.Manager
	if m.ServerHeaderPassThrough && h.Get("Server") != "" {
		return
	}
	name := m.ServerName
	if name == "" {
		name = "flotilla"
	}
	h["Server"] = []string{name}
}

// requestHeaders applies the header mutations of the route, the weighted cluster, the
// virtual host and the table to an upstream request, in that order (Envoy's default: the
// table's values win).
func (x *exchange) requestHeaders(h http.Header) {
	x.mutate(h, &x.route.Headers, true)
	if x.wc != nil {
		x.mutate(h, &x.wc.Headers, true)
	}
	x.mutate(h, &x.vh.Headers, true)
	x.mutate(h, &x.cfg.Table.Headers, true)
}

// responseHeaders is requestHeaders for a response.
func (x *exchange) responseHeaders(h http.Header) {
	if x.route != nil {
		x.mutate(h, &x.route.Headers, false)
	}
	if x.wc != nil {
		x.mutate(h, &x.wc.Headers, false)
	}
	if x.vh != nil {
		x.mutate(h, &x.vh.Headers, false)
	}
	x.mutate(h, &x.cfg.Table.Headers, false)
}

func (x *exchange) mutate(h http.Header, hm *httproute.HeaderMutations, request bool) {
	remove, add := hm.ResponseRemove, hm.ResponseAdd
	if request {
		remove, add = hm.RequestRemove, hm.RequestAdd
	}
	for _, name := range remove {
		delete(h, name)
	}
	for _, hv := range add {
		v := x.render(hv.Value)
		if hv.Append {
			h[hv.Name] = append(h[hv.Name], v)
		} else {
			h[hv.Name] = []string{v}
		}
	}
}

// render expands a header value's operators against the request.
func (x *exchange) render(f *accesslog.Format) string {
	if f == nil {
		return ""
	}
	x.renderBuf = f.Append(x.renderBuf[:0], &x.entry)
	return string(x.renderBuf)
}

// end finishes the request: the gzip stream, the timers, the stats and the access log line;
// an upgraded connection is done once its handler returns.
func (x *exchange) end(r *http.Request) {
	x.w.close()
	x.timerMu.Lock()
	x.finished = true
	for _, t := range x.timers {
		t.Stop()
	}
	x.idleTimer = nil
	x.timerMu.Unlock()
	if x.retrying {
		x.ch.retryDone()
	}
	e := &x.entry
	e.Duration = time.Since(e.Start)
	e.Status = x.w.status
	if e.Status == 0 {
		if r.Context().Err() != nil {
			e.Status = 499 // nginx: the client closed the request
		} else {
			e.Status = http.StatusOK
		}
	}
	e.BytesSent = x.w.n
	if x.body != nil {
		e.BytesReceived = x.body.n.Load()
	}
	e.ResponseHeader = x.w.Header()

	st := x.s.stats.Load()
	st.total.Inc()
	class := classIndex(e.Status)
	st.xx[class].Inc()
	st.time.Observe(e.Duration.Seconds())
	if x.route != nil {
		rs := x.s.metrics.route(x.cfg.Listener, x.vh.Name, x.route.Name)
		rs.xx[class].Inc()
		rs.time.Observe(e.Duration.Seconds())
	}
	if lg := x.cfg.AccessLog; lg != nil {
		lg.Log(e)
	}
	if x.conn != nil && x.conn.hijacked.Load() {
		x.conn.finish()
	}
}

// requestBody counts the request body, marks stream activity and enforces the body limit.
// Close does nothing, so that a request whose body was not read yet can be retried; net/http
// closes the real body when the handler returns.
//
// Once the body has ended, Read returns io.EOF without touching the real body: net/http's
// server closes the request body when the handler returns (and, for an HTTP/1.1 request
// not in full duplex mode, when the response headers go out), and http.Transport reads a
// Content-Length body once more after its last byte to check that nothing follows. Those
// race when the upstream answers quickly: the check would get "invalid Read on closed
// Body", and the transport would close the upstream connection in the middle of the
// response it is streaming.
type requestBody struct {
	rc     io.ReadCloser
	x      *exchange
	limit  int64
	length int64 // the request's Content-Length; -1 when unknown
	n      atomic.Int64
	done   atomic.Bool // the real body returned io.EOF
}

// complete reports whether the whole body was read: io.EOF seen, or as many bytes as
// its Content-Length (the read that would return io.EOF may not have come yet).
func (b *requestBody) complete() bool {
	return b.done.Load() || b.length >= 0 && b.n.Load() >= b.length
}

func (b *requestBody) Read(p []byte) (int, error) {
	if b.done.Load() {
		return 0, io.EOF
	}
	b.x.stallStop() // waiting for the client now, which the route timeout does not bound
	n, err := b.rc.Read(p)
	if n > 0 && err == nil {
		b.x.stallStart() // the transport now writes these bytes upstream
	}
	if n > 0 {
		b.x.active.Store(true)
		if total := b.n.Add(int64(n)); b.limit > 0 && total > b.limit {
			// Hand on only the bytes up to the limit: none beyond it reaches the upstream.
			return max(0, n-int(total-b.limit)), &http.MaxBytesError{Limit: b.limit}
		}
	}
	if err == io.EOF && !b.done.Swap(true) {
		b.x.armRouteTimeout()
	}
	return n, err
}

func (b *requestBody) Close() error { return nil }
