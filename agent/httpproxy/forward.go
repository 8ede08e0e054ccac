package httpproxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"sync"
	"time"

	"github.com/flotilla-proxy/flotilla/agent/httproute"
	"github.com/flotilla-proxy/flotilla/agent/upstream"
)

// reverseProxy is the Server's httputil.ReverseProxy: one per Server, every hook reading
// the request's exchange from its context.
type reverseProxy struct {
	*httputil.ReverseProxy
}

// copyBufs pools the ReverseProxy's copy buffers.
type copyBufs struct{ p sync.Pool }

func (b *copyBufs) Get() []byte  { return *(b.p.Get().(*[]byte)) }
func (b *copyBufs) Put(p []byte) { b.p.Put(&p) }

var bufferPool = &copyBufs{p: sync.Pool{New: func() any {
	b := make([]byte, 32<<10)
	return &b
}}}

func newReverseProxy(s *Server) *reverseProxy {
	return &reverseProxy{&httputil.ReverseProxy{
		Rewrite:        rewrite,
		Transport:      roundTripper{},
		ModifyResponse: modifyResponse,
		ErrorHandler:   errorHandler,
		BufferPool:     bufferPool,
		ErrorLog:       slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}}
}

func exchangeOf(r *http.Request) *exchange { return r.Context().Value(exchangeKey).(*exchange) }

// rewrite builds the upstream request: path and host rewrites, X-Forwarded-For/-Proto and
// the header mutations. The endpoint (URL host) is set by roundTripper, per attempt.
// ReverseProxy has already removed hop-by-hop and X-Forwarded-* headers from Out.
func rewrite(pr *httputil.ProxyRequest) {
	x := exchangeOf(pr.In)
	fw := x.route.Forward
	out := pr.Out
	out.URL.Scheme = x.ch.scheme
	out.URL.Host = x.wc.Name // replaced by the endpoint's address
	if x.rewritten {
		out.URL.Path, out.URL.RawPath = x.upPath, x.upRawPath
	}
	out.Host = pr.In.Host
	if fw.HostRewrite != "" {
		out.Host = fw.HostRewrite
	}
	m := x.cfg.Manager
	h := out.Header
	xff := pr.In.Header["X-Forwarded-For"]
	if !m.SkipXFFAppend {
		peer := x.peer.Addr().String()
		switch len(xff) {
		case 0:
			h["X-Forwarded-For"] = []string{peer}
		case 1:
			h["X-Forwarded-For"] = []string{xff[0] + ", " + peer}
		default:
			h["X-Forwarded-For"] = append(append([]string(nil), xff...), peer)
		}
	} else if len(xff) > 0 {
		h["X-Forwarded-For"] = xff
	}
	if xfp := pr.In.Header["X-Forwarded-Proto"]; m.XFFNumTrustedHops > 0 && len(xfp) > 0 {
		h["X-Forwarded-Proto"] = xfp
	} else {
		h["X-Forwarded-Proto"] = []string{x.entry.Scheme}
	}
	x.requestHeaders(h)
}

// roundTripper sends an upstream request to an endpoint of the exchange's cluster, and
// retries on another endpoint as the route's retry policy and the cluster's retry budget
// allow.
type roundTripper struct{}

// RoundTrip implements http.RoundTripper.
func (roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	x := exchangeOf(req)
	fw := x.route.Forward
	ch := x.ch
	policy := fw.Retry
	var (
		tried [4]netip.AddrPort
		excl  = tried[:0]
		hash  = rand.Uint64() // ring hash and Maglev without a hash policy: random, as Envoy
	)
	for attempt := 0; ; attempt++ {
		h, err := x.ucl.Pick(hash, excl)
		if err != nil {
			return nil, err
		}
		x.entry.Upstream = h.Addr()
		req.URL.Host = h.Addr().String() // "[v6]:port" for IPv6
		if fw.AutoHostRewrite {
			req.Host = req.URL.Host
		}
		treq := req
		if attempt > 0 && x.body != nil && req.Body != nil {
			// The first attempt's transport closed ReverseProxy's wrapper of the body, none
			// of which was read (canRetry): send the body itself again.
			r2 := *req
			r2.Body = x.body
			treq = &r2
		}
		var (
			tctx    context.Context
			tcancel context.CancelCauseFunc
			ttimer  *time.Timer
		)
		if policy != nil && policy.PerTryTimeout > 0 {
			tctx, tcancel = context.WithCancelCause(req.Context())
			ttimer = time.AfterFunc(policy.PerTryTimeout, func() { tcancel(errPerTryTimeout) })
			treq = treq.WithContext(tctx)
		}
		ch.stats.total.Inc()
		sent := time.Now()
		var resp *http.Response
		if ch.h1 != nil && fastPathOK(treq) {
			resp, err = ch.h1.roundTrip(treq, h.Addr())
		} else {
			resp, err = ch.transport.RoundTrip(treq)
		}
		stopTry := func() {
			if ttimer != nil {
				ttimer.Stop()
				tcancel(nil)
			}
		}
		if err == nil {
			h.Connected()
			ch.stats.time.Observe(time.Since(sent).Seconds())
			ch.stats.xx[classIndex(resp.StatusCode)].Inc()
			if x.retryStatus(policy, resp.StatusCode) && x.canRetry(policy, attempt, req, false) {
				io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
				resp.Body.Close()
				stopTry()
				h.Release()
				excl = appendTried(excl, h.Addr())
				continue
			}
			if ttimer != nil {
				ttimer.Stop()
			}
			x.gotHeaders.Store(true)
			resp.Body = &upstreamBody{rc: resp.Body, x: x, host: h, cancel: tcancel}
			return resp, nil
		}
		var ce *connectError
		connectFail := errors.As(err, &ce)
		if connectFail {
			h.ConnectFailed()
		}
		perTry := tctx != nil && context.Cause(tctx) == errPerTryTimeout
		stopTry()
		h.Release()
		if context.Cause(req.Context()) != nil {
			return nil, err // the route timed out, the stream idled or the client left
		}
		if perTry {
			ch.stats.perTryTimeout.Inc()
		}
		if x.retryError(policy, connectFail, perTry) && x.canRetry(policy, attempt, req, connectFail) {
			excl = appendTried(excl, h.Addr())
			continue
		}
		if perTry {
			return nil, errPerTryTimeout
		}
		return nil, err
	}
}

// appendTried adds an endpoint to the ones a retry avoids.
func appendTried(excl []netip.AddrPort, a netip.AddrPort) []netip.AddrPort {
	for _, t := range excl {
		if t == a {
			return excl
		}
	}
	return append(excl, a)
}

// retryStatus reports whether the policy retries a response with this status.
func (x *exchange) retryStatus(p *httproute.RetryPolicy, status int) bool {
	if p == nil {
		return false
	}
	switch {
	case status >= 500 && p.On[httproute.Retry5xx]:
		return true
	case (status == 502 || status == 503 || status == 504) && p.On[httproute.RetryGatewayError]:
		return true
	case p.On[httproute.RetryRetriableStatusCodes]:
		for _, c := range p.RetriableStatusCodes {
			if c == status {
				return true
			}
		}
	}
	return false
}

// retryError reports whether the policy retries a failed attempt: a connect failure, a
// per-try timeout, or a reset (any other failure before the response headers).
func (x *exchange) retryError(p *httproute.RetryPolicy, connectFail, perTry bool) bool {
	if p == nil {
		return false
	}
	on := p.On
	switch {
	case connectFail:
		return on[httproute.RetryConnectFailure] || on[httproute.Retry5xx] || on[httproute.RetryGatewayError]
	case perTry:
		return on[httproute.Retry5xx] || on[httproute.RetryGatewayError]
	}
	return on[httproute.RetryReset] || on[httproute.Retry5xx]
}

// canRetry reports whether one more attempt may start: retries left, a body that can be
// sent again (none, or none of it read yet by a connection that failed), time left, and
// room in the cluster's retry budget (which it then takes).
func (x *exchange) canRetry(p *httproute.RetryPolicy, attempt int, req *http.Request, connectFail bool) bool {
	if p == nil || attempt >= int(p.NumRetries) || req.Context().Err() != nil {
		return false
	}
	if req.Body != nil && req.Body != http.NoBody && !(connectFail && x.body != nil && x.body.n.Load() == 0) {
		return false
	}
	if x.upgradeReq {
		return false
	}
	// A request holds one slot of the budget from its first retry to its end: the budget
	// bounds the requests being retried at a time.
	if !x.retrying {
		if !x.ch.retryAllowed() {
			x.ch.stats.retryOverflow.Inc()
			return false
		}
		x.retrying = true
	}
	x.ch.stats.retry.Inc()
	return true
}

// upstreamBody is the upstream response body (for an upgrade, the upgraded connection):
// it marks stream activity both ways and, once closed, releases the endpoint.
type upstreamBody struct {
	rc     io.ReadCloser
	x      *exchange
	host   *upstream.Host
	cancel context.CancelCauseFunc // the per-try context, if any
	once   sync.Once
}

func (b *upstreamBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if n > 0 {
		b.x.active.Store(true)
	}
	return n, err
}

// Write sends to an upgraded connection (ReverseProxy copies the client's bytes to it).
func (b *upstreamBody) Write(p []byte) (int, error) {
	w, ok := b.rc.(io.Writer)
	if !ok {
		return 0, errors.New("upstream body is not writable")
	}
	b.x.active.Store(true)
	return w.Write(p)
}

// Close ends the upstream response. When the request body has not ended (the upstream
// answered before it took all of it, or the client stopped sending it once it had the
// response, as Go's HTTP/2 client does after a status over 299), the upstream request is
// cancelled first, as Envoy resets the upstream stream: http.Transport's HTTP/2 Close
// would otherwise wait for the request body's write, blocked on a client that sends
// nothing more and waits for the end of the response, which the handler sends when it
// returns. Net/http's server then deals with the rest of the body (HTTP/2: the stream is
// reset; HTTP/1.1: up to 256 KiB of it is discarded, or the connection closes).
func (b *upstreamBody) Close() error {
	if x := b.x; x.body != nil && !x.body.complete() && x.cancelUp != nil {
		x.cancelUp(errResponseDone)
	}
	err := b.rc.Close()
	b.once.Do(func() {
		b.host.Release()
		if b.cancel != nil {
			b.cancel(nil)
		}
	})
	return err
}

// modifyResponse applies the response header mutations and the Server header.
func modifyResponse(resp *http.Response) error {
	x := exchangeOf(resp.Request)
	x.entry.UpstreamResponseTime = time.Since(x.entry.Start)
	if resp.StatusCode == http.StatusSwitchingProtocols {
		x.w.status = http.StatusSwitchingProtocols
	}
	x.responseHeaders(resp.Header)
	x.setServer(resp.Header)
	if x.fullDuplex && resp.StatusCode != http.StatusSwitchingProtocols && !x.body.complete() {
		// The upstream answered before the whole request body. The client's
		// connection closes after this response: in full duplex, net/http's
		// server neither marks it to close after a bad body (a broken chunk)
		// nor checks the discard of the rest, and the bytes after a broken
		// chunk would be served as the next request (request smuggling).
		resp.Header.Set("Connection", "close")
	}
	return nil
}

// errorHandler answers a request that got no upstream response.
func errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	x := exchangeOf(r)
	status, body := http.StatusBadGateway, "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
	var (
		ce *connectError
		mb *http.MaxBytesError
	)
	cause := context.Cause(r.Context())
	switch {
	case errors.As(err, &mb) || x.body != nil && x.body.limit > 0 && x.body.n.Load() > x.body.limit:
		status, body = http.StatusRequestEntityTooLarge, "Payload Too Large"
	case cause == errRouteTimeout:
		x.ch.stats.timeout.Inc()
		status, body = http.StatusGatewayTimeout, "upstream request timeout"
	case cause == errStreamIdle:
		status, body = http.StatusGatewayTimeout, "stream timeout"
	case cause == errRequestTimeout:
		status, body = http.StatusRequestTimeout, "request timeout"
	case errors.Is(err, errPerTryTimeout):
		status, body = http.StatusGatewayTimeout, "upstream request timeout"
	case errors.Is(err, upstream.ErrNoHealthyUpstream), errors.Is(err, upstream.ErrOverflow):
		status, body = http.StatusServiceUnavailable, "no healthy upstream"
	case errors.As(err, &ce):
		body = "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
	case r.Context().Err() != nil:
		// The client went away: nothing to answer; logged as nginx's 499.
		x.w.status = 499
		return
	}
	x.s.log.Debug("upstream request failed", "listener", x.cfg.Listener, "cluster", x.wc.Name,
		"upstream", x.entry.Upstream.String(), "status", status, "error", err)
	x.localReply(status, body)
}
