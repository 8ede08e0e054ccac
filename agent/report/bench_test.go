package report

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
)

// BenchmarkBuild: gathering and diffing a busy agent's registry (50 HTTP
// listeners, 50 clusters of 3 endpoints) into a report; reports its size.
func BenchmarkBuild(b *testing.B) {
	dp := newDataPlane()
	r, err := New(Options{NodeID: "a1", Servers: []string{"127.0.0.1:1"}, Interval: time.Second, Gatherer: dp.reg})
	if err != nil {
		b.Fatal(err)
	}
	bump := func() {
		for i := range 50 {
			l, c := fmt.Sprintf("l%d", i), fmt.Sprintf("c%d", i)
			dp.cx.WithLabelValues(l).Add(10)
			dp.active.WithLabelValues(l).Set(3)
			dp.httpXX.WithLabelValues(l, "2xx").Add(100)
			dp.httpXX.WithLabelValues(l, "5xx").Add(1)
			dp.up.WithLabelValues(c).Add(10)
			dp.rx.WithLabelValues(c).Add(1 << 20)
			dp.tx.WithLabelValues(c).Add(1 << 16)
			for j := range 3 {
				dp.endpointHealthy.WithLabelValues(c, fmt.Sprintf("10.0.%d.%d:8080", i, j)).Set(1)
			}
		}
	}
	var size int
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		bump()
		b.StartTimer()
		cur, rep, err := r.build(time.Now())
		if err != nil {
			b.Fatal(err)
		}
		r.base = cur
		size = proto.Size(rep)
	}
	b.ReportMetric(float64(size), "bytes/report")
}
