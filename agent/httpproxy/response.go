package httpproxy

import (
	"compress/gzip"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/flotilla-proxy/flotilla/agent/httproute"
)

// responseWriter is what the handler writes the response to: it records the status and
// the body bytes for the access log, marks stream activity, and gzips the body when the
// listener compresses and the response qualifies. Hijack, deadlines and the like go to the
// net/http writer underneath (Unwrap).
type responseWriter struct {
	http.ResponseWriter
	x      *exchange
	status int
	n      int64 // body bytes written to the client (compressed, if gzipped)
	gz     *gzip.Writer
	level  int
}

// Unwrap lets http.ResponseController reach net/http's writer.
func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// WriteHeader implements http.ResponseWriter; 1xx informational headers pass through.
func (w *responseWriter) WriteHeader(code int) {
	if w.status != 0 {
		return
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		w.ResponseWriter.WriteHeader(code)
		return
	}
	w.status = code
	if c := w.x.cfg.Manager.Compression; c != nil {
		w.maybeCompress(c, code)
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write implements http.ResponseWriter.
func (w *responseWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	w.x.active.Store(true)
	if w.gz != nil {
		return w.gz.Write(b)
	}
	n, err := w.ResponseWriter.Write(b)
	w.n += int64(n)
	return n, err
}

// FlushError flushes what the gzip stream holds, then the connection.
func (w *responseWriter) FlushError() error {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.gz != nil {
		if err := w.gz.Flush(); err != nil {
			return err
		}
	}
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Flush implements http.Flusher.
func (w *responseWriter) Flush() { w.FlushError() }

// close ends the gzip stream, if any.
func (w *responseWriter) close() {
	if w.gz == nil {
		return
	}
	w.gz.Close()
	gzipPools[w.level].Put(w.gz)
	w.gz = nil
}

// countingWriter is where the gzip stream goes: the client, counted.
type countingWriter struct{ w *responseWriter }

func (c countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.ResponseWriter.Write(b)
	c.w.n += int64(n)
	return n, err
}

// defaultContentTypes is Envoy's compressor default list.
var defaultContentTypes = []string{
	"text/html", "text/plain", "text/css", "application/javascript", "application/x-javascript",
	"text/javascript", "text/x-javascript", "text/ecmascript", "text/js", "text/jscript",
	"text/x-js", "application/ecmascript", "application/x-json", "application/xml",
	"application/json", "image/svg+xml", "text/xml", "application/xhtml+xml",
}

// defaultMinLength is Envoy's compressor min_content_length default.
const defaultMinLength = 30

// gzipPools pool gzip writers per level (index 0: the default level).
var gzipPools [10]sync.Pool

// maybeCompress switches the response to gzip when the client accepts it, the response is
// a 200 with a body of a listed type, is not encoded yet, not too short, and allows
// transformation. Only 200: a 206 (or any response to a Range request, or with a
// Content-Range) describes byte ranges of the identity body, which compression would
// make wrong.
func (w *responseWriter) maybeCompress(c *httproute.Compression, code int) {
	x := w.x
	if code != http.StatusOK || x.entry.Method == http.MethodHead || !acceptsGzip(x.entry.RequestHeader) ||
		len(x.entry.RequestHeader["Range"]) > 0 {
		return
	}
	h := w.Header()
	if h.Get("Content-Encoding") != "" || h.Get("Content-Range") != "" ||
		strings.Contains(h.Get("Cache-Control"), "no-transform") {
		return
	}
	mt, _, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil {
		return
	}
	types := c.ContentTypes
	if len(types) == 0 {
		types = defaultContentTypes
	}
	if !slices.Contains(types, mt) {
		return
	}
	minLen := c.MinContentLength
	if minLen == 0 {
		minLen = defaultMinLength
	}
	if cl := h.Get("Content-Length"); cl != "" {
		if n, err := strconv.Atoi(cl); err == nil && n < minLen {
			return
		}
	}
	level := c.Level
	if level < 1 || level > 9 {
		level = 0
	}
	h.Del("Content-Length")
	h.Set("Content-Encoding", "gzip")
	h.Add("Vary", "Accept-Encoding")
	if et := h.Get("Etag"); et != "" && !strings.HasPrefix(et, "W/") {
		h.Set("Etag", "W/"+et)
	}
	gz, _ := gzipPools[level].Get().(*gzip.Writer)
	if gz == nil {
		lv := level
		if lv == 0 {
			lv = gzip.DefaultCompression
		}
		gz, _ = gzip.NewWriterLevel(io.Discard, lv)
	}
	gz.Reset(countingWriter{w})
	w.gz, w.level = gz, level
}

// acceptsGzip reports whether Accept-Encoding accepts gzip (or *) with a non-zero q.
func acceptsGzip(h http.Header) bool {
	for _, v := range h["Accept-Encoding"] {
		for part := range strings.SplitSeq(v, ",") {
			coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
			coding = strings.TrimSpace(coding)
			if !strings.EqualFold(coding, "gzip") && coding != "*" {
				continue
			}
			q := strings.TrimSpace(params)
			if qv, ok := strings.CutPrefix(q, "q="); ok {
				if f, err := strconv.ParseFloat(qv, 64); err == nil && f == 0 {
					continue
				}
			}
			return true
		}
	}
	return false
}
