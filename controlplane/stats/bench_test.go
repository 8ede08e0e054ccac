package stats

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
	reportv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/report/v1"
)

// busyReport is a report of an agent with 50 busy listeners and 50 clusters
// of 3 endpoints each.
func busyReport(node string, seq uint64) *reportv1.AgentReport {
	rep := &reportv1.AgentReport{NodeId: node, Labels: map[string]string{"dc": "dc" + node[len(node)-1:], "role": "edge"},
		Sequence: seq, Period: durationpb.New(5 * time.Second), BuildVersion: "v1.2.3"}
	for _, t := range []string{resource.ClusterType, resource.EndpointType, resource.ListenerType} {
		rep.Resources = append(rep.Resources, &reportv1.ResourceVersion{TypeUrl: t, Version: "42"})
	}
	for i := range 50 {
		rep.Listeners = append(rep.Listeners, &reportv1.ListenerStats{Name: fmt.Sprintf("l%d", i), DownstreamCxTotal: 100, DownstreamCxActive: 10,
			Http: &reportv1.HttpStats{RqTotal: 1000, Rq_2Xx: 990, Rq_5Xx: 10}})
		c := &reportv1.ClusterStats{Name: fmt.Sprintf("c%d", i), UpstreamCxTotal: 100, UpstreamCxConnectFail: 1, RxBytes: 1 << 20, TxBytes: 1 << 18}
		for j := range 3 {
			c.Endpoints = append(c.Endpoints, &reportv1.EndpointHealth{Address: fmt.Sprintf("10.0.%d.%d:8080", i, j), Healthy: true})
		}
		rep.Clusters = append(rep.Clusters, c)
	}
	return rep
}

// BenchmarkRecord: one busy agent's report.
func BenchmarkRecord(b *testing.B) {
	c := &clock{t: t0}
	a := NewAggregator(Options{Now: c.now})
	rep := busyReport("a1", 1)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		c.advance(5 * time.Second)
		rep.Sequence = uint64(i + 1)
		if err := a.Record(rep); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGetStats10000Agents: flotctl stats --by dc over 10,000 agents with
// five minutes of reports each.
func BenchmarkGetStats10000Agents(b *testing.B) {
	c := &clock{t: t0}
	a := NewAggregator(Options{Now: c.now, Fleet: func(map[string]string) []*adminv1.Agent { return nil }})
	fill(b, a, c, 10_000)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.GetStats(context.Background(), &adminv1.GetStatsRequest{GroupBy: "dc"}); err != nil {
			b.Fatal(err)
		}
	}
}

// fill records 5 minutes of reports (every 5s) for n agents.
func fill(b *testing.B, a *Aggregator, c *clock, n int) {
	reps := make([]*reportv1.AgentReport, n)
	for i := range reps {
		reps[i] = busyReport(fmt.Sprintf("agent-%05d", i), 0)
	}
	for seq := uint64(1); seq <= 60; seq++ {
		c.advance(5 * time.Second)
		for _, rep := range reps {
			rep.Sequence = seq
			if err := a.Record(rep); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkMemoryPerAgent reports the heap the aggregator keeps per agent
// with five minutes of reports (B/agent).
func BenchmarkMemoryPerAgent(b *testing.B) {
	const n = 2000
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		c := &clock{t: t0}
		a := NewAggregator(Options{Now: c.now})
		fill(b, a, c, n)
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "B/agent")
		runtime.KeepAlive(a)
	}
}
