// Command httpbackend is the backend of `make bench-http`: a net/http server that answers
// every request with the same body (1 KiB by default, Content-Type text/plain, a fixed
// Content-Length) on keep-alive connections. It listens on --listen, prints
// "listening ADDR" once it accepts connections, and exits on SIGINT/SIGTERM or after
// --max-run, whichever comes first, so a forgotten instance cannot outlive the benchmark
// for long.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "`address` to listen on")
	size := flag.Int("size", 1024, "response body size in `bytes`")
	maxRun := flag.Duration("max-run", 30*time.Minute, "exit after this long even without a signal")
	flag.Parse()
	if *size < 0 {
		slog.Error("httpbackend: --size must not be negative", "size", *size)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *maxRun)
	defer cancel()

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		slog.Error("httpbackend: listen", "addr", *listen, "err", err)
		os.Exit(1)
	}
	h := newHandler(*size)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 5 * time.Minute}
	fmt.Printf("listening %s\n", ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		slog.Error("httpbackend: serve", "err", err)
		os.Exit(1)
	case <-ctx.Done():
	}
	shutCtx, shutCancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer shutCancel()
	if err := srv.Shutdown(shutCtx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		slog.Warn("httpbackend: shutdown", "err", err)
	}
	slog.Info("httpbackend: done", "requests", h.requests.Load())
}

// handler answers every request with body; it counts the requests it served.
type handler struct {
	body     []byte
	length   string
	requests atomic.Int64
}

// newHandler returns a handler whose body is size bytes of printable text ending in a newline.
func newHandler(size int) *handler {
	line := []byte("flotilla bench-http backend 0123456789abcdefghijklmnopqrstuvwxyz\n")
	body := bytes.Repeat(line, size/len(line)+1)[:size]
	if size > 0 {
		body[size-1] = '\n'
	}
	return &handler{body: body, length: strconv.Itoa(size)}
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.requests.Add(1)
	hdr := w.Header()
	hdr["Content-Type"] = []string{"text/plain; charset=utf-8"}
	hdr["Content-Length"] = []string{h.length}
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(h.body)
	}
}
