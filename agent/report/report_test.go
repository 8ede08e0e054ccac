package report

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"

	"github.com/flotilla-proxy/flotilla/agent/xdsclient"
	reportv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/report/v1"
)

// collector is a ReportService that keeps every report it receives.
type collector struct {
	reportv1.UnimplementedReportServiceServer
	mu      sync.Mutex
	reports []*reportv1.AgentReport
}

func (c *collector) Report(st grpc.ClientStreamingServer[reportv1.ReportRequest, reportv1.ReportResponse]) error {
	var n uint64
	for {
		req, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return st.SendAndClose(&reportv1.ReportResponse{Received: n})
		}
		if err != nil {
			return err
		}
		n++
		c.mu.Lock()
		c.reports = append(c.reports, req.GetReport())
		c.mu.Unlock()
	}
}

func (c *collector) all() []*reportv1.AgentReport {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*reportv1.AgentReport(nil), c.reports...)
}

// serve serves c on lis until the test ends.
func serve(t *testing.T, lis net.Listener, c *collector) {
	t.Helper()
	g := grpc.NewServer()
	reportv1.RegisterReportServiceServer(g, c)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
}

// dataPlane is a registry with the series the data plane writes.
type dataPlane struct {
	reg                       *prometheus.Registry
	cx, up, fail, rx, tx      *prometheus.CounterVec
	active                    *prometheus.GaugeVec
	httpXX                    *prometheus.CounterVec
	endpointHealthy           *prometheus.GaugeVec
	unrelatedButSameNamespace *prometheus.CounterVec
}

func newDataPlane() *dataPlane {
	c := func(name string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: name}, labels)
	}
	d := &dataPlane{
		reg:                       prometheus.NewRegistry(),
		cx:                        c(mDownstreamCx, "listener"),
		up:                        c(mUpstreamCx, "cluster"),
		fail:                      c(mUpstreamFail, "cluster"),
		rx:                        c(mUpstreamRxBytes, "cluster"),
		tx:                        c(mUpstreamTxBytes, "cluster"),
		active:                    prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: mDownstreamActive, Help: "a"}, []string{"listener"}),
		httpXX:                    c(mHTTPDownstreamXX, "listener", "response_code_class"),
		endpointHealthy:           prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: mEndpointHealthy, Help: "h"}, []string{"cluster", "endpoint"}),
		unrelatedButSameNamespace: c("flotilla_agent_no_healthy_upstream", "cluster"),
	}
	d.reg.MustRegister(d.cx, d.up, d.fail, d.rx, d.tx, d.active, d.httpXX, d.endpointHealthy, d.unrelatedButSameNamespace)
	return d
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// sum adds up a listener's downstream_cx_total deltas over reports.
func sum(reports []*reportv1.AgentReport, listener string) (cx uint64) {
	for _, r := range reports {
		for _, l := range r.GetListeners() {
			if l.GetName() == listener {
				cx += l.GetDownstreamCxTotal()
			}
		}
	}
	return cx
}

func startReporter(t *testing.T, opts Options) (*Reporter, *prometheus.Registry) {
	t.Helper()
	own := prometheus.NewRegistry()
	opts.Registerer = own
	r, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return r, own
}

// TestReports: reports carry deltas that add up to the counters, gauges and
// endpoint health as they are, the xDS state, and increasing sequence numbers.
func TestReports(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{}
	serve(t, lis, c)
	dp := newDataPlane()
	nack := &xdsclient.NACK{Version: "4", Message: "listener \"web\": port taken", Time: time.Now()}
	_, own := startReporter(t, Options{
		NodeID: "a1", Labels: map[string]string{"dc": "ams"}, BuildVersion: "v1.2.3",
		Servers: []string{lis.Addr().String()}, Interval: 10 * time.Millisecond, Gatherer: dp.reg,
		Status: func() xdsclient.Status {
			return xdsclient.Status{Types: map[string]xdsclient.TypeStatus{
				xdsclient.ListenerType: {Version: "3", LastNACK: nack},
				xdsclient.ClusterType:  {Version: "3"},
			}}
		},
	})
	dp.cx.WithLabelValues("web").Add(3)
	dp.active.WithLabelValues("web").Set(2)
	dp.httpXX.WithLabelValues("web", "2xx").Add(5)
	dp.httpXX.WithLabelValues("web", "5xx").Add(1)
	dp.up.WithLabelValues("backend").Add(4)
	dp.fail.WithLabelValues("backend").Add(1)
	dp.rx.WithLabelValues("backend").Add(1000)
	dp.endpointHealthy.WithLabelValues("backend", "127.0.0.1:1").Set(1)
	dp.endpointHealthy.WithLabelValues("backend", "127.0.0.1:2").Set(0)
	waitFor(t, "the first counters", func() bool { return sum(c.all(), "web") == 3 })
	dp.cx.WithLabelValues("web").Add(4)
	waitFor(t, "the next counters", func() bool { return sum(c.all(), "web") == 7 })

	reports := c.all()
	var http, up, fail, rx uint64
	for i, r := range reports {
		if r.GetSequence() != uint64(i+1) {
			t.Errorf("report %d has sequence %d", i, r.GetSequence())
		}
		if r.GetNodeId() != "a1" || r.GetLabels()["dc"] != "ams" || r.GetBuildVersion() != "v1.2.3" {
			t.Errorf("report %d identifies the agent as %q %v %q", i, r.GetNodeId(), r.GetLabels(), r.GetBuildVersion())
		}
		for _, l := range r.GetListeners() {
			if l.GetDownstreamCxActive() != 2 {
				t.Errorf("report %d: listener active = %d, want the gauge's 2", i, l.GetDownstreamCxActive())
			}
			http += l.GetHttp().GetRq_5Xx()*100 + l.GetHttp().GetRq_2Xx()
		}
		for _, cl := range r.GetClusters() {
			up += cl.GetUpstreamCxTotal()
			fail += cl.GetUpstreamCxConnectFail()
			rx += cl.GetRxBytes()
			if len(cl.GetEndpoints()) != 2 || !cl.GetEndpoints()[0].GetHealthy() || cl.GetEndpoints()[1].GetHealthy() {
				t.Errorf("report %d: endpoints %v", i, cl.GetEndpoints())
			}
		}
	}
	if http != 105 || up != 4 || fail != 1 || rx != 1000 {
		t.Errorf("deltas add up to http %d (want 105), upstream cx %d (4), connect failures %d (1), rx bytes %d (1000)", http, up, fail, rx)
	}
	last := reports[len(reports)-1]
	if got := len(last.GetResources()); got != len(xdsclient.Types) {
		t.Fatalf("%d resource versions, want %d", got, len(xdsclient.Types))
	}
	for _, rv := range last.GetResources() {
		if rv.GetTypeUrl() == xdsclient.ListenerType && (rv.GetVersion() != "3" || rv.GetLastNack().GetMessage() != nack.Message) {
			t.Errorf("LDS %v, want version 3 and the NACK", rv)
		}
	}
	if n, err := testutil.GatherAndCount(own, "flotilla_agent_reports_sent_total"); err != nil || n != 1 {
		t.Errorf("reports_sent_total: %d series, %v", n, err)
	}
}

// TestAbsentControlPlane: while the control plane does not answer, reports
// are dropped at the queue without blocking the ticker and counted; once it
// answers, the next report carries every delta that was dropped.
func TestAbsentControlPlane(t *testing.T) {
	// A socket that accepts TCP but speaks no HTTP/2 until serve is called:
	// the stream cannot open.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dp := newDataPlane()
	r, _ := startReporter(t, Options{NodeID: "a1", Servers: []string{lis.Addr().String()},
		Interval: 2 * time.Millisecond, Gatherer: dp.reg, QueueSize: 1})
	dp.cx.WithLabelValues("web").Add(5)
	dropped := r.metrics.dropped.WithLabelValues("queue_full")
	waitFor(t, "reports dropped at the queue", func() bool { return testutil.ToFloat64(dropped) >= 20 })
	dp.cx.WithLabelValues("web").Add(6)
	c := &collector{}
	serve(t, lis, c)
	waitFor(t, "every connection reported", func() bool { return sum(c.all(), "web") == 11 })
	if lost := testutil.ToFloat64(r.metrics.dropped.WithLabelValues("send_failed")); lost != 0 {
		t.Errorf("%v reports lost, want 0", lost)
	}
	for i, rep := range c.all() {
		if rep.GetSequence() != uint64(i+1) {
			t.Fatalf("report %d has sequence %d: queue drops must not leave gaps", i, rep.GetSequence())
		}
	}
}

func TestDiff(t *testing.T) {
	l := func(name string, cx, active uint64) map[string]*counters {
		return map[string]*counters{name: {cx: cx, active: active}}
	}
	tests := []struct {
		name      string
		cur, prev *sample
		lim       limits
		want      []string // listener:delta
		truncated bool
	}{
		{name: "first report counts everything", cur: &sample{listeners: l("a", 5, 0)}, want: []string{"a:5"}},
		{name: "delta", cur: &sample{listeners: l("a", 5, 0)}, prev: &sample{listeners: l("a", 3, 0)}, want: []string{"a:2"}},
		{name: "idle left out", cur: &sample{listeners: l("a", 5, 0)}, prev: &sample{listeners: l("a", 5, 0)}},
		{name: "open connections kept", cur: &sample{listeners: l("a", 5, 1)}, prev: &sample{listeners: l("a", 5, 0)}, want: []string{"a:0"}},
		{name: "reset counter counts from zero", cur: &sample{listeners: l("a", 2, 0)}, prev: &sample{listeners: l("a", 9, 0)}, want: []string{"a:2"}},
		{name: "truncated", cur: &sample{listeners: map[string]*counters{"a": {cx: 1}, "b": {cx: 1}, "c": {cx: 1}}},
			lim: limits{listeners: 2}, want: []string{"a:1", "b:1"}, truncated: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lim := tt.lim
			if lim.listeners == 0 {
				lim.listeners = 10
			}
			ls, _, truncated := diff(tt.cur, tt.prev, lim)
			var got []string
			for _, st := range ls {
				got = append(got, st.GetName()+":"+strconv.FormatUint(st.GetDownstreamCxTotal(), 10))
			}
			if !slices.Equal(got, tt.want) || truncated != tt.truncated {
				t.Errorf("got %v truncated=%v, want %v truncated=%v", got, truncated, tt.want, tt.truncated)
			}
		})
	}
}

func TestEndpointsBounded(t *testing.T) {
	eps := map[string]bool{}
	for i := range 100 {
		eps["10.0.0."+strconv.Itoa(i)+":80"] = true
	}
	_, cs, truncated := diff(&sample{clusters: map[string]*counters{"c": {endpoints: eps}}}, nil, limits{clusters: 1, endpoints: 64})
	if len(cs) != 1 || len(cs[0].GetEndpoints()) != 64 || !truncated {
		t.Fatalf("got %d clusters, truncated=%v", len(cs), truncated)
	}
}

// TestFollowsXDS: reports go to the control plane the xDS client is
// connected to, and move when it moves.
func TestFollowsXDS(t *testing.T) {
	var cols [2]*collector
	var addrs [2]string
	for i := range cols {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		cols[i], addrs[i] = &collector{}, lis.Addr().String()
		serve(t, lis, cols[i])
	}
	var mu sync.Mutex
	current := addrs[1] // not the first of Servers
	dp := newDataPlane()
	startReporter(t, Options{NodeID: "a1", Servers: addrs[:], Interval: 5 * time.Millisecond, Gatherer: dp.reg,
		Current: func() string {
			mu.Lock()
			defer mu.Unlock()
			return current
		}})
	dp.cx.WithLabelValues("web").Add(1)
	waitFor(t, "a report at the xDS client's control plane", func() bool { return sum(cols[1].all(), "web") == 1 })
	mu.Lock()
	current = addrs[0]
	mu.Unlock()
	dp.cx.WithLabelValues("web").Add(1)
	waitFor(t, "reports to follow xDS", func() bool { return sum(cols[0].all(), "web") >= 1 })
	if n := len(cols[0].all()); n == 0 {
		t.Fatal("no report at the new control plane")
	}
	if total := sum(cols[0].all(), "web") + sum(cols[1].all(), "web"); total != 2 {
		t.Errorf("%d connections reported over both control planes, want 2", total)
	}
}
