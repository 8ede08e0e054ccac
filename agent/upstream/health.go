package upstream

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"time"
)

// runHealthCheck checks one host every interval (plus up to 10% jitter), the first time
// after delay, until the checker is stopped, and reports every result to the cluster. It
// is a named function so that stack dumps show what each goroutine does.
func runHealthCheck(chk *checker, delay time.Duration) {
	defer chk.c.reg.checkerDone()
	t := time.NewTimer(delay)
	defer t.Stop()
	for {
		select {
		case <-chk.ctx.Done():
			return
		case <-t.C:
		}
		err := probe(chk.ctx, chk.c.reg.http, chk.hc, chk.h.addrStr)
		chk.c.report(chk, err)
		t.Reset(chk.hc.interval + rand.N(chk.hc.interval/10+1))
	}
}

// probe runs one check of addr, bounded by hc.timeout; nil means it passed.
func probe(ctx context.Context, client *http.Client, hc *healthCheck, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, hc.timeout)
	defer cancel()
	if hc.http != nil {
		return probeHTTP(ctx, client, hc.http, addr)
	}
	return probeTCP(ctx, hc.tcp, addr)
}

// probeTCP connects to addr and, if the check has a payload, sends it and compares the
// first bytes of the answer with Expect.
func probeTCP(ctx context.Context, t *TCPCheck, addr string) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if len(t.Send) == 0 {
		return nil
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) }) // stopped checker
	defer stop()
	if _, err := conn.Write(t.Send); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	if len(t.Expect) == 0 {
		return nil
	}
	got := make([]byte, len(t.Expect))
	if _, err := io.ReadFull(conn, got); err != nil {
		return fmt.Errorf("receive: %w", err)
	}
	if !bytes.Equal(got, t.Expect) {
		return fmt.Errorf("received %q, expected %q", got, t.Expect)
	}
	return nil
}

// probeHTTP sends GET Path to addr and checks the response status.
func probeHTTP(ctx context.Context, client *http.Client, h *HTTPCheck, addr string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+h.Path, nil)
	if err != nil {
		return err
	}
	if h.Host != "" {
		req.Host = h.Host
	}
	req.Header.Set("User-Agent", "flotilla-health-check")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	ok := resp.StatusCode >= 200 && resp.StatusCode < 400
	if len(h.ExpectedStatuses) > 0 {
		ok = slices.Contains(h.ExpectedStatuses, resp.StatusCode)
	}
	if !ok {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}
