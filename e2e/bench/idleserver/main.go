// Command idleserver is the idle backend of `make bench-l4`'s memory measurement: it
// listens on one or more addresses and, on every connection it accepts, reads one byte,
// answers with one byte and then holds the connection open, silent, until the peer closes
// it. It exits on SIGINT/SIGTERM or after --max-run, whichever comes first, so a
// forgotten instance cannot outlive the benchmark for long.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "comma-separated `addresses` to listen on")
	maxRun := flag.Duration("max-run", 10*time.Minute, "exit after this long even without a signal")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *maxRun)
	defer cancel()

	var lns []net.Listener
	for _, addr := range strings.Split(*listen, ",") {
		ln, err := net.Listen("tcp", strings.TrimSpace(addr))
		if err != nil {
			slog.Error("idleserver: listen", "addr", addr, "err", err)
			os.Exit(1)
		}
		lns = append(lns, ln)
		fmt.Printf("listening %s\n", ln.Addr())
	}
	s := &server{}
	var wg sync.WaitGroup
	for _, ln := range lns {
		wg.Go(func() { s.serve(ctx, ln) })
	}
	<-ctx.Done()
	for _, ln := range lns {
		ln.Close()
	}
	wg.Wait()
	slog.Info("idleserver: done", "accepted", s.accepted.Load(), "answered", s.answered.Load())
}

// server counts what it did; the zero value is ready to serve.
type server struct {
	accepted atomic.Int64 // connections accepted
	answered atomic.Int64 // connections that got their byte and were answered
}

// serve accepts on ln until ctx is done, then closes every connection it still holds.
func (s *server) serve(ctx context.Context, ln net.Listener) {
	var (
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
		wg    sync.WaitGroup
	)
	go func() {
		<-ctx.Done()
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				slog.Error("idleserver: accept", "addr", ln.Addr(), "err", err)
			}
			break
		}
		s.accepted.Add(1)
		mu.Lock()
		if ctx.Err() != nil {
			mu.Unlock()
			c.Close()
			break
		}
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Go(func() {
			s.hold(c)
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
		})
	}
	wg.Wait()
}

// hold answers the connection's first byte with one byte, then waits for the peer to close.
func (s *server) hold(c net.Conn) {
	defer c.Close()
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return
	}
	if _, err := c.Write([]byte{'y'}); err != nil {
		return
	}
	s.answered.Add(1)
	io.Copy(io.Discard, c) //nolint:errcheck // only waits for EOF or close
}
