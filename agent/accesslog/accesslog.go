// Package accesslog writes one line per proxied TCP connection or UDP session, or per HTTP
// request, with the fields nginx stream and http users rely on, as JSON lines or an
// nginx-style format string.
//
// A Format is parsed once from configuration. A Logger encodes each Entry in the caller's
// goroutine into a pooled buffer and hands it to one writer goroutine through a bounded queue;
// when the queue is full (a slow disk, a blocked pipe) the line is dropped and counted instead
// of slowing down the connection that logs it. Reopen supports logrotate's move-and-signal.
package accesslog

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Entry is what is known about one connection, UDP session or HTTP request when it ends. The
// nginx variable each field is printed as is in its comment; see Format. For an HTTP request,
// Protocol is "HTTP/1.0", "HTTP/1.1" or "HTTP/2", Status the response status, BytesSent and
// BytesReceived the response and request body bytes, Client the client address (after the
// PROXY protocol and trusted X-Forwarded-For hops), and Upstream the last endpoint tried.
type Entry struct {
	Start    time.Time      // connection accepted or first datagram received ($start_time)
	Duration time.Duration  // from Start to the end ($session_time)
	Client   netip.AddrPort // the client ($remote_addr, $remote_port)
	Server   netip.AddrPort // the address the client connected to ($server_addr, $server_port)
	Protocol string         // "TCP" or "UDP" ($protocol)
	// Status is nginx stream's: 200 ok, 400 bad request (malformed ClientHello or PROXY
	// header), 403 forbidden, 500 internal error, 502 bad gateway (no upstream connected), 503
	// service unavailable (a limit, no healthy upstream) ($status).
	Status                int
	BytesSent             int64          // to the client ($bytes_sent)
	BytesReceived         int64          // from the client ($bytes_received)
	Upstream              netip.AddrPort // the upstream used, invalid if none ($upstream_addr)
	UpstreamBytesSent     int64          // to the upstream ($upstream_bytes_sent)
	UpstreamBytesReceived int64          // from the upstream ($upstream_bytes_received)
	UpstreamConnectTime   time.Duration  // time to connect to the upstream ($upstream_connect_time)
	SNI                   string         // server name from the ClientHello ($ssl_preread_server_name)
	Listener              string         // listener name ($listener)
	Cluster               string         // cluster name ($cluster)
	FilterChain           string         // filter chain name ($filter_chain)

	// HTTP requests only; empty for L4.
	Method     string // request method ($request_method, %REQ(:METHOD)%); set means "an HTTP request"
	RequestURI string // path and query as the client sent them ($request_uri, %REQ(:PATH)%)
	Host       string // the request's authority ($host, %REQ(:AUTHORITY)%)
	Scheme     string // "http" or "https" (%REQ(:SCHEME)%)
	Route      string // the route's name ($route, %ROUTE_NAME%)
	// UpstreamResponseTime is the time from the start of the request to the upstream's
	// response headers ($upstream_response_time, %RESPONSE_DURATION%).
	UpstreamResponseTime time.Duration
	// RequestHeader is the request's header as the client sent it ($http_<name>,
	// %REQ(NAME)%) and ResponseHeader the response's as the client got it
	// ($sent_http_<name>, %RESP(NAME)%). The Entry does not own them: Log reads them
	// before it returns.
	RequestHeader  http.Header
	ResponseHeader http.Header
}

// Status codes of nginx's stream module, for Entry.Status.
const (
	StatusOK                 = 200
	StatusBadRequest         = 400
	StatusForbidden          = 403
	StatusInternalError      = 500
	StatusBadGateway         = 502
	StatusServiceUnavailable = 503
)

// QueueLines is how many encoded lines may wait for the writer before Log drops lines. At a few
// hundred bytes a line that is about a megabyte, and several seconds of a busy proxy's
// connections.
const QueueLines = 4096

// writeBuffer batches lines into few write calls while lines come faster than they are written.
const writeBuffer = 64 << 10

// Logger writes access log lines. Log is safe for concurrent use; Close ends it.
type Logger struct {
	f       *Format
	path    string // "" when writing to a caller's writer or stdout: Reopen does nothing then
	lines   chan *[]byte
	reopen  chan chan error
	done    chan struct{} // closed when the writer goroutine has ended
	dropped atomic.Uint64

	mu     sync.RWMutex // Log holds it shared while it may send on lines; Close exclusively
	closed bool

	// Owned by the writer goroutine until done is closed.
	out    io.Writer
	file   *os.File // nil unless the Logger opened it
	w      *bufio.Writer
	werr   error // first write error since the last Reopen
	closeE error // what Close returns
}

// New writes to path ("" or "-" or "stdout" → os.Stdout) with a bounded buffer; a slow disk
// drops lines (counted) rather than blocking connections. The file is opened for appending and
// created with mode 0644 if missing; Reopen opens path again, for logrotate.
func New(path string, f *Format) (*Logger, error) {
	switch path {
	case "", "-", "stdout":
		return newLogger(os.Stdout, nil, "", f), nil
	}
	file, err := openLog(path)
	if err != nil {
		return nil, err
	}
	return newLogger(file, file, path, f), nil
}

// NewWriter writes lines to w, which the Logger does not close, with the same bounded queue as
// New. Reopen does nothing.
func NewWriter(w io.Writer, f *Format) *Logger {
	return newLogger(w, nil, "", f)
}

func openLog(path string) (*os.File, error) {
	file, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("access log: %w", err)
	}
	return file, nil
}

func newLogger(out io.Writer, file *os.File, path string, f *Format) *Logger {
	l := &Logger{
		f:      f,
		path:   path,
		lines:  make(chan *[]byte, QueueLines),
		reopen: make(chan chan error),
		done:   make(chan struct{}),
		out:    out,
		file:   file,
		w:      bufio.NewWriterSize(out, writeBuffer),
	}
	go l.run()
	return l
}

// linePool recycles line buffers between Log and the writer.
var linePool = sync.Pool{New: func() any {
	b := make([]byte, 0, 512)
	return &b
}}

// maxPooledLine keeps an odd huge line from pinning its buffer in the pool.
const maxPooledLine = 16 << 10

// Log queues the line for e. It never blocks on the output: when the queue is full, or after
// Close, the line is dropped and counted. It does not keep e.
func (l *Logger) Log(e *Entry) {
	bp := linePool.Get().(*[]byte)
	b := l.f.Append((*bp)[:0], e)
	*bp = append(b, '\n')

	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		l.drop(bp)
		return
	}
	select {
	case l.lines <- bp:
		l.mu.RUnlock()
	default:
		l.mu.RUnlock()
		l.drop(bp)
	}
}

func (l *Logger) drop(bp *[]byte) {
	l.dropped.Add(1)
	putLine(bp)
}

func putLine(bp *[]byte) {
	if cap(*bp) <= maxPooledLine {
		linePool.Put(bp)
	}
}

// Dropped returns how many lines were dropped because the queue was full or the Logger closed.
func (l *Logger) Dropped() uint64 { return l.dropped.Load() }

// Reopen flushes the queued lines to the current file, closes it and opens the path again, so
// that after logrotate has moved the file lines go to a new one. It does nothing for stdout or
// a writer. If the path cannot be opened, lines keep going to the old file and the error is
// returned.
func (l *Logger) Reopen() error {
	if l.path == "" {
		return nil
	}
	reply := make(chan error, 1)
	select {
	case l.reopen <- reply:
		return <-reply
	case <-l.done:
		return errors.New("access log: reopen after close")
	}
}

// Close writes every queued line, flushes, closes the file New opened, and returns the first
// error met writing or closing. Lines logged after Close are dropped. Close is idempotent.
func (l *Logger) Close() error {
	l.mu.Lock()
	if !l.closed {
		l.closed = true
		close(l.lines)
	}
	l.mu.Unlock()
	<-l.done
	return l.closeE
}

// run is the Logger's only writer. It flushes whenever the queue runs empty, so a line is on
// its way to the disk as soon as no other line is waiting.
func (l *Logger) run() {
	defer close(l.done)
	for {
		select {
		case bp, ok := <-l.lines:
			if !ok {
				l.closeE = l.finish()
				return
			}
			l.write(bp)
			if len(l.lines) == 0 {
				l.flush()
			}
		case reply := <-l.reopen:
			reply <- l.reopenFile()
		}
	}
}

func (l *Logger) write(bp *[]byte) {
	if _, err := l.w.Write(*bp); err != nil && l.werr == nil {
		l.werr = fmt.Errorf("access log: %w", err)
	}
	putLine(bp)
}

func (l *Logger) flush() {
	if err := l.w.Flush(); err != nil && l.werr == nil {
		l.werr = fmt.Errorf("access log: %w", err)
	}
	if l.werr != nil {
		// bufio.Writer stays failed after an error; start over so that a disk that frees up
		// or a Reopen gets lines again. The lines in the failed buffer are lost.
		l.w.Reset(l.out)
	}
}

func (l *Logger) reopenFile() error {
	file, err := openLog(l.path)
	if err != nil {
		return err
	}
	// Lines logged before Reopen belong to the old file.
	for queued := len(l.lines); queued > 0; queued-- {
		bp, ok := <-l.lines
		if !ok {
			break
		}
		l.write(bp)
	}
	l.flush()
	old := l.file
	l.out, l.file, l.werr = file, file, nil
	l.w.Reset(file)
	if err := old.Close(); err != nil {
		return fmt.Errorf("access log: closing the old file: %w", err)
	}
	return nil
}

func (l *Logger) finish() error {
	l.flush()
	err := l.werr
	if l.file != nil {
		if cerr := l.file.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("access log: %w", cerr)
		}
	}
	return err
}
