package udpproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

func TestEchoConcurrentClients(t *testing.T) {
	tests := []struct {
		name     string
		loopback string
	}{
		{"ipv4", "127.0.0.1:0"},
		{"ipv6", "[::1]:0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(tt.loopback))); err != nil {
				t.Skipf("no %s loopback: %v", tt.name, err)
			} else {
				c.Close()
			}
			const clients, rounds = 20, 20
			up := startEcho(t, tt.loopback, "echo:")
			p, addr := startProxy(t, tt.loopback, Config{Pick: pickFixed(up)})

			conns := make([]*net.UDPConn, clients)
			for i := range conns {
				conns[i] = dial(t, addr)
			}
			var wg sync.WaitGroup
			errs := make(chan error, clients)
			for i, c := range conns {
				wg.Go(func() {
					for j := range rounds {
						msg := fmt.Sprintf("client %d message %d", i, j)
						got, err := exchange(c, []byte(msg), 2*time.Second)
						if err != nil {
							errs <- fmt.Errorf("client %d: %w", i, err)
							return
						}
						if want := "echo:" + msg; string(got) != want {
							errs <- fmt.Errorf("client %d got %q, want %q", i, got, want)
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}

			// A reply is counted just after it is sent, so the client may see it first.
			waitFor(t, 2*time.Second, "replies to be counted", func() bool { return p.Stats().DatagramsTx == clients*rounds })
			st := p.Stats()
			if st.SessionsTotal != clients || st.SessionsActive != clients {
				t.Errorf("sessions total %d active %d, want %d and %d", st.SessionsTotal, st.SessionsActive, clients, clients)
			}
			if st.DatagramsRx != clients*rounds {
				t.Errorf("datagrams rx %d, want %d", st.DatagramsRx, clients*rounds)
			}
			if st.BytesTx != st.BytesRx+uint64(len("echo:"))*clients*rounds {
				t.Errorf("bytes rx %d tx %d: tx should be rx plus the echo prefixes", st.BytesRx, st.BytesTx)
			}
			if st.Dropped != 0 {
				t.Errorf("dropped %d, want 0", st.Dropped)
			}
		})
	}
}

func TestLargestDatagramIsNotTruncated(t *testing.T) {
	up := startEcho(t, "127.0.0.1:0", "")
	_, addr := startProxy(t, "127.0.0.1:0", Config{Pick: pickFixed(up)})
	c := dial(t, addr)
	msg := bytes.Repeat([]byte("0123456789abcdef"), 65507/16+1)[:65507] // IPv4 maximum
	got, err := exchange(c, msg, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("got %d bytes back, want the %d sent", len(got), len(msg))
	}
}

func TestIdleTimeoutEndsSession(t *testing.T) {
	const idle = 100 * time.Millisecond
	up := startEcho(t, "127.0.0.1:0", "")
	ended := make(chan SessionInfo, 16)
	p, addr := startProxy(t, "127.0.0.1:0", Config{
		IdleTimeout:  idle,
		Pick:         pickFixed(up),
		OnSessionEnd: func(si SessionInfo) { ended <- si },
	})
	c := dial(t, addr)
	mustExchange(t, c, "ping", "ping")
	if st := p.Stats(); st.SessionsActive != 1 {
		t.Fatalf("active sessions %d, want 1", st.SessionsActive)
	}
	waitFor(t, 5*time.Second, "the idle session to end", func() bool { return p.Stats().SessionsActive == 0 })

	select {
	case si := <-ended:
		if si.Reason != "idle_timeout" {
			t.Errorf("reason %q, want idle_timeout", si.Reason)
		}
		if si.Duration < idle {
			t.Errorf("session lasted %v, less than the idle timeout %v", si.Duration, idle)
		}
		if si.Client != addrOf(c) || si.Upstream != up {
			t.Errorf("session %v → %v, want %v → %v", si.Client, si.Upstream, addrOf(c), up)
		}
		if si.DatagramsReceived != 1 || si.BytesReceived != 4 || si.DatagramsSent != 1 || si.BytesSent != 4 ||
			si.UpstreamBytesSent != 4 || si.UpstreamBytesReceived != 4 {
			t.Errorf("session counters %+v, want one 4-byte datagram each way", si)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("OnSessionEnd not called")
	}
	if st := p.Stats(); st.SessionsIdleTimeout != 1 {
		t.Errorf("idle timeouts %d, want 1", st.SessionsIdleTimeout)
	}

	// The same client starts a new session.
	mustExchange(t, c, "again", "again")
	if st := p.Stats(); st.SessionsTotal != 2 || st.SessionsActive != 1 {
		t.Errorf("sessions total %d active %d, want 2 and 1", st.SessionsTotal, st.SessionsActive)
	}
}

func TestActivityKeepsSessionAlive(t *testing.T) {
	const idle = 400 * time.Millisecond
	up := startEcho(t, "127.0.0.1:0", "")
	p, addr := startProxy(t, "127.0.0.1:0", Config{IdleTimeout: idle, Pick: pickFixed(up)})
	c := dial(t, addr)
	pace := time.NewTicker(idle / 10)
	defer pace.Stop()
	for start := time.Now(); time.Since(start) < 2*idle; <-pace.C {
		mustExchange(t, c, "tick", "tick")
	}
	if st := p.Stats(); st.SessionsTotal != 1 || st.SessionsIdleTimeout != 0 {
		t.Errorf("sessions total %d, idle timeouts %d: a busy session must not time out", st.SessionsTotal, st.SessionsIdleTimeout)
	}
}

func TestMaxSessionsOverflow(t *testing.T) {
	const limit = 3
	up := startEcho(t, "127.0.0.1:0", "")
	p, addr := startProxy(t, "127.0.0.1:0", Config{MaxSessions: limit, Pick: pickFixed(up)})
	old := make([]*net.UDPConn, limit)
	for i := range old {
		old[i] = dial(t, addr)
		mustExchange(t, old[i], "hello", "hello")
	}

	extra := dial(t, addr)
	if _, err := extra.Write([]byte("let me in")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "the overflow to be counted", func() bool { return p.Stats().SessionsOverflow == 1 })
	expectSilence(t, extra, 100*time.Millisecond)

	for _, c := range old {
		mustExchange(t, c, "still here", "still here")
	}
	st := p.Stats()
	if st.SessionsActive != limit || st.SessionsTotal != limit || st.Dropped != 1 {
		t.Errorf("active %d total %d dropped %d, want %d, %d, 1", st.SessionsActive, st.SessionsTotal, st.Dropped, limit, limit)
	}
}

func TestNoRouteDropsDatagram(t *testing.T) {
	up := startEcho(t, "127.0.0.1:0", "")
	tests := []struct {
		name string
		pick func(netip.AddrPort) (netip.AddrPort, error)
	}{
		{"nil picker", nil},
		{"picker error", func(netip.AddrPort) (netip.AddrPort, error) { return up, errors.New("no healthy endpoint") }},
		{"invalid address", func(netip.AddrPort) (netip.AddrPort, error) { return netip.AddrPort{}, nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, addr := startProxy(t, "127.0.0.1:0", Config{Pick: tt.pick})
			c := dial(t, addr)
			if _, err := c.Write([]byte("anyone?")); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 2*time.Second, "the datagram to be dropped", func() bool { return p.Stats().Dropped == 1 })
			if st := p.Stats(); st.NoRoute != 1 || st.SessionsTotal != 0 {
				t.Errorf("no route %d, sessions %d, want 1 and 0", st.NoRoute, st.SessionsTotal)
			}
		})
	}
}

func TestPickSeesClientOncePerSession(t *testing.T) {
	up := startEcho(t, "127.0.0.1:0", "")
	var mu sync.Mutex
	var picked []netip.AddrPort
	_, addr := startProxy(t, "127.0.0.1:0", Config{Pick: func(client netip.AddrPort) (netip.AddrPort, error) {
		mu.Lock()
		defer mu.Unlock()
		picked = append(picked, client)
		return up, nil
	}})
	c := dial(t, addr)
	for i := range 5 {
		mustExchange(t, c, fmt.Sprint(i), fmt.Sprint(i))
	}
	mu.Lock()
	defer mu.Unlock()
	if len(picked) != 1 || picked[0] != addrOf(c) {
		t.Errorf("Pick called with %v, want once with %v", picked, addrOf(c))
	}
}

func TestUpdateChangesUpstreamForNewSessionsOnly(t *testing.T) {
	a := startEcho(t, "127.0.0.1:0", "A:")
	b := startEcho(t, "127.0.0.1:0", "B:")
	p, addr := startProxy(t, "127.0.0.1:0", Config{Pick: pickFixed(a)})
	first := dial(t, addr)
	mustExchange(t, first, "1", "A:1")

	p.Update(Config{Pick: pickFixed(b)})
	second := dial(t, addr)
	mustExchange(t, second, "2", "B:2")
	mustExchange(t, first, "3", "A:3")
}

func TestCloseReleasesSockets(t *testing.T) {
	const clients = 10
	up := startEcho(t, "127.0.0.1:0", "")
	ln := listenUDP(t, "127.0.0.1:0")
	conns := make([]*net.UDPConn, clients)
	for i := range conns {
		conns[i] = dial(t, addrOf(ln))
	}
	var mu sync.Mutex
	reasons := map[string]int{}
	before := openFDs(t)

	p := New(ln, Config{Pick: pickFixed(up), OnSessionEnd: func(si SessionInfo) {
		mu.Lock()
		reasons[si.Reason]++
		mu.Unlock()
	}}, nil)
	for _, c := range conns {
		mustExchange(t, c, "x", "x")
	}
	if got := openFDs(t); got != before+clients {
		t.Errorf("%d open files with %d sessions, want %d", got, clients, before+clients)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := openFDs(t); got != before {
		t.Errorf("%d open files after Close, want %d", got, before)
	}
	if st := p.Stats(); st.SessionsActive != 0 {
		t.Errorf("active sessions %d after Close", st.SessionsActive)
	}
	mu.Lock()
	if reasons["closed"] != clients || len(reasons) != 1 {
		t.Errorf("session end reasons %v, want %d × closed", reasons, clients)
	}
	mu.Unlock()
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}

	// The listening socket is the caller's: still open, readable, with no deadline left over.
	if _, err := conns[0].Write([]byte("after")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	n, from, err := ln.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != "after" || from != addrOf(conns[0]) {
		t.Fatalf("reading the listening socket after Close: %q from %v, %v", buf[:n], from, err)
	}
}

func TestDrain(t *testing.T) {
	t.Run("sessions end by idleness", func(t *testing.T) {
		up := startEcho(t, "127.0.0.1:0", "")
		reasons := make(chan string, 16)
		p, addr := startProxy(t, "127.0.0.1:0", Config{
			IdleTimeout:  100 * time.Millisecond,
			Pick:         pickFixed(up),
			OnSessionEnd: func(si SessionInfo) { reasons <- si.Reason },
		})
		mustExchange(t, dial(t, addr), "a", "a")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.Drain(ctx); err != nil {
			t.Fatalf("Drain: %v", err)
		}
		if st := p.Stats(); st.SessionsActive != 0 || st.SessionsIdleTimeout != 1 {
			t.Errorf("after Drain: active %d, idle timeouts %d, want 0 and 1", st.SessionsActive, st.SessionsIdleTimeout)
		}
		if r := <-reasons; r != "idle_timeout" {
			t.Errorf("session ended by %q, want idle_timeout", r)
		}
	})

	t.Run("deadline cuts the rest", func(t *testing.T) {
		up := startEcho(t, "127.0.0.1:0", "")
		ended := make(chan string, 16)
		p, addr := startProxy(t, "127.0.0.1:0", Config{
			IdleTimeout:  time.Minute,
			Pick:         pickFixed(up),
			OnSessionEnd: func(si SessionInfo) { ended <- si.Reason },
		})
		old := dial(t, addr)
		mustExchange(t, old, "a", "a")

		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		drained := make(chan error, 1)
		go func() { drained <- p.Drain(ctx) }()

		waitFor(t, 2*time.Second, "Drain to begin", func() bool {
			p.mu.Lock()
			defer p.mu.Unlock()
			return p.draining
		})

		// A new client is refused; the old one keeps working.
		newcomer := dial(t, addr)
		if _, err := newcomer.Write([]byte("new")); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 2*time.Second, "the new client to be refused", func() bool { return p.Stats().Dropped == 1 })
		if st := p.Stats(); st.SessionsTotal != 1 {
			t.Fatalf("%d sessions created, want only the one from before Drain", st.SessionsTotal)
		}
		mustExchange(t, old, "b", "b")

		cancel()
		if err := <-drained; !errors.Is(err, context.Canceled) {
			t.Fatalf("Drain returned %v, want context.Canceled", err)
		}
		if st := p.Stats(); st.SessionsActive != 0 {
			t.Errorf("active sessions %d after Drain", st.SessionsActive)
		}
		select {
		case r := <-ended:
			if r != "drain" {
				t.Errorf("reason %q, want drain", r)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("OnSessionEnd not called")
		}
	})
}

// TestFlood sends one datagram from each of 2,000 sockets at a proxy that allows 500 sessions:
// exactly 500 sessions (and sockets) exist afterwards, the rest is dropped and counted, and the
// first clients are still served.
func TestFlood(t *testing.T) {
	const sources, maxSessions, batch = 2000, 500, 100
	up := startEcho(t, "127.0.0.1:0", "")
	ln := listenUDP(t, "127.0.0.1:0")
	conns := make([]*net.UDPConn, sources)
	for i := range conns {
		conns[i] = dial(t, addrOf(ln))
	}
	before := openFDs(t)
	p := New(ln, Config{MaxSessions: maxSessions, Pick: pickFixed(up)}, nil)
	t.Cleanup(func() { p.Close() })

	// Batches small enough for the receive buffers of the listening socket and of the
	// upstream, so the kernel drops nothing and the counts are exact.
	for start := 0; start < sources; start += batch {
		for _, c := range conns[start : start+batch] {
			if _, err := c.Write([]byte("flood")); err != nil {
				t.Fatal(err)
			}
		}
		rx, tx := uint64(start+batch), uint64(min(start+batch, maxSessions))
		waitFor(t, 5*time.Second, "the batch to be read and answered", func() bool {
			st := p.Stats()
			return st.DatagramsRx == rx && st.DatagramsTx == tx
		})
	}

	st := p.Stats()
	if st.SessionsTotal != maxSessions || st.SessionsActive != maxSessions {
		t.Errorf("sessions total %d active %d, want %d", st.SessionsTotal, st.SessionsActive, maxSessions)
	}
	if st.SessionsOverflow != sources-maxSessions || st.Dropped != sources-maxSessions {
		t.Errorf("overflow %d dropped %d, want %d", st.SessionsOverflow, st.Dropped, sources-maxSessions)
	}
	if got := openFDs(t); got != before+maxSessions {
		t.Errorf("%d open files, want %d (one per session)", got, before+maxSessions)
	}
	// The first clients got their session; their replies are queued on their sockets.
	buf := make([]byte, 16)
	conns[0].SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, err := conns[0].Read(buf); err != nil || string(buf[:n]) != "flood" {
		t.Fatalf("first client: %q, %v", buf[:n], err)
	}
	mustExchange(t, conns[0], "still served", "still served")
	expectSilence(t, conns[sources-1], 50*time.Millisecond)
}

func BenchmarkRoundTrip(b *testing.B) {
	up := startEcho(b, "127.0.0.1:0", "")
	_, addr := startProxy(b, "127.0.0.1:0", Config{Pick: pickFixed(up)})
	c := dial(b, addr)
	msg := bytes.Repeat([]byte("x"), 512)
	buf := make([]byte, 2048)
	if _, err := exchange(c, msg, 2*time.Second); err != nil { // open the session
		b.Fatal(err)
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := c.Read(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRoundTripDirect is BenchmarkRoundTrip without the proxy, for comparison.
func BenchmarkRoundTripDirect(b *testing.B) {
	up := startEcho(b, "127.0.0.1:0", "")
	c := dial(b, up)
	msg := bytes.Repeat([]byte("x"), 512)
	buf := make([]byte, 2048)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := c.Read(buf); err != nil {
			b.Fatal(err)
		}
	}
}
