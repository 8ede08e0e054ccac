// Command idleclient is the client of `make bench-l4`'s memory measurement: it opens --n
// TCP connections to --addr (a proxy in front of idleserver), sends one byte on each and
// waits for the one-byte answer, so every connection is known to be proxied end to end,
// then prints one line
//
//	ready ok=N failed=M [err=first error]
//
// and holds the connections open, idle, until SIGINT/SIGTERM or --max-run.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

func main() {
	addr := flag.String("addr", "", "`host:port` to connect to")
	n := flag.Int("n", 1000, "number of connections")
	concurrency := flag.Int("concurrency", 50, "connections being opened at once")
	timeout := flag.Duration("timeout", 60*time.Second, "bound on opening all connections")
	maxRun := flag.Duration("max-run", 10*time.Minute, "exit after this long even without a signal")
	flag.Parse()
	if *addr == "" || *n < 1 || *concurrency < 1 {
		fmt.Fprintln(os.Stderr, "idleclient: need --addr, --n ≥ 1 and --concurrency ≥ 1")
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *maxRun)
	defer cancel()

	openCtx, openCancel := context.WithTimeout(ctx, *timeout)
	conns, failed, firstErr := open(openCtx, *addr, *n, *concurrency)
	openCancel()
	line := fmt.Sprintf("ready ok=%d failed=%d", len(conns), failed)
	if firstErr != nil {
		line += fmt.Sprintf(" err=%q", firstErr.Error())
	}
	fmt.Println(line)

	<-ctx.Done()
	for _, c := range conns {
		c.Close()
	}
}

// open opens n connections to addr, at most concurrency at a time, and completes the
// one-byte exchange on each. It returns the connections that completed it, how many did
// not (those are closed), and the first error seen.
func open(ctx context.Context, addr string, n, concurrency int) (conns []net.Conn, failed int, firstErr error) {
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		sem  = make(chan struct{}, concurrency)
		dial net.Dialer
	)
	record := func(c net.Conn, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			failed++
			if firstErr == nil {
				firstErr = err
			}
			return
		}
		conns = append(conns, c)
	}
	for i := range n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			record(nil, fmt.Errorf("connection %d: %w", i, ctx.Err()))
			continue
		}
		wg.Go(func() {
			defer func() { <-sem }()
			c, err := exchange(ctx, &dial, addr)
			if err != nil {
				err = fmt.Errorf("connection %d: %w", i, err)
			}
			record(c, err)
		})
	}
	wg.Wait()
	return conns, failed, firstErr
}

// exchange dials addr, writes one byte and reads one byte back, bounded by ctx.
func exchange(ctx context.Context, dial *net.Dialer, addr string) (net.Conn, error) {
	c, err := dial.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	var b [1]byte
	if _, err := c.Write([]byte{'x'}); err != nil {
		c.Close()
		return nil, fmt.Errorf("write to %s: %w", addr, err)
	}
	if _, err := io.ReadFull(c, b[:]); err != nil {
		c.Close()
		return nil, fmt.Errorf("read from %s: %w", addr, err)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}
