// Package report sends the agent's statistics to the control plane: every
// interval it gathers the data plane's Prometheus registry (the same series
// /metrics shows), turns the counters into deltas since the previous report,
// adds endpoint health, the xDS version it runs per type and its last NACK,
// and sends the result on a long-lived ReportService stream
// (proto/flotilla/report/v1) to the control plane the xDS client talks to.
//
// Reporting never gets in the way of traffic or config: the ticker only
// gathers and hands the report to a small queue without blocking; one sender
// goroutine owns the stream and reconnects with backoff. When the queue is
// full (a slow or absent control plane) the report is dropped and counted,
// and its deltas are folded into the next one, so a control plane that comes
// back still sees every connection. A report that was queued but could not
// be sent is lost; the control plane sees the gap in Sequence.
//
// Metrics (on the registry given in Options.Registerer):
//
//	flotilla_agent_reports_sent_total                  reports sent on a stream
//	flotilla_agent_reports_dropped_total{reason}       queue_full (folded into the next) or send_failed (lost)
//	flotilla_agent_report_connected                    1 while a report stream is open
package report

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/flotilla-proxy/flotilla/agent/backoff"
	"github.com/flotilla-proxy/flotilla/agent/xdsclient"
	reportv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/report/v1"
)

// Options configure a Reporter. NodeID, Servers, Interval and Gatherer are required.
type Options struct {
	// NodeID is the agent's xDS node id.
	NodeID string
	// Labels are the agent's labels.
	Labels map[string]string
	// BuildVersion is the agent's build.
	BuildVersion string
	// Servers are the control planes (host:port), the xDS client's list.
	Servers []string
	// Current returns the control plane the xDS client is connected to, or
	// "" when none: reports follow it. Nil means the servers are tried in order.
	Current func() string
	// Status returns the xDS client's state (versions and NACKs per type).
	// Nil means reports carry no versions.
	Status func() xdsclient.Status
	// Interval is the time between reports.
	Interval time.Duration
	// Gatherer is the registry the data plane's metrics live in.
	Gatherer prometheus.Gatherer
	// Registerer receives the reporter's own metrics; nil means none.
	Registerer prometheus.Registerer
	// Credentials secure the connection; nil means plaintext, as for xDS.
	Credentials credentials.TransportCredentials
	// QueueSize is how many reports may wait for the stream; 0 means 4.
	QueueSize int
	// MaxListeners, MaxClusters and MaxEndpoints (per cluster) bound a
	// report; 0 means 256, 256 and 64.
	MaxListeners, MaxClusters, MaxEndpoints int
	// Logger receives stream failures; nil means slog.Default().
	Logger *slog.Logger
}

// Reporter gathers and sends reports. Create it with New and call Run once.
type Reporter struct {
	opts    Options
	log     *slog.Logger
	lim     limits
	started time.Time
	queue   chan *reportv1.AgentReport
	metrics *metrics

	// Owned by the Run goroutine (the ticker).
	base *sample // what the last queued report covered up to
	seq  uint64
}

// New checks opts and returns a Reporter; nothing is dialled until Run.
func New(opts Options) (*Reporter, error) {
	switch {
	case opts.NodeID == "":
		return nil, errors.New("report: node id is empty")
	case len(opts.Servers) == 0:
		return nil, errors.New("report: no control-plane address")
	case opts.Interval <= 0:
		return nil, fmt.Errorf("report: interval must be positive, got %s", opts.Interval)
	case opts.Gatherer == nil:
		return nil, errors.New("report: no metrics gatherer")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = 4
	}
	opts.Labels = maps.Clone(opts.Labels)
	r := &Reporter{
		opts:    opts,
		log:     opts.Logger,
		lim:     limits{listeners: orDefault(opts.MaxListeners, defaultMaxListeners), clusters: orDefault(opts.MaxClusters, defaultMaxClusters), endpoints: orDefault(opts.MaxEndpoints, defaultMaxEndpoints)},
		started: time.Now(),
		queue:   make(chan *reportv1.AgentReport, opts.QueueSize),
		metrics: newMetrics(),
	}
	if opts.Registerer != nil {
		for _, c := range []prometheus.Collector{r.metrics.sent, r.metrics.dropped, r.metrics.connected} {
			if err := opts.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("report: register metrics: %w", err)
			}
		}
	}
	return r, nil
}

func orDefault(v, d int) int {
	if v > 0 {
		return v
	}
	return d
}

// Run reports every interval (the first time after a random part of it)
// until ctx is done, then returns nil once its sender goroutine has stopped.
func (r *Reporter) Run(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.sendLoop(ctx)
	}()
	// The first report comes after a random part of the interval, so that
	// agents started together (a fleet rollout) do not report in lockstep.
	first := time.NewTimer(rand.N(r.opts.Interval) + time.Millisecond)
	select {
	case <-ctx.Done():
		first.Stop()
		<-done
		return nil
	case <-first.C:
		r.tick()
	}
	t := time.NewTicker(r.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			<-done
			return nil
		case <-t.C:
			r.tick()
		}
	}
}

// tick builds a report and queues it without blocking. When the queue is
// full the report is dropped and the baseline kept, so the next report
// carries its deltas too.
func (r *Reporter) tick() {
	cur, rep, err := r.build(time.Now())
	if err != nil {
		r.log.Warn("cannot gather metrics for the report", "error", err)
		return
	}
	select {
	case r.queue <- rep:
		r.base = cur
	default:
		r.seq-- // the number is reused by the next report: no gap
		r.metrics.dropped.WithLabelValues("queue_full").Inc()
	}
}

// build gathers the registry and returns the sample and the report of the
// deltas since the baseline.
func (r *Reporter) build(now time.Time) (*sample, *reportv1.AgentReport, error) {
	families, err := r.opts.Gatherer.Gather()
	if err != nil && len(families) == 0 {
		return nil, nil, err
	}
	// A partial gather (one collector failing) still reports the rest.
	cur := readSample(families, now)
	ls, cs, truncated := diff(cur, r.base, r.lim)
	since := r.started
	if r.base != nil {
		since = r.base.at
	}
	r.seq++
	rep := &reportv1.AgentReport{
		NodeId:       r.opts.NodeID,
		Labels:       r.opts.Labels,
		BuildVersion: r.opts.BuildVersion,
		Uptime:       durationpb.New(now.Sub(r.started)),
		SentAt:       timestamppb.New(now),
		Period:       durationpb.New(now.Sub(since)),
		Sequence:     r.seq,
		Listeners:    ls,
		Clusters:     cs,
		Truncated:    truncated,
	}
	if r.opts.Status != nil {
		st := r.opts.Status()
		for _, t := range xdsclient.Types {
			ts := st.Types[t]
			rv := &reportv1.ResourceVersion{TypeUrl: t, Version: ts.Version}
			if n := ts.LastNACK; n != nil {
				rv.LastNack = &reportv1.Nack{Version: n.Version, Message: n.Message, Time: timestamppb.New(n.Time)}
			}
			rep.Resources = append(rep.Resources, rv)
		}
	}
	return cur, rep, nil
}

// sendLoop keeps a stream open and sends queued reports on it until ctx is
// done. A failed stream is retried after an exponential backoff with full
// jitter (250ms doubling to 30s), reset by a stream that sent something.
func (r *Reporter) sendLoop(ctx context.Context) {
	b := backoff.Backoff{Min: 250 * time.Millisecond, Max: 30 * time.Second}
	warned := false
	for i := 0; ; i++ {
		addr := r.pick(i)
		sent, err := r.stream(ctx, addr)
		if ctx.Err() != nil {
			return
		}
		if sent > 0 {
			b.Reset()
			warned = false
		}
		wait := b.Next()
		// One warning per outage; the retries are debug lines.
		level := slog.LevelDebug
		if !warned {
			level, warned = slog.LevelWarn, true
		}
		r.log.Log(ctx, level, "report stream to the control plane failed", "address", addr,
			"reports_sent", sent, "error", err, "retry_in_seconds", wait.Seconds())
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// pick returns the control plane to report to: the xDS client's, else the
// servers in turn.
func (r *Reporter) pick(i int) string {
	if r.opts.Current != nil {
		if addr := r.opts.Current(); addr != "" {
			return addr
		}
	}
	return r.opts.Servers[i%len(r.opts.Servers)]
}

// errMoved ends a stream when the xDS client moved to another control plane.
var errMoved = errors.New("the xDS client moved to another control plane")

// stream opens one report stream to addr and sends queued reports on it
// until it fails, the xDS client moves to another control plane, or ctx is
// done. It returns how many reports it sent.
func (r *Reporter) stream(ctx context.Context, addr string) (sent int, err error) {
	creds := r.opts.Credentials
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds),
		// As for xDS: a control plane that vanished without a FIN is
		// noticed within 40s (flotilla-controlplane permits pings every 10s).
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}))
	if err != nil {
		return 0, fmt.Errorf("dial %s: %w", addr, err)
	}
	defer conn.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := reportv1.NewReportServiceClient(conn).Report(sctx)
	if err != nil {
		return 0, fmt.Errorf("open report stream to %s: %w", addr, err)
	}
	r.metrics.connected.Set(1)
	defer r.metrics.connected.Set(0)
	for {
		select {
		case <-ctx.Done():
			return sent, ctx.Err()
		case rep := <-r.queue:
			if r.opts.Current != nil {
				if cur := r.opts.Current(); cur != "" && cur != addr {
					r.requeue(rep)
					st.CloseSend()
					return sent, errMoved
				}
			}
			if err := st.Send(&reportv1.ReportRequest{Report: rep}); err != nil {
				r.metrics.dropped.WithLabelValues("send_failed").Inc()
				if errors.Is(err, io.EOF) {
					// The server ended the stream; its status says why.
					_, err = st.CloseAndRecv()
				}
				return sent, fmt.Errorf("send report: %w", err)
			}
			sent++
			r.metrics.sent.Inc()
		}
	}
}

// requeue puts a report back at the end of the queue, or drops it when the
// queue filled up meanwhile.
func (r *Reporter) requeue(rep *reportv1.AgentReport) {
	select {
	case r.queue <- rep:
	default:
		r.metrics.dropped.WithLabelValues("send_failed").Inc()
	}
}

// metrics are the reporter's own series.
type metrics struct {
	sent      prometheus.Counter
	dropped   *prometheus.CounterVec
	connected prometheus.Gauge
}

func newMetrics() *metrics {
	m := &metrics{
		sent: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "flotilla_agent", Name: "reports_sent_total",
			Help: "Stats reports sent to the control plane."}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "flotilla_agent", Name: "reports_dropped_total",
			Help: "Stats reports not sent: queue_full (the control plane is slow or away; the deltas go into the next report) or send_failed (lost)."},
			[]string{"reason"}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "flotilla_agent", Name: "report_connected",
			Help: "1 while a report stream to a control plane is open, else 0."}),
	}
	m.dropped.WithLabelValues("queue_full")
	m.dropped.WithLabelValues("send_failed")
	return m
}
