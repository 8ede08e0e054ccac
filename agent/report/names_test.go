package report

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flotilla-proxy/flotilla/agent/proxy"
)

// descRecorder is a Registerer that keeps the names of what is registered.
type descRecorder struct{ names map[string]bool }

func (d *descRecorder) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 64)
	go func() { c.Describe(ch); close(ch) }()
	for desc := range ch {
		s := desc.String()
		if _, rest, ok := strings.Cut(s, `fqName: "`); ok {
			name, _, _ := strings.Cut(rest, `"`)
			d.names[name] = true
		}
	}
	return nil
}

func (d *descRecorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		d.Register(c)
	}
}

func (d *descRecorder) Unregister(prometheus.Collector) bool { return true }

// TestSeriesExist: every series a report is read from is one the data plane
// registers, so a renamed metric fails here rather than silently zeroing
// the fleet's stats.
func TestSeriesExist(t *testing.T) {
	rec := &descRecorder{names: map[string]bool{}}
	m := proxy.NewManager(proxy.Options{Registerer: rec})
	t.Cleanup(func() { m.Shutdown(context.Background()) })
	for _, name := range []string{mDownstreamCx, mDownstreamActive, mSessTotal, mSessActive, mSessRxBytes, mSessTxBytes,
		mHTTPDownstreamXX, mUpstreamCx, mUpstreamFail, mUpstreamActive, mUpstreamTxBytes, mUpstreamRxBytes, mUpstreamRqXX, mEndpointHealthy} {
		if !rec.names[name] {
			t.Errorf("the data plane registers no %s", name)
		}
	}
}
