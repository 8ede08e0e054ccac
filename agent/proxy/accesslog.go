package proxy

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/flotilla-proxy/flotilla/agent/accesslog"
	"github.com/flotilla-proxy/flotilla/agent/runtime"
	"github.com/flotilla-proxy/flotilla/agent/udpproxy"
)

// Access logs. Every listener's connections (and UDP sessions) may have an access log file;
// the files are shared by path across listeners: one accesslog.Logger per path, opened by the
// Apply that first needs it (before anything changes, so a file that cannot be opened fails
// the Apply), kept across Applies that still use it, and closed when no graph uses it any
// more, after the drain timeout so that draining connections still get their lines. A path
// whose format changes gets a new Logger at once (the old one closes: one format per file).

// logSet holds the open access loggers by path. Apply calls prepare and then commit or
// abort, serialised by the Manager's mutex; closing timers take the set's own lock.
type logSet struct {
	log   *slog.Logger
	drain time.Duration

	mu   sync.Mutex
	open map[string]*openLog
}

// openLog is one open access log file.
type openLog struct {
	logger *accesslog.Logger
	format string
	unused *time.Timer // closes the logger once no graph has used it for the drain timeout
}

func newLogSet(log *slog.Logger, drain time.Duration) *logSet {
	return &logSet{log: log, drain: drain, open: map[string]*openLog{}}
}

// logPlan is what prepare opened for a graph: the loggers by path, and which of them are new.
type logPlan struct {
	loggers map[string]*accesslog.Logger
	fresh   map[string]*openLog
}

// prepare opens the loggers g needs that are not open yet (or whose format changed). On
// error it has closed what it opened and returns a *runtime.ResourceError naming the first
// listener that writes to the failing path.
func (s *logSet) prepare(g *runtime.Graph) (*logPlan, error) {
	plan := &logPlan{loggers: map[string]*accesslog.Logger{}, fresh: map[string]*openLog{}}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range g.Listeners() {
		for _, al := range listenerAccessLogs(l) {
			if plan.loggers[al.Path] != nil {
				continue
			}
			if o := s.open[al.Path]; o != nil && o.format == al.Format.String() {
				plan.loggers[al.Path] = o.logger
				continue
			}
			lg, err := accesslog.New(loggerPath(al.Path), al.Format)
			if err != nil {
				plan.abort()
				return nil, &runtime.ResourceError{TypeURL: resourcev3.ListenerType, Name: l.Name(), Err: fmt.Errorf("access log %s: %w", al.Path, err)}
			}
			plan.loggers[al.Path] = lg
			plan.fresh[al.Path] = &openLog{logger: lg, format: al.Format.String()}
		}
	}
	return plan, nil
}

// abort closes what prepare opened.
func (p *logPlan) abort() {
	for _, o := range p.fresh {
		o.logger.Close()
	}
}

// commit installs p: fresh loggers replace those of their path (closed at once: their
// format changed), loggers p no longer uses close after the drain timeout, and those p uses
// again stop counting down.
func (s *logSet) commit(p *logPlan) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for path, o := range p.fresh {
		if old := s.open[path]; old != nil {
			s.closeLocked(path, old)
		}
		s.open[path] = o
	}
	for path, o := range s.open {
		switch {
		case p.loggers[path] != nil:
			if o.unused != nil {
				o.unused.Stop()
				o.unused = nil
			}
		case o.unused == nil:
			o.unused = time.AfterFunc(s.drain, func() {
				s.mu.Lock()
				defer s.mu.Unlock()
				if s.open[path] == o {
					s.closeLocked(path, o)
					delete(s.open, path)
				}
			})
		}
	}
}

// closeLocked closes o and logs how many lines it dropped, if any.
func (s *logSet) closeLocked(path string, o *openLog) {
	if o.unused != nil {
		o.unused.Stop()
	}
	if err := o.logger.Close(); err != nil {
		s.log.Warn("access log: close failed", "path", path, "error", err)
	}
	if n := o.logger.Dropped(); n > 0 {
		s.log.Warn("access log dropped lines (output too slow)", "path", path, "lines", n)
	}
}

// closeAll closes every logger (Shutdown, once no connection is left).
func (s *logSet) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for path, o := range s.open {
		s.closeLocked(path, o)
		delete(s.open, path)
	}
}

// loggerPath maps the Envoy path of the agent's standard output to accesslog's name for it.
func loggerPath(path string) string {
	if path == runtime.Stdout {
		return "stdout"
	}
	return path
}

// listenerAccessLogs returns every access log a listener's filters write.
func listenerAccessLogs(l *runtime.Listener) []*runtime.AccessLog {
	if u := l.UDP(); u != nil {
		if u.AccessLog != nil {
			return []*runtime.AccessLog{u.AccessLog}
		}
		return nil
	}
	var out []*runtime.AccessLog
	chains := l.Chains()
	if d := l.DefaultChain(); d != nil {
		chains = append(chains, d)
	}
	for _, fc := range chains {
		if fc.TCP.AccessLog != nil {
			out = append(out, fc.TCP.AccessLog)
		}
	}
	return out
}

// status is nginx stream's $status for how a connection ended; chosen reports whether a
// filter chain was chosen (the listener filters were done).
func status(o *outcome, chosen bool) int {
	switch {
	case o.connected:
		return accesslog.StatusOK
	case errors.Is(o.err, errNoHealthyUpstream), errors.Is(o.err, errOverflow), errors.Is(o.err, errListenerLimit):
		return accesslog.StatusServiceUnavailable
	case errors.Is(o.err, errNoChain):
		return accesslog.StatusForbidden
	case errors.Is(o.err, errDownstreamTLS):
		return accesslog.StatusBadRequest
	case errors.Is(o.err, errUpstreamTLS):
		return accesslog.StatusBadGateway
	case !chosen:
		// A bad or missing PROXY header or ClientHello, a client that went away or never
		// spoke before the listener filters were done.
		return accesslog.StatusBadRequest
	case o.upstream.IsValid():
		return accesslog.StatusBadGateway
	}
	return accesslog.StatusInternalError
}

// accessLog writes the connection's access log line, if its listener (or chain) has one.
func (c *conn) accessLog(o *outcome) {
	c.mu.Lock()
	chain, cs, client, server, sni := c.chain, c.cluster, c.client, c.server, c.sni
	c.mu.Unlock()
	al := c.route.listener.AccessLog()
	if chain != nil {
		al = chain.TCP.AccessLog
	}
	if al == nil {
		return
	}
	lg := c.route.logs[al.Path]
	if lg == nil {
		return
	}
	if !client.IsValid() {
		client = addrPort(c.down.RemoteAddr())
		server = addrPort(c.down.LocalAddr())
	}
	e := accesslog.Entry{
		Start:                 c.start,
		Duration:              time.Since(c.start),
		Client:                client,
		Server:                server,
		Protocol:              "TCP",
		Status:                status(o, chain != nil),
		BytesSent:             o.toClient,
		BytesReceived:         o.fromClient,
		Upstream:              o.upstream,
		UpstreamBytesSent:     o.toUpstream,
		UpstreamBytesReceived: o.fromUpstream,
		SNI:                   sni,
		Listener:              c.route.listener.Name(),
	}
	if o.upstream.IsValid() {
		e.UpstreamConnectTime = o.connectTime
	}
	if chain != nil {
		e.FilterChain = chain.Name
		e.Cluster = cs.name
	}
	lg.Log(&e)
}

// udpSessionLogger returns the OnSessionEnd hook that logs a UDP listener's sessions, nil
// when it has no access log.
func udpSessionLogger(l *runtime.Listener, lg *accesslog.Logger, server netip.AddrPort) func(udpproxy.SessionInfo) {
	u := l.UDP()
	if u.AccessLog == nil || lg == nil {
		return nil
	}
	name, cluster := l.Name(), u.Cluster.Name()
	return func(s udpproxy.SessionInfo) {
		lg.Log(&accesslog.Entry{
			Start:                 s.Start,
			Duration:              s.Duration,
			Client:                s.Client,
			Server:                server,
			Protocol:              "UDP",
			Status:                accesslog.StatusOK,
			BytesSent:             s.BytesSent,
			BytesReceived:         s.BytesReceived,
			Upstream:              s.Upstream,
			UpstreamBytesSent:     s.UpstreamBytesSent,
			UpstreamBytesReceived: s.UpstreamBytesReceived,
			Listener:              name,
			Cluster:               cluster,
		})
	}
}
