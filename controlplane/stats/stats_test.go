package stats

import (
	"context"
	"math"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
	reportv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/report/v1"
)

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

var t0 = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

// report is a report of cx accepted connections, fail failed upstream
// connections out of up, and rq HTTP responses of which rq5 were 5xx.
func report(node string, labels map[string]string, seq uint64, period time.Duration, cx, up, fail, rq, rq5 uint64) *reportv1.AgentReport {
	return &reportv1.AgentReport{
		NodeId: node, Labels: labels, Sequence: seq, Period: durationpb.New(period), BuildVersion: "v1",
		Listeners: []*reportv1.ListenerStats{{Name: "l", DownstreamCxTotal: cx, DownstreamCxActive: 2,
			Http: &reportv1.HttpStats{RqTotal: rq, Rq_5Xx: rq5, Rq_2Xx: rq - rq5}}},
		Clusters: []*reportv1.ClusterStats{{Name: "c", UpstreamCxTotal: up, UpstreamCxConnectFail: fail, RxBytes: 100, TxBytes: 50,
			Endpoints: []*reportv1.EndpointHealth{{Address: "10.0.0.1:80", Healthy: true}, {Address: "10.0.0.2:80"}}}},
		Resources: []*reportv1.ResourceVersion{{TypeUrl: resource.ListenerType, Version: "3",
			LastNack: &reportv1.Nack{Version: "4", Message: strings.Repeat("x", 5000)}}},
	}
}

func newTestAggregator(c *clock, fleetAgents ...*adminv1.Agent) *Aggregator {
	return NewAggregator(Options{Now: c.now, Fleet: func(sel map[string]string) []*adminv1.Agent {
		var out []*adminv1.Agent
		for _, a := range fleetAgents {
			if matches(sel, a.GetLabels()) {
				out = append(out, a)
			}
		}
		return out
	}})
}

func record(t *testing.T, a *Aggregator, rep *reportv1.AgentReport) {
	t.Helper()
	if err := a.Record(rep); err != nil {
		t.Fatal(err)
	}
}

func getStats(t *testing.T, a *Aggregator, groupBy string, sel map[string]string) map[string]*adminv1.StatsGroup {
	t.Helper()
	resp, err := a.GetStats(context.Background(), &adminv1.GetStatsRequest{GroupBy: groupBy, Selector: sel})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*adminv1.StatsGroup{}
	for _, g := range resp.GetGroups() {
		out[g.GetKey()] = g
	}
	return out
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-6 }

// TestWindows: counts and rates over the 1m and 5m windows; a report that
// covers a longer period is spread over it; an agent that stopped sending
// counts its silence in its rates.
func TestWindows(t *testing.T) {
	c := &clock{t: t0}
	a := newTestAggregator(c)
	ams := map[string]string{"dc": "ams"}
	// 12 reports, 5s apart: 10 connections, 4 upstream attempts (1 failed),
	// 20 responses (2 5xx) each.
	for i := range 12 {
		c.advance(5 * time.Second)
		record(t, a, report("a1", ams, uint64(i+1), 5*time.Second, 10, 4, 1, 20, 2))
	}
	g := getStats(t, a, "", nil)["a1"]
	if g == nil {
		t.Fatal("no group for a1")
	}
	w1, w5 := g.GetWindows()[0], g.GetWindows()[1]
	if w1.GetWindow().AsDuration() != time.Minute || w5.GetWindow().AsDuration() != 5*time.Minute {
		t.Fatalf("windows %v %v", w1.GetWindow(), w5.GetWindow())
	}
	if w1.GetDownstreamCx() != 120 || w1.GetUpstreamCx() != 48 || w1.GetConnectFailures() != 12 || w1.GetHttpRequests() != 240 || w1.GetHttp_5Xx() != 24 {
		t.Fatalf("1m window %v", w1)
	}
	if !near(w1.GetConnectionsPerSecond(), 2) || !near(w1.GetRequestsPerSecond(), 4) || !near(w1.GetBytesPerSecond(), 30) ||
		!near(w1.GetConnectFailureRatio(), 0.25) || !near(w1.GetHttp_5XxRatio(), 0.1) {
		t.Fatalf("1m rates %v", w1)
	}
	// The 5m window covers only the minute the agent has reported.
	if w5.GetDownstreamCx() != 120 || !near(w5.GetConnectionsPerSecond(), 2) {
		t.Fatalf("5m window %v", w5)
	}
	if g.GetAgents() != 1 || g.GetDownstreamCxActive() != 2 || g.GetEndpointsHealthy() != 1 || g.GetEndpointsTotal() != 2 {
		t.Fatalf("group %v", g)
	}
	info := g.GetAgent()
	if info.GetBuildVersion() != "v1" || info.GetLabels()["dc"] != "ams" || len(info.GetResources()) != 1 ||
		len(info.GetResources()[0].GetLastNack().GetMessage()) > maxNackMessage+len("…") {
		t.Fatalf("agent info %v", info)
	}

	// 30s later with no report: the 1m window holds 30s of reports over 60s.
	c.advance(30 * time.Second)
	w1 = getStats(t, a, "", nil)["a1"].GetWindows()[0]
	if w1.GetDownstreamCx() != 60 || !near(w1.GetConnectionsPerSecond(), 1) {
		t.Fatalf("1m window after 30s of silence %v", w1)
	}

	// A report folding two minutes (the agent's queue was full) is spread
	// over them: half of it falls in the last minute.
	c.advance(90 * time.Second)
	record(t, a, report("a1", ams, 13, 2*time.Minute, 240, 0, 0, 0, 0))
	w1 = getStats(t, a, "", nil)["a1"].GetWindows()[0]
	if w1.GetDownstreamCx() != 120 || !near(w1.GetConnectionsPerSecond(), 2) {
		t.Fatalf("1m window of a folded report %v", w1)
	}
}

// TestGroups: by label (with agents missing the label), by config version
// from the fleet view, with a selector; agents gone for 10m are forgotten.
func TestGroups(t *testing.T) {
	c := &clock{t: t0}
	a := newTestAggregator(c,
		&adminv1.Agent{NodeId: "a1", Labels: map[string]string{"dc": "ams"}, ConfigVersion: 7},
		&adminv1.Agent{NodeId: "a2", Labels: map[string]string{"dc": "fra"}, ConfigVersion: 6},
	)
	c.advance(5 * time.Second)
	record(t, a, report("a1", map[string]string{"dc": "ams", "role": "edge"}, 1, 5*time.Second, 10, 0, 0, 0, 0))
	record(t, a, report("a2", map[string]string{"dc": "fra", "role": "edge"}, 1, 5*time.Second, 20, 0, 0, 0, 0))
	record(t, a, report("a3", map[string]string{"dc": "ams", "role": "edge"}, 1, 5*time.Second, 30, 0, 0, 0, 0))
	record(t, a, report("a4", nil, 1, 5*time.Second, 1, 0, 0, 0, 0))

	tests := []struct {
		name    string
		groupBy string
		sel     map[string]string
		want    map[string][2]uint64 // key → agents, downstream cx (1m)
	}{
		{name: "per agent", want: map[string][2]uint64{"a1": {1, 10}, "a2": {1, 20}, "a3": {1, 30}, "a4": {1, 1}}},
		{name: "by dc", groupBy: "dc", want: map[string][2]uint64{"ams": {2, 40}, "fra": {1, 20}, "": {1, 1}}},
		{name: "by version", groupBy: "version", want: map[string][2]uint64{"7": {1, 10}, "6": {1, 20}, "": {2, 31}}},
		{name: "selector", groupBy: "role", sel: map[string]string{"dc": "ams"}, want: map[string][2]uint64{"edge": {2, 40}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := getStats(t, a, tt.groupBy, tt.sel)
			if len(got) != len(tt.want) {
				t.Fatalf("groups %v, want %v", keys(got), tt.want)
			}
			for k, w := range tt.want {
				g := got[k]
				if g.GetAgents() != uint32(w[0]) || g.GetWindows()[0].GetDownstreamCx() != w[1] {
					t.Errorf("group %q: %d agents, %d connections; want %v", k, g.GetAgents(), g.GetWindows()[0].GetDownstreamCx(), w)
				}
			}
		})
	}
	if g := getStats(t, a, "", nil)["a1"].GetAgent(); !g.GetConnected() || g.GetConfigVersion() != 7 {
		t.Errorf("a1 info %v, want connected at version 7", g)
	}

	c.advance(9 * time.Minute)
	record(t, a, report("a1", map[string]string{"dc": "ams"}, 2, 9*time.Minute, 1, 0, 0, 0, 0))
	c.advance(2 * time.Minute)
	if got := getStats(t, a, "", nil); len(got) != 1 || got["a1"] == nil {
		t.Fatalf("after 11 minutes: %v, want only a1", keys(got))
	}
	if n := a.Agents(); n != 1 {
		t.Fatalf("Agents() = %d, want 1", n)
	}
}

func keys(m map[string]*adminv1.StatsGroup) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestMissedReports(t *testing.T) {
	c := &clock{t: t0}
	a := newTestAggregator(c)
	for _, seq := range []uint64{1, 2, 5, 6, 1, 2} { // 3 and 4 lost; then the agent restarted
		c.advance(time.Second)
		record(t, a, report("a1", nil, seq, time.Second, 1, 0, 0, 0, 0))
	}
	if m := getStats(t, a, "", nil)["a1"].GetAgent().GetReportsMissed(); m != 2 {
		t.Fatalf("reports missed = %d, want 2", m)
	}
	// A sequence number far ahead saturates the count.
	record(t, a, report("a1", nil, math.MaxUint64, time.Second, 1, 0, 0, 0, 0))
	if m := getStats(t, a, "", nil)["a1"].GetAgent().GetReportsMissed(); m != math.MaxUint32 {
		t.Fatalf("reports missed after a jump = %d, want %d", m, uint64(math.MaxUint32))
	}
}

// TestCumulative: the cumulative counts hold every report since the agent
// was first seen, beyond the longest window, per agent and summed per
// group; two answers subtracted count what happened in between.
func TestCumulative(t *testing.T) {
	c := &clock{t: t0}
	a := newTestAggregator(c, &adminv1.Agent{NodeId: "a1", ConfigVersion: 7}, &adminv1.Agent{NodeId: "a2", ConfigVersion: 7})
	// Ten minutes of reports, 5s apart: 4 attempts (1 failed) and 20
	// responses (2 5xx) from a1, twice as many from a2.
	for i := range 120 {
		c.advance(5 * time.Second)
		record(t, a, report("a1", nil, uint64(i+1), 5*time.Second, 10, 4, 1, 20, 2))
		record(t, a, report("a2", nil, uint64(i+1), 5*time.Second, 10, 8, 2, 40, 4))
	}
	tests := []struct {
		groupBy, key               string
		upCx, fail, rq, rq5        uint64
		failRatio, ratio5xx        float64
		windowUpCx, windowRequests uint64
	}{
		{"", "a1", 480, 120, 2400, 240, 0.25, 0.1, 240, 1200},
		{"", "a2", 960, 240, 4800, 480, 0.25, 0.1, 480, 2400},
		{"version", "7", 1440, 360, 7200, 720, 0.25, 0.1, 720, 3600},
	}
	for _, tc := range tests {
		t.Run(tc.groupBy+"/"+tc.key, func(t *testing.T) {
			g := getStats(t, a, tc.groupBy, nil)[tc.key]
			cum := g.GetCumulative()
			if cum.GetUpstreamCx() != tc.upCx || cum.GetConnectFailures() != tc.fail || cum.GetHttpRequests() != tc.rq || cum.GetHttp_5Xx() != tc.rq5 ||
				!near(cum.GetConnectFailureRatio(), tc.failRatio) || !near(cum.GetHttp_5XxRatio(), tc.ratio5xx) {
				t.Errorf("cumulative %v", cum)
			}
			// The 5m window holds half of it.
			if w5 := g.GetWindows()[1]; w5.GetUpstreamCx() != tc.windowUpCx || w5.GetHttpRequests() != tc.windowRequests {
				t.Errorf("5m window %v", w5)
			}
		})
	}
	before := getStats(t, a, "", nil)["a1"].GetCumulative()
	c.advance(5 * time.Second)
	record(t, a, report("a1", nil, 121, 5*time.Second, 10, 4, 3, 20, 2))
	after := getStats(t, a, "", nil)["a1"].GetCumulative()
	if d := after.GetConnectFailures() - before.GetConnectFailures(); d != 3 {
		t.Errorf("connect failures between two answers = %d, want 3", d)
	}
}

func TestRejected(t *testing.T) {
	tooMany := report("a1", nil, 1, time.Second, 1, 0, 0, 0, 0)
	for range maxEntries {
		tooMany.Listeners = append(tooMany.Listeners, &reportv1.ListenerStats{Name: "x"})
	}
	eps := report("a1", nil, 1, time.Second, 1, 0, 0, 0, 0)
	for range maxEntries + 1 {
		eps.Clusters[0].Endpoints = append(eps.Clusters[0].Endpoints, &reportv1.EndpointHealth{})
	}
	tests := []struct {
		name string
		rep  *reportv1.AgentReport
		want string
	}{
		{name: "no node", rep: &reportv1.AgentReport{}, want: "node_id is empty"},
		{name: "long node", rep: &reportv1.AgentReport{NodeId: strings.Repeat("n", 300)}, want: "node_id is 300 bytes long"},
		{name: "listeners", rep: tooMany, want: `report from "a1": listeners: 1025 entries, at most 1024`},
		{name: "endpoints", rep: eps, want: `clusters[0] ("c"): endpoints`},
		{name: "label", rep: &reportv1.AgentReport{NodeId: "a1", Labels: map[string]string{"dc": strings.Repeat("v", 300)}}, want: `labels: "dc" is longer`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newTestAggregator(&clock{t: t0})
			err := a.Record(tt.rep)
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want InvalidArgument with %q", err, tt.want)
			}
		})
	}
	a := NewAggregator(Options{MaxAgents: 1})
	record(t, a, report("a1", nil, 1, time.Second, 1, 0, 0, 0, 0))
	if err := a.Record(report("a2", nil, 1, time.Second, 1, 0, 0, 0, 0)); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("a second agent over MaxAgents: %v, want ResourceExhausted", err)
	}
}

// TestReportStream: the service over gRPC counts accepted reports, ends a
// stream on a bad one, and the metrics count both.
func TestReportStream(t *testing.T) {
	a := NewAggregator(Options{})
	m := NewMetrics(nil)
	m.Watch(a)
	g := grpc.NewServer()
	a.Register(g)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := reportv1.NewReportServiceClient(conn)

	st, err := client.Report(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := st.Send(&reportv1.ReportRequest{Report: report("a1", nil, uint64(i+1), time.Second, 1, 0, 0, 0, 0)}); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := st.CloseAndRecv()
	if err != nil || resp.GetReceived() != 2 {
		t.Fatalf("CloseAndRecv = %v, %v; want 2 received", resp, err)
	}

	st, err = client.Report(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	st.Send(&reportv1.ReportRequest{Report: &reportv1.AgentReport{}})
	if _, err := st.CloseAndRecv(); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a report without node id: %v, want InvalidArgument", err)
	}
	if got, rej := testutil.ToFloat64(m.reports), testutil.ToFloat64(m.rejected); got != 2 || rej != 1 {
		t.Fatalf("reports received %v, rejected %v; want 2 and 1", got, rej)
	}
}

// TestMetrics: pushes and answers are counted per type; the fleet gauges
// count states per type. (The convergence histogram: metrics_test.go.)
func TestMetrics(t *testing.T) {
	agents := []*adminv1.Agent{
		{NodeId: "a1", Resources: []*adminv1.ResourceStatus{{TypeUrl: resource.ListenerType, State: adminv1.SyncState_SYNC_STATE_SYNCED}}},
		{NodeId: "a2", Resources: []*adminv1.ResourceStatus{{TypeUrl: resource.ListenerType, State: adminv1.SyncState_SYNC_STATE_NACKED}}},
	}
	m := NewMetrics(func(map[string]string) []*adminv1.Agent { return agents })
	m.Pushed("a1", resource.ListenerType, "1")
	m.Answered("a1", resource.ListenerType, "1", false)
	m.Answered("a2", resource.ListenerType, "2", true)

	reg := prometheus.NewRegistry()
	if err := m.Register(reg); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(m.pushes.WithLabelValues("lds")); got != 1 {
		t.Errorf("lds pushes = %v", got)
	}
	if a, n := testutil.ToFloat64(m.acks.WithLabelValues("lds")), testutil.ToFloat64(m.nacks.WithLabelValues("lds")); a != 1 || n != 1 {
		t.Errorf("lds acks %v nacks %v, want 1 and 1", a, n)
	}
	gauges := `
# HELP flotilla_controlplane_agents_connected Agents with an xDS stream to this control plane.
# TYPE flotilla_controlplane_agents_connected gauge
flotilla_controlplane_agents_connected 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(gauges), "flotilla_controlplane_agents_connected"); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "flotilla_controlplane_agents" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			var typ, st string
			for _, l := range mt.GetLabel() {
				if l.GetName() == "type" {
					typ = l.GetValue()
				} else {
					st = l.GetValue()
				}
			}
			found[typ+" "+st] = mt.GetGauge().GetValue()
		}
	}
	if found["lds SYNCED"] != 1 || found["lds NACKED"] != 1 || found["cds SYNCED"] != 0 || len(found) != 20 {
		t.Fatalf("agents gauges %v", found)
	}
}

// TestRecordBoundsNackVersion: a report whose last_nack.version is huge is rejected, so a
// reporter cannot pin memory through it (review of the stats aggregator).
func TestRecordBoundsNackVersion(t *testing.T) {
	a := NewAggregator(Options{})
	rep := &reportv1.AgentReport{NodeId: "a1", Resources: []*reportv1.ResourceVersion{{
		TypeUrl: "type.googleapis.com/envoy.config.listener.v3.Listener", Version: "1",
		LastNack: &reportv1.Nack{Version: strings.Repeat("9", 1<<20), Message: "x"},
	}}}
	if err := a.Record(rep); err == nil || !strings.Contains(err.Error(), "last_nack.version longer than") {
		t.Fatalf("Record() = %v, want the last_nack.version bound", err)
	}
}
