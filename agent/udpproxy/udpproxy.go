// Package udpproxy proxies UDP datagrams from one listening socket to upstreams, like Envoy's
// udp_proxy or nginx's `listen … udp` with proxy_pass.
//
// A datagram from a client address (IP and port) that has no session picks an upstream through
// Config.Pick and opens a session: one connected upstream socket, so the kernel delivers only
// that upstream's replies to it. Later datagrams from the same client go through the same
// socket; replies are written back to the client from the listening socket. A session ends when
// no datagram has crossed it, in either direction, for Config.IdleTimeout. Datagrams are
// forwarded as they are: no reassembly, no queueing. Where a datagram cannot be forwarded at
// once (no session can be created, a socket buffer is full) it is dropped and counted, as the
// network itself would.
//
// Resources are bounded by Config.MaxSessions: each session costs one file descriptor, one
// goroutine (a few KiB of stack) and a few hundred bytes; receive buffers come from a pool only
// while a datagram is being read, so idle sessions hold none.
package udpproxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Defaults for the zero values of Config.
const (
	// DefaultIdleTimeout is Envoy's udp_proxy default.
	DefaultIdleTimeout = 60 * time.Second
	// DefaultMaxSessions keeps a flood from many sources well below the agent's limit of
	// 20,000 open files per process (RLIMIT_NOFILE): each session holds one socket, so the sum
	// of MaxSessions over all UDP listeners, plus the TCP connections, must stay below it.
	DefaultMaxSessions = 10_000
)

// maxDatagram is the largest UDP payload (65,535 minus the IPv4 and UDP headers, rounded up);
// every receive buffer is this big so that no datagram is ever truncated.
const maxDatagram = 64 << 10

// Config is what a listener's UDP proxy does. The zero value of each field is a useful default
// except Pick, without which every datagram of a new client is dropped.
type Config struct {
	// IdleTimeout ends a session that has seen no datagram in either direction for this long.
	// 0 means DefaultIdleTimeout.
	IdleTimeout time.Duration
	// MaxSessions bounds the sessions of this listener. Datagrams from new clients beyond it are
	// dropped and counted in Stats.SessionsOverflow; existing sessions keep working.
	// 0 means DefaultMaxSessions.
	MaxSessions int
	// Pick chooses the upstream for a new session from the client's address (IPv4-mapped
	// addresses unmapped). An error or an invalid address drops the datagram (counted in
	// Stats.NoRoute). It is called once per session, not per datagram, from the proxy's single
	// read loop, so it should be quick; it need not be safe for concurrent use by one Proxy.
	Pick func(client netip.AddrPort) (netip.AddrPort, error)
	// OnSessionEnd, if set, is called once per session after it ended (from the session's own
	// goroutine, so it may block only briefly), e.g. to write an access log line. A session
	// keeps the OnSessionEnd of the Config it was created with.
	OnSessionEnd func(SessionInfo)
}

func (c *Config) idleTimeout() time.Duration {
	if c.IdleTimeout <= 0 {
		return DefaultIdleTimeout
	}
	return c.IdleTimeout
}

func (c *Config) maxSessions() int {
	if c.MaxSessions <= 0 {
		return DefaultMaxSessions
	}
	return c.MaxSessions
}

// SessionInfo describes a session that ended. Byte counts are UDP payload bytes.
type SessionInfo struct {
	Client   netip.AddrPort // client address as received on the listening socket
	Upstream netip.AddrPort // upstream chosen by Pick
	Start    time.Time      // when the first datagram arrived
	Duration time.Duration  // from Start to the end of the session
	// Reason is why the session ended: "idle_timeout", "drain", "closed" or "error".
	Reason string

	DatagramsReceived int64 // from the client
	BytesReceived     int64 // from the client
	DatagramsSent     int64 // to the client
	BytesSent         int64 // to the client

	UpstreamBytesSent     int64 // forwarded to the upstream (received minus dropped)
	UpstreamBytesReceived int64 // read from the upstream
}

// Stats are a listener's counters since New. The Envoy udp_proxy statistic each one matches is
// named in its comment, for exporters.
type Stats struct {
	SessionsTotal       uint64 // sessions created (downstream_sess_total)
	SessionsActive      int64  // sessions open now (downstream_sess_active)
	SessionsIdleTimeout uint64 // sessions ended by the idle timeout (idle_timeout)
	// SessionsOverflow counts datagrams of new clients refused because MaxSessions sessions
	// were open (upstream_cx_overflow).
	SessionsOverflow uint64
	// NoRoute counts datagrams of new clients dropped because Pick failed or no upstream socket
	// could be opened (downstream_sess_no_route).
	NoRoute uint64

	DatagramsRx uint64 // datagrams received from clients (downstream_sess_rx_datagrams)
	BytesRx     uint64 // bytes received from clients (downstream_sess_rx_bytes)
	DatagramsTx uint64 // datagrams sent to clients (downstream_sess_tx_datagrams)
	BytesTx     uint64 // bytes sent to clients (downstream_sess_tx_bytes)

	// Dropped counts every datagram not forwarded, in either direction: overflow, no route,
	// draining, a full or failing socket.
	Dropped uint64
}

// counters is the live, atomically updated form of Stats.
type counters struct {
	sessionsTotal, sessionsOverflow, sessionsIdleTimeout, noRoute atomic.Uint64
	sessionsActive                                                atomic.Int64
	datagramsRx, bytesRx, datagramsTx, bytesTx, dropped           atomic.Uint64
}

// Proxy serves one listening UDP socket. Its methods are safe for concurrent use.
type Proxy struct {
	conn  *net.UDPConn
	log   *slog.Logger
	cfg   atomic.Pointer[Config]
	epoch time.Time // session activity is kept as nanoseconds since epoch (monotonic)
	stats counters

	mu       sync.Mutex
	sessions map[netip.AddrPort]*session
	draining bool
	closed   bool
	drained  chan struct{} // closed when draining and the last session ended; nil otherwise

	closing   atomic.Bool
	done      chan struct{} // closed by Close; stops the sweeper
	closeOnce sync.Once
	wg        sync.WaitGroup // the read loop, the sweeper and every session goroutine
}

// New serves conn (an already bound *net.UDPConn the caller owns the binding of) until Close.
// The proxy reads from conn and writes replies to it but never closes it: the caller closes
// conn after Close returns (or hands it to a new Proxy). A nil log discards.
func New(conn *net.UDPConn, cfg Config, log *slog.Logger) *Proxy {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Proxy{
		conn:     conn,
		log:      log,
		epoch:    time.Now(),
		sessions: make(map[netip.AddrPort]*session),
		done:     make(chan struct{}),
	}
	p.cfg.Store(&cfg)
	// A previous Proxy's Close leaves no deadline behind, but a caller might have.
	_ = conn.SetReadDeadline(time.Time{})
	p.wg.Add(2)
	go p.readLoop()
	go p.sweep()
	return p
}

// Update makes new sessions use cfg; existing sessions keep their upstream, idle timeout and
// OnSessionEnd. A lower MaxSessions refuses new clients until enough sessions have ended. The
// idle sweep follows cfg's IdleTimeout, so existing sessions with a much shorter one may end up
// to a second late.
func (p *Proxy) Update(cfg Config) {
	p.cfg.Store(&cfg)
}

// Stats returns a snapshot of the counters. Counters are read one by one, so a snapshot taken
// while datagrams flow may be off by the datagrams in flight.
func (p *Proxy) Stats() Stats {
	c := &p.stats
	return Stats{
		SessionsTotal:       c.sessionsTotal.Load(),
		SessionsActive:      c.sessionsActive.Load(),
		SessionsOverflow:    c.sessionsOverflow.Load(),
		SessionsIdleTimeout: c.sessionsIdleTimeout.Load(),
		NoRoute:             c.noRoute.Load(),
		DatagramsRx:         c.datagramsRx.Load(),
		BytesRx:             c.bytesRx.Load(),
		DatagramsTx:         c.datagramsTx.Load(),
		BytesTx:             c.bytesTx.Load(),
		Dropped:             c.dropped.Load(),
	}
}

// Close stops reading from the listening socket, closes every session socket and returns when
// every goroutine of the proxy has ended (OnSessionEnd included). The listening socket stays
// open. Close is idempotent.
func (p *Proxy) Close() error {
	p.closeOnce.Do(func() {
		p.closing.Store(true)
		p.mu.Lock()
		p.closed = true
		ended := p.removeAllLocked()
		p.mu.Unlock()
		for _, s := range ended {
			s.end("closed")
		}
		close(p.done)
		// Wake the read loop; it sees closing and returns.
		_ = p.conn.SetReadDeadline(time.Unix(1, 0))
		p.wg.Wait()
		_ = p.conn.SetReadDeadline(time.Time{})
	})
	return nil
}

// Drain stops creating sessions and closes existing ones as they go idle or, when ctx is done,
// all at once. Datagrams of existing sessions flow until their session ends. It returns nil
// when every session ended by itself and ctx.Err() when the rest were cut at the deadline. The
// proxy keeps reading (and dropping datagrams of new clients) until Close.
func (p *Proxy) Drain(ctx context.Context) error {
	p.mu.Lock()
	p.draining = true
	if len(p.sessions) == 0 || p.closed {
		p.mu.Unlock()
		return nil
	}
	if p.drained == nil {
		p.drained = make(chan struct{})
	}
	drained := p.drained
	p.mu.Unlock()

	select {
	case <-drained:
		return nil
	case <-ctx.Done():
	}
	p.mu.Lock()
	ended := p.removeAllLocked()
	p.mu.Unlock()
	for _, s := range ended {
		s.end("drain")
	}
	return ctx.Err()
}

// removeAllLocked empties the session table and returns what it held. p.mu must be held.
func (p *Proxy) removeAllLocked() []*session {
	ended := make([]*session, 0, len(p.sessions))
	for _, s := range p.sessions {
		ended = append(ended, s)
	}
	clear(p.sessions)
	p.stats.sessionsActive.Store(0)
	p.signalDrainedLocked()
	return ended
}

// removeLocked takes s out of the table if it is still there. p.mu must be held.
func (p *Proxy) removeLocked(s *session) bool {
	if p.sessions[s.key] != s {
		return false
	}
	delete(p.sessions, s.key)
	p.stats.sessionsActive.Add(-1)
	p.signalDrainedLocked()
	return true
}

func (p *Proxy) signalDrainedLocked() {
	if p.drained != nil && len(p.sessions) == 0 {
		close(p.drained)
		p.drained = nil
	}
}

// now is the monotonic time since p.epoch, the unit of session activity stamps.
func (p *Proxy) now() int64 { return int64(time.Since(p.epoch)) }

// readLoop is the proxy's only reader of the listening socket. It forwards each datagram to its
// client's session, creating the session first if needed. It never blocks on an upstream: a
// datagram that cannot be sent at once is dropped.
func (p *Proxy) readLoop() {
	defer p.wg.Done()
	buf := make([]byte, maxDatagram)
	var fw forwarder
	fw.fn = fw.write // one method value for the life of the loop: no allocation per datagram
	for {
		n, client, err := p.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if p.closing.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Anything else is about one datagram (or a deadline set by someone else).
			p.log.Debug("udp read", "err", err)
			continue
		}
		p.stats.datagramsRx.Add(1)
		p.stats.bytesRx.Add(uint64(n))

		p.mu.Lock()
		s := p.sessions[client]
		p.mu.Unlock()
		if s == nil {
			if s = p.newSession(client); s == nil {
				p.stats.dropped.Add(1)
				continue
			}
		}
		s.last.Store(p.now())
		s.datagramsRx.Add(1)
		s.bytesRx.Add(int64(n))
		fw.pkt = buf[:n]
		if err := s.rc.Write(fw.fn); err != nil || fw.err != nil {
			// A full send buffer (EAGAIN), an ICMP error from an earlier datagram
			// (ECONNREFUSED) or a session closed under our feet: this datagram is lost.
			p.stats.dropped.Add(1)
			continue
		}
		s.upBytesSent.Add(int64(n))
	}
}

// forwarder writes one datagram to a session's connected socket without waiting: its fn runs
// inside syscall.RawConn.Write, and reports done after one attempt whatever the outcome.
type forwarder struct {
	pkt []byte
	err error
	fn  func(fd uintptr) bool
}

func (f *forwarder) write(fd uintptr) bool {
	f.err = writeNow(fd, f.pkt)
	return true
}

// newSession opens a session for client, or returns nil (counted) when it may not or cannot.
// Only readLoop calls it, so two sessions for one client cannot race.
func (p *Proxy) newSession(client netip.AddrPort) *session {
	cfg := p.cfg.Load()
	p.mu.Lock()
	refuse := p.closed || p.draining
	full := len(p.sessions) >= cfg.maxSessions()
	p.mu.Unlock()
	if refuse {
		return nil
	}
	if full {
		p.stats.sessionsOverflow.Add(1)
		return nil
	}

	var upstream netip.AddrPort
	var err error
	if cfg.Pick == nil {
		err = errors.New("no upstream picker")
	} else {
		upstream, err = cfg.Pick(netip.AddrPortFrom(client.Addr().Unmap(), client.Port()))
		if err == nil && !upstream.IsValid() {
			err = errors.New("no upstream picked")
		}
	}
	var conn *net.UDPConn
	if err == nil {
		conn, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(upstream))
	}
	var rc syscall.RawConn
	if err == nil {
		if rc, err = conn.SyscallConn(); err != nil {
			_ = conn.Close()
		}
	}
	if err != nil {
		// Counted, not logged: this happens per datagram while no upstream is available.
		p.stats.noRoute.Add(1)
		return nil
	}

	s := &session{
		p:           p,
		key:         client,
		upstream:    upstream,
		conn:        conn,
		rc:          rc,
		idleTimeout: int64(cfg.idleTimeout()),
		onEnd:       cfg.OnSessionEnd,
		start:       time.Now(),
	}
	s.last.Store(p.now())
	s.readReady = s.readReplies

	p.mu.Lock()
	if p.closed || p.draining {
		p.mu.Unlock()
		_ = conn.Close()
		return nil
	}
	p.sessions[client] = s
	p.stats.sessionsActive.Add(1)
	p.wg.Add(1)
	p.mu.Unlock()
	p.stats.sessionsTotal.Add(1)
	if p.log.Enabled(context.Background(), slog.LevelDebug) {
		p.log.Debug("udp session start", "client", client, "upstream", upstream)
	}
	go proxyReplies(s)
	return s
}

// sweep ends idle sessions. One ticker for all sessions: a datagram only stamps its session's
// last activity, it never touches a timer. A session ends between IdleTimeout and
// IdleTimeout plus one sweep interval after its last datagram.
func (p *Proxy) sweep() {
	defer p.wg.Done()
	interval := sweepInterval(p.cfg.Load().idleTimeout())
	t := time.NewTicker(interval)
	defer t.Stop()
	var expired []*session
	for {
		select {
		case <-p.done:
			return
		case <-t.C:
		}
		now := p.now()
		p.mu.Lock()
		for _, s := range p.sessions {
			if now-s.last.Load() >= s.idleTimeout {
				expired = append(expired, s)
			}
		}
		for _, s := range expired {
			p.stats.sessionsIdleTimeout.Add(1) // before Drain can see the table empty
			p.removeLocked(s)
		}
		p.mu.Unlock()
		for i, s := range expired {
			s.end("idle_timeout")
			expired[i] = nil
		}
		expired = expired[:0]
		if iv := sweepInterval(p.cfg.Load().idleTimeout()); iv != interval {
			interval = iv
			t.Reset(interval)
		}
	}
}

// sweepInterval is how often sessions are checked for idleness: every quarter of the idle
// timeout, so that a session outlives its timeout by at most a quarter of it, but no more often
// than every millisecond and at least every second (scanning 10,000 sessions takes well under a
// millisecond).
func sweepInterval(idle time.Duration) time.Duration {
	return min(max(idle/4, time.Millisecond), time.Second)
}

// session is one client's flow: its connected upstream socket and counters.
type session struct {
	p           *Proxy
	key         netip.AddrPort // client address as received
	upstream    netip.AddrPort
	conn        *net.UDPConn // connected to upstream; owned by the session
	rc          syscall.RawConn
	readReady   func(fd uintptr) bool // s.readReplies, bound once
	idleTimeout int64                 // nanoseconds
	onEnd       func(SessionInfo)
	start       time.Time

	last    atomic.Int64 // p.now() of the last datagram in either direction
	endOnce sync.Once
	reason  string // why the session ended; written in end before the socket closes
	readErr error  // set by readReplies on a socket error

	datagramsRx, bytesRx, datagramsTx, bytesTx atomic.Int64
	upBytesSent, upBytesRecv                   atomic.Int64
}

// end closes the session's socket, which ends proxyReplies. The first reason wins.
func (s *session) end(reason string) {
	s.endOnce.Do(func() {
		s.reason = reason
		_ = s.conn.Close()
	})
}

// proxyReplies copies the upstream's replies to the client until the session ends, then
// reports the session. It runs in its own goroutine per session.
func proxyReplies(s *session) {
	defer s.p.wg.Done()
	err := s.rc.Read(s.readReady)
	if s.readErr != nil {
		err = s.readErr
	}
	p := s.p
	p.mu.Lock()
	p.removeLocked(s) // when the socket failed by itself
	p.mu.Unlock()
	s.end("error")
	if s.reason == "error" {
		p.log.Debug("udp session error", "client", s.key, "upstream", s.upstream, "err", err)
	}

	info := SessionInfo{
		Client:                s.key,
		Upstream:              s.upstream,
		Start:                 s.start,
		Duration:              time.Since(s.start),
		Reason:                s.reason,
		DatagramsReceived:     s.datagramsRx.Load(),
		BytesReceived:         s.bytesRx.Load(),
		DatagramsSent:         s.datagramsTx.Load(),
		BytesSent:             s.bytesTx.Load(),
		UpstreamBytesSent:     s.upBytesSent.Load(),
		UpstreamBytesReceived: s.upBytesRecv.Load(),
	}
	if p.log.Enabled(context.Background(), slog.LevelDebug) {
		p.log.Debug("udp session end", "client", info.Client, "upstream", info.Upstream,
			"reason", info.Reason, "duration", info.Duration.Seconds(),
			"bytes_received", info.BytesReceived, "bytes_sent", info.BytesSent)
	}
	if s.onEnd != nil {
		s.onEnd(info)
	}
}

// bufPool holds receive buffers for replies. A session takes one only while its socket is
// readable, so memory follows traffic, not the number of sessions.
var bufPool = sync.Pool{New: func() any {
	b := make([]byte, maxDatagram)
	return &b
}}

// readReplies runs inside syscall.RawConn.Read whenever the upstream socket may be readable. It
// reads and forwards every queued datagram, then returns false to wait for more; the poller is
// edge-triggered, so stopping before the queue is empty could strand datagrams. It returns
// true (stop) only on a socket error.
func (s *session) readReplies(fd uintptr) bool {
	p := s.p
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	for {
		n, err := readNow(fd, *bp)
		switch {
		case err == nil:
		case errors.Is(err, syscall.EAGAIN):
			return false
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.ECONNREFUSED):
			// ICMP port unreachable for an earlier datagram: the upstream may come back, and
			// the session ends by idleness like any other.
			continue
		default:
			s.readErr = os.NewSyscallError("read", err)
			return true
		}
		s.last.Store(p.now())
		s.upBytesRecv.Add(int64(n))
		if _, err := p.conn.WriteToUDPAddrPort((*bp)[:n], s.key); err != nil {
			p.stats.dropped.Add(1)
			continue
		}
		s.datagramsTx.Add(1)
		s.bytesTx.Add(int64(n))
		p.stats.datagramsTx.Add(1)
		p.stats.bytesTx.Add(uint64(n))
	}
}
