// Package stats is the control plane's side of the agents' report stream
// (proto/flotilla/report/v1) and its Prometheus metrics.
//
// An Aggregator serves ReportService on the xDS port: it keeps, per agent,
// the facts of its latest report (labels, build, uptime, versions, last NACK,
// open connections, endpoint health) and the counter deltas of the last five
// minutes, and answers the admin API's GetStats: counts and rates over
// sliding windows (1m and 5m) per agent, per config-version cohort or per
// value of any label, and the cumulative counts a caller subtracts to count
// what happened over a span of any length (the rollout analysis: a step's
// bake). A report's deltas are spread evenly over the period it
// covers, so a report that carries several intervals (the agent's queue was
// full) does not look like a burst. Agents that have not reported for ten
// minutes are forgotten.
//
// Metrics is a fleet.Observer: it counts xDS pushes, ACKs and NACKs per type,
// exports the fleet's sync states as gauges, and observes the convergence
// histogram flotilla_controlplane_proxy_convergence_seconds, the time from a
// config version's push to a connected agent to its ACK of all of its
// snapshot, like Istio's pilot_proxy_convergence_time.
package stats

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/flotilla-proxy/flotilla/controlplane/fleet"
	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
	reportv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/report/v1"
)

// GroupByVersion is the GetStats group_by that groups agents by the config
// version they run.
const GroupByVersion = "version"

// Limits on what one report may hold: reports are remote input.
const (
	maxNodeID      = 256
	maxLabels      = 64
	maxLabelLen    = 256
	maxResources   = 16
	maxEntries     = 1024 // listeners, clusters, endpoints per cluster
	maxNackMessage = 1024
	maxShortString = 256
)

// Options configure an Aggregator.
type Options struct {
	// Fleet lists the agents connected over xDS (xds.Server.Agents), for
	// their config versions; nil means none are known.
	Fleet func(selector map[string]string) []*adminv1.Agent
	// Windows are the sliding windows of GetStats; nil means 1m and 5m.
	Windows []time.Duration
	// Forget is how long an agent that stopped reporting is kept; 0 means 10m.
	Forget time.Duration
	// MaxAgents bounds how many agents are tracked; 0 means 100,000.
	MaxAgents int
	// Logger receives rejected reports; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Aggregator keeps the agents' reports. It is safe for concurrent use.
type Aggregator struct {
	reportv1.UnimplementedReportServiceServer

	opts    Options
	log     *slog.Logger
	now     func() time.Time
	windows []time.Duration
	longest time.Duration
	// spanWidth is how long a span may grow by merging consecutive
	// reports: a quarter of the shortest window, so that an agent costs
	// about 4 spans per shortest window of memory, whatever its interval.
	spanWidth time.Duration
	received  func() // counts an accepted report, for Metrics
	rejected  func()

	mu        sync.Mutex
	agents    map[string]*agentStats
	lastPrune time.Time
}

var _ reportv1.ReportServiceServer = (*Aggregator)(nil)

// agentStats is what is kept of one agent's reports. Its fields are laid
// out (and lastSeen and missed narrowed) to fit a 160-byte allocation.
type agentStats struct {
	labels     map[string]string
	build      string
	uptime     time.Duration
	resources  []*reportv1.ResourceVersion
	lastSeen   int64 // Unix nanoseconds
	lastSeq    uint64
	downActive uint64
	upActive   uint64
	missed     uint32 // saturates
	epHealthy  uint32
	epTotal    uint32
	truncated  bool
	spans      []span // oldest first, trimmed to the longest window
	cum        sums   // everything reported since the agent was first seen
}

func (ag *agentStats) seen() time.Time { return time.Unix(0, ag.lastSeen) }

// sums are the counts of an agent's reports since it was first seen: those
// the rollout analysis compares. They are integers, exact however long the
// agent reports.
type sums struct{ upCx, fail, rq, rq5 uint64 }

func (s *sums) add(o sums) {
	s.upCx += o.upCx
	s.fail += o.fail
	s.rq += o.rq
	s.rq5 += o.rq5
}

// span is one report's deltas (or a few consecutive ones) and the time they
// cover, (from, to], in Unix nanoseconds to keep it small.
type span struct {
	from, to int64
	t        totals
}

func (s span) start() time.Time { return time.Unix(0, s.from) }
func (s span) end() time.Time   { return time.Unix(0, s.to) }

// totals are an agent's counter deltas summed over its listeners and clusters.
type totals struct {
	downCx, upCx, fail, rx, tx, rq, rq2, rq4, rq5 float64
}

func (t *totals) add(o totals, f float64) {
	t.downCx += o.downCx * f
	t.upCx += o.upCx * f
	t.fail += o.fail * f
	t.rx += o.rx * f
	t.tx += o.tx * f
	t.rq += o.rq * f
	t.rq2 += o.rq2 * f
	t.rq4 += o.rq4 * f
	t.rq5 += o.rq5 * f
}

// NewAggregator returns an empty Aggregator.
func NewAggregator(opts Options) *Aggregator {
	a := &Aggregator{opts: opts, log: opts.Logger, now: opts.Now, windows: opts.Windows,
		agents: map[string]*agentStats{}, received: func() {}, rejected: func() {}}
	if a.log == nil {
		a.log = slog.Default()
	}
	if a.now == nil {
		a.now = time.Now
	}
	if len(a.windows) == 0 {
		a.windows = []time.Duration{time.Minute, 5 * time.Minute}
	}
	a.longest = slices.Max(a.windows)
	a.spanWidth = slices.Min(a.windows) / 4
	if a.opts.Forget <= 0 {
		a.opts.Forget = 10 * time.Minute
	}
	if a.opts.MaxAgents <= 0 {
		a.opts.MaxAgents = 100_000
	}
	return a
}

// Register registers ReportService on g (the xDS server's gRPC server).
func (a *Aggregator) Register(g *grpc.Server) { reportv1.RegisterReportServiceServer(g, a) }

// Report receives one agent's stream of reports. A report that breaks the
// limits ends the stream with InvalidArgument naming the field.
func (a *Aggregator) Report(st grpc.ClientStreamingServer[reportv1.ReportRequest, reportv1.ReportResponse]) error {
	var n uint64
	for {
		req, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return st.SendAndClose(&reportv1.ReportResponse{Received: n})
		}
		if err != nil {
			return err
		}
		if err := a.Record(req.GetReport()); err != nil {
			a.rejected()
			a.log.Warn("rejected an agent report", "node", truncate(req.GetReport().GetNodeId(), maxNodeID), "error", err)
			return err
		}
		a.received()
		n++
	}
}

// Record adds one report. The error is a gRPC status.
func (a *Aggregator) Record(rep *reportv1.AgentReport) error {
	if err := validate(rep); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	now := a.now()
	var t totals
	var cum sums
	var downActive, upActive uint64
	var healthy, total uint32
	for _, l := range rep.GetListeners() {
		t.downCx += float64(l.GetDownstreamCxTotal())
		t.rx += float64(l.GetRxBytes())
		t.tx += float64(l.GetTxBytes())
		h := l.GetHttp()
		rq, rq5 := h.GetRqTotal(), h.GetRq_5Xx()
		t.rq += float64(rq)
		t.rq2 += float64(h.GetRq_2Xx())
		t.rq4 += float64(h.GetRq_4Xx())
		t.rq5 += float64(rq5)
		cum.rq += rq
		cum.rq5 += rq5
		downActive += l.GetDownstreamCxActive()
	}
	for _, c := range rep.GetClusters() {
		up, fail := c.GetUpstreamCxTotal(), c.GetUpstreamCxConnectFail()
		t.upCx += float64(up)
		t.fail += float64(fail)
		cum.upCx += up
		cum.fail += fail
		t.rx += float64(c.GetRxBytes())
		t.tx += float64(c.GetTxBytes())
		upActive += c.GetUpstreamCxActive()
		for _, e := range c.GetEndpoints() {
			total++
			if e.GetHealthy() {
				healthy++
			}
		}
	}
	period := rep.GetPeriod().AsDuration()
	if period <= 0 || period > 24*time.Hour {
		period = time.Second
	}

	a.mu.Lock()
	defer a.mu.Unlock()
	a.pruneLocked(now)
	ag := a.agents[rep.GetNodeId()]
	if ag == nil {
		if len(a.agents) >= a.opts.MaxAgents {
			return status.Errorf(codes.ResourceExhausted, "report from %q: the control plane already tracks %d agents", rep.GetNodeId(), len(a.agents))
		}
		// Room for the spans of the longest window, so that the slice,
		// trimmed at the front, never grows.
		ag = &agentStats{spans: make([]span, 0, int(a.longest/a.spanWidth)+4)}
		a.agents[rep.GetNodeId()] = ag
	}
	seq := rep.GetSequence()
	if seq > ag.lastSeq+1 && ag.lastSeq != 0 {
		ag.missed += uint32(min(seq-ag.lastSeq-1, uint64(math.MaxUint32-ag.missed)))
	}
	ag.lastSeq = seq // a smaller number: the agent restarted
	if !maps.Equal(ag.labels, rep.GetLabels()) {
		ag.labels = maps.Clone(rep.GetLabels())
	}
	ag.build = rep.GetBuildVersion()
	ag.uptime = rep.GetUptime().AsDuration()
	// Keep copies of the known fields only: the report's message also holds any
	// unknown fields a sender added, which must not stay in memory.
	ag.resources = make([]*reportv1.ResourceVersion, 0, len(rep.GetResources()))
	for _, rv := range rep.GetResources() {
		kept := &reportv1.ResourceVersion{TypeUrl: rv.GetTypeUrl(), Version: rv.GetVersion()}
		if n := rv.GetLastNack(); n != nil {
			kept.LastNack = &reportv1.Nack{Version: n.GetVersion(), Message: truncate(n.GetMessage(), maxNackMessage), Time: n.GetTime()}
		}
		ag.resources = append(ag.resources, kept)
	}
	ag.truncated = rep.GetTruncated()
	ag.lastSeen = now.UnixNano()
	ag.cum.add(cum)
	ag.downActive, ag.upActive, ag.epHealthy, ag.epTotal = downActive, upActive, healthy, total
	// The deltas end now (the report just arrived) and cover period.
	from := now.Add(-period)
	// A span never reaches back before the previous one ended, and a gap
	// shorter than a second (network jitter) is no gap.
	if n := len(ag.spans); n > 0 && from.Before(ag.spans[n-1].end().Add(time.Second)) {
		from = ag.spans[n-1].end()
	}
	if !from.Before(now) {
		from = now.Add(-time.Millisecond)
	}
	if n := len(ag.spans); n > 0 && ag.spans[n-1].end().Equal(from) && now.Sub(ag.spans[n-1].start()) <= a.spanWidth {
		// A short report right after the last span: grow it.
		ag.spans[n-1].to = now.UnixNano()
		ag.spans[n-1].t.add(t, 1)
	} else {
		ag.spans = append(ag.spans, span{from: from.UnixNano(), to: now.UnixNano(), t: t})
	}
	cut := now.Add(-a.longest)
	i := 0
	for i < len(ag.spans) && !ag.spans[i].end().After(cut) {
		i++
	}
	ag.spans = slices.Delete(ag.spans, 0, i)
	return nil
}

// validate checks a report against the limits, naming the field at fault.
func validate(rep *reportv1.AgentReport) error {
	id := rep.GetNodeId()
	switch {
	case rep == nil:
		return errors.New("empty report")
	case id == "":
		return errors.New("report: node_id is empty")
	case len(id) > maxNodeID:
		return fmt.Errorf("report: node_id is %d bytes long, at most %d", len(id), maxNodeID)
	case len(rep.GetLabels()) > maxLabels:
		return fmt.Errorf("report from %q: labels: %d, at most %d", id, len(rep.GetLabels()), maxLabels)
	case len(rep.GetResources()) > maxResources:
		return fmt.Errorf("report from %q: resources: %d entries, at most %d", id, len(rep.GetResources()), maxResources)
	case len(rep.GetListeners()) > maxEntries:
		return fmt.Errorf("report from %q: listeners: %d entries, at most %d", id, len(rep.GetListeners()), maxEntries)
	case len(rep.GetClusters()) > maxEntries:
		return fmt.Errorf("report from %q: clusters: %d entries, at most %d", id, len(rep.GetClusters()), maxEntries)
	case len(rep.GetBuildVersion()) > maxShortString:
		return fmt.Errorf("report from %q: build_version is %d bytes long, at most %d", id, len(rep.GetBuildVersion()), maxShortString)
	}
	for k, v := range rep.GetLabels() {
		if len(k) > maxLabelLen || len(v) > maxLabelLen {
			return fmt.Errorf("report from %q: labels: %q is longer than %d bytes", id, truncate(k, 32), maxLabelLen)
		}
	}
	for i, c := range rep.GetClusters() {
		if len(c.GetEndpoints()) > maxEntries {
			return fmt.Errorf("report from %q: clusters[%d] (%q): endpoints: %d entries, at most %d", id, i, truncate(c.GetName(), 64), len(c.GetEndpoints()), maxEntries)
		}
	}
	for i, rv := range rep.GetResources() {
		if len(rv.GetTypeUrl()) > maxShortString || len(rv.GetVersion()) > maxShortString || len(rv.GetLastNack().GetVersion()) > maxShortString {
			return fmt.Errorf("report from %q: resources[%d]: type_url, version or last_nack.version longer than %d bytes", id, i, maxShortString)
		}
	}
	return nil
}

// truncate shortens s to n bytes of valid UTF-8.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }

// pruneLocked forgets agents that stopped reporting, at most once a minute.
func (a *Aggregator) pruneLocked(now time.Time) {
	if now.Sub(a.lastPrune) < time.Minute {
		return
	}
	a.lastPrune = now
	for id, ag := range a.agents {
		if now.Sub(ag.seen()) > a.opts.Forget {
			delete(a.agents, id)
		}
	}
}

// Agents returns how many agents reported in the last Forget period.
func (a *Aggregator) Agents() int {
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.pruneLocked(now)
	n := 0
	for _, ag := range a.agents {
		if now.Sub(ag.seen()) <= a.opts.Forget {
			n++
		}
	}
	return n
}

// groupAcc accumulates a StatsGroup: per window, the summed counts and the
// summed per-agent rates.
type groupAcc struct {
	g       *adminv1.StatsGroup
	windows []totals
	rates   []rates
	cum     sums
}

// rates are per-second rates.
type rates struct{ downCx, bytes, rq float64 }

// GetStats aggregates the reports of the agents matching the selector,
// grouped as req.group_by says.
func (a *Aggregator) GetStats(_ context.Context, req *adminv1.GetStatsRequest) (*adminv1.GetStatsResponse, error) {
	now := a.now()
	fleetView := map[string]*adminv1.Agent{}
	if a.opts.Fleet != nil {
		for _, ag := range a.opts.Fleet(req.GetSelector()) {
			fleetView[ag.GetNodeId()] = ag
		}
	}
	groups := map[string]*groupAcc{}
	a.mu.Lock()
	a.pruneLocked(now)
	for id, ag := range a.agents {
		if now.Sub(ag.seen()) > a.opts.Forget || !matches(req.GetSelector(), ag.labels) {
			continue
		}
		fv := fleetView[id]
		var key string
		switch by := req.GetGroupBy(); by {
		case "":
			key = id
		case GroupByVersion:
			if v := fv.GetConfigVersion(); v != 0 {
				key = strconv.FormatUint(v, 10)
			}
		default:
			key = ag.labels[by]
		}
		acc := groups[key]
		if acc == nil {
			acc = &groupAcc{g: &adminv1.StatsGroup{Key: key}, windows: make([]totals, len(a.windows)), rates: make([]rates, len(a.windows))}
			groups[key] = acc
		}
		g := acc.g
		g.Agents++
		g.DownstreamCxActive += ag.downActive
		g.UpstreamCxActive += ag.upActive
		g.EndpointsHealthy += ag.epHealthy
		g.EndpointsTotal += ag.epTotal
		acc.cum.add(ag.cum)
		if g.LastReport == nil || ag.seen().After(g.LastReport.AsTime()) {
			g.LastReport = timestamppb.New(ag.seen())
		}
		if req.GetGroupBy() == "" {
			g.Agent = agentInfo(ag, fv)
		}
		for i, w := range a.windows {
			t, covered := ag.window(now, w)
			acc.windows[i].add(t, 1)
			// Rates add up per agent: each agent's counts over the part
			// of the window its reports cover.
			if covered > 0 {
				r := &acc.rates[i]
				r.downCx += t.downCx / covered
				r.bytes += (t.rx + t.tx) / covered
				r.rq += t.rq / covered
			}
		}
	}
	a.mu.Unlock()

	resp := &adminv1.GetStatsResponse{GroupBy: req.GetGroupBy(), Time: timestamppb.New(now)}
	for _, key := range slices.Sorted(maps.Keys(groups)) {
		acc := groups[key]
		for i, w := range a.windows {
			t := acc.windows[i]
			ws := &adminv1.WindowStats{
				Window:          durationpb.New(w),
				DownstreamCx:    round(t.downCx),
				UpstreamCx:      round(t.upCx),
				ConnectFailures: round(t.fail),
				RxBytes:         round(t.rx),
				TxBytes:         round(t.tx),
				HttpRequests:    round(t.rq),
				Http_2Xx:        round(t.rq2),
				Http_4Xx:        round(t.rq4),
				Http_5Xx:        round(t.rq5),
			}
			if t.upCx > 0 {
				ws.ConnectFailureRatio = math.Min(1, t.fail/t.upCx)
			}
			if t.rq > 0 {
				ws.Http_5XxRatio = math.Min(1, t.rq5/t.rq)
			}
			r := acc.rates[i]
			ws.ConnectionsPerSecond, ws.BytesPerSecond, ws.RequestsPerSecond = r.downCx, r.bytes, r.rq
			acc.g.Windows = append(acc.g.Windows, ws)
		}
		acc.g.Cumulative = acc.cum.stats()
		resp.Groups = append(resp.Groups, acc.g)
	}
	return resp, nil
}

// stats are the sums as WindowStats without a window.
func (s sums) stats() *adminv1.WindowStats {
	ws := &adminv1.WindowStats{UpstreamCx: s.upCx, ConnectFailures: s.fail, HttpRequests: s.rq, Http_5Xx: s.rq5}
	if s.upCx > 0 {
		ws.ConnectFailureRatio = math.Min(1, float64(s.fail)/float64(s.upCx))
	}
	if s.rq > 0 {
		ws.Http_5XxRatio = math.Min(1, float64(s.rq5)/float64(s.rq))
	}
	return ws
}

// window sums the agent's deltas over (now-w, now], each span pro rata of
// its overlap, and returns the seconds of the window its spans cover.
func (ag *agentStats) window(now time.Time, w time.Duration) (totals, float64) {
	start := now.Add(-w)
	var t totals
	var covered time.Duration
	for _, s := range ag.spans {
		from := s.start()
		if from.Before(start) {
			from = start
		}
		if !s.end().After(from) {
			continue
		}
		overlap := s.end().Sub(from)
		covered += overlap
		t.add(s.t, float64(overlap)/float64(s.to-s.from))
	}
	// The time since the last report is covered too: nothing was counted
	// yet, and an idle agent's rate must fall.
	if n := len(ag.spans); n > 0 {
		if last := ag.spans[n-1].end(); last.After(start) && now.After(last) {
			covered += now.Sub(last)
		}
	}
	return t, covered.Seconds()
}

func agentInfo(ag *agentStats, fv *adminv1.Agent) *adminv1.AgentReportInfo {
	info := &adminv1.AgentReportInfo{
		Labels:        maps.Clone(ag.labels),
		BuildVersion:  ag.build,
		Uptime:        durationpb.New(ag.uptime),
		ConfigVersion: fv.GetConfigVersion(),
		Connected:     fv != nil,
		ReportsMissed: uint64(ag.missed),
		Truncated:     ag.truncated,
	}
	for _, rv := range ag.resources {
		rs := &adminv1.ResourceStatus{TypeUrl: rv.GetTypeUrl(), Short: fleet.ShortName(rv.GetTypeUrl()), Acked: rv.GetVersion()}
		if n := rv.GetLastNack(); n != nil {
			rs.LastNack = &adminv1.Nack{Version: n.GetVersion(), Message: n.GetMessage(), Time: n.GetTime()}
		}
		info.Resources = append(info.Resources, rs)
	}
	return info
}

func matches(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func round(f float64) uint64 {
	if f <= 0 {
		return 0
	}
	return uint64(math.Round(f))
}
