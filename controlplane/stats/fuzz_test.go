package stats

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
	reportv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/report/v1"
)

// FuzzRecord: whatever an agent sends, Record either takes it or rejects it,
// and GetStats answers afterwards without panicking.
func FuzzRecord(f *testing.F) {
	for _, rep := range []*reportv1.AgentReport{
		report("a1", map[string]string{"dc": "ams"}, 1, 5*time.Second, 10, 4, 1, 20, 2),
		busyReport("a2", 7),
		{NodeId: "a3", Period: nil, Sequence: 1 << 63},
	} {
		b, err := proto.Marshal(rep)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var rep reportv1.AgentReport
		if err := proto.Unmarshal(data, &rep); err != nil {
			return
		}
		c := &clock{t: t0}
		a := NewAggregator(Options{Now: c.now})
		for range 3 {
			c.advance(time.Second)
			_ = a.Record(&rep)
		}
		for _, by := range []string{"", "dc", GroupByVersion} {
			if _, err := a.GetStats(context.Background(), &adminv1.GetStatsRequest{GroupBy: by}); err != nil {
				t.Fatal(err)
			}
		}
	})
}
