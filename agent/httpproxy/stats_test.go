package httpproxy_test

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flotilla-proxy/flotilla/agent/httpproxy"
	"github.com/flotilla-proxy/flotilla/agent/httproute"
)

// counter returns the value of a counter with the given labels, 0 if absent.
func counter(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue metrics
				}
			}
			if m.Counter != nil {
				return m.GetCounter().GetValue()
			}
			if m.Histogram != nil {
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return 0
}

func TestStats(t *testing.T) {
	be := startEcho(t, "be")
	reg := prometheus.NewRegistry()
	m := httpproxy.NewMetrics(reg, nil)
	route := fwd("api", "/api", "be")
	route.Forward.Retry = &httproute.RetryPolicy{On: map[string]bool{httproute.RetryConnectFailure: true}, NumRetries: 1}
	p := startProxyMetrics(t, &httpproxy.Config{Listener: "web", Manager: manager(), Table: table(route)}, nil, m,
		cluster{Cluster: httpproxy.Cluster{Name: "be"}, endpoints: []string{addrOf(be), deadAddr(t)}})
	for range 4 {
		do(t, noRedirect(), newRequest(t, "GET", p.url("/api/x"), nil))
	}
	do(t, noRedirect(), newRequest(t, "GET", p.url("/nothing"), nil))
	for _, tt := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"flotilla_agent_http_downstream_rq_total", map[string]string{"listener": "web"}, 5},
		{"flotilla_agent_http_downstream_rq_xx", map[string]string{"listener": "web", "response_code_class": "2xx"}, 4},
		{"flotilla_agent_http_downstream_rq_xx", map[string]string{"listener": "web", "response_code_class": "4xx"}, 1},
		{"flotilla_agent_http_downstream_rq_time_seconds", map[string]string{"listener": "web"}, 5},
		{"flotilla_agent_vhost_rq_total", map[string]string{"virtual_host": "all", "route": "api", "response_code_class": "2xx"}, 4},
		{"flotilla_agent_upstream_rq_xx", map[string]string{"cluster": "be", "response_code_class": "2xx"}, 4},
	} {
		if got := counter(t, reg, tt.name, tt.labels); got != tt.want {
			t.Errorf("%s%v = %v, want %v", tt.name, tt.labels, got, tt.want)
		}
	}
	// Round robin (which retries advance too) sends some requests to the dead endpoint
	// first: each costs one more upstream request, and a retry.
	retries := counter(t, reg, "flotilla_agent_upstream_rq_retry", map[string]string{"cluster": "be"})
	total := counter(t, reg, "flotilla_agent_upstream_rq_total", map[string]string{"cluster": "be"})
	if retries < 1 || total != 4+retries {
		t.Errorf("upstream_rq_retry = %v, upstream_rq_total = %v; want >= 1 and 4 + retries", retries, total)
	}
}

// TestRetryBudget: with room for one request being retried, a second request that needs a
// retry while the first is retrying is refused one (upstream_rq_retry_overflow).
func TestRetryBudget(t *testing.T) {
	stall := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(stall) }) })
	slow := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-stall:
		case <-r.Context().Done():
		}
	}))
	reg := prometheus.NewRegistry()
	m := httpproxy.NewMetrics(reg, nil)
	route := fwd("r", "/", "slow")
	route.Forward.Timeout = time.Second
	route.Forward.Retry = &httproute.RetryPolicy{On: map[string]bool{httproute.Retry5xx: true}, NumRetries: 100, PerTryTimeout: 100 * time.Millisecond}
	p := startProxyMetrics(t, &httpproxy.Config{Listener: "web", Manager: manager(), Table: table(route)}, nil, m,
		cluster{Cluster: httpproxy.Cluster{Name: "slow", RetryBudgetPercent: 0.001, RetryBudgetMinConcurrency: 1}, endpoints: []string{slow.addr}})
	first := make(chan int, 1)
	go func() {
		resp, err := noRedirect().Get(p.url("/a"))
		if err != nil {
			first <- 0
			return
		}
		resp.Body.Close()
		first <- resp.StatusCode
	}()
	waitFor(t, 5*time.Second, "the first request to retry", func() bool {
		return counter(t, reg, "flotilla_agent_upstream_rq_retry", map[string]string{"cluster": "slow"}) >= 1
	})
	start := time.Now()
	resp, body := do(t, noRedirect(), newRequest(t, "GET", p.url("/b"), nil))
	if resp.StatusCode != 504 || !strings.Contains(body, "timeout") {
		t.Errorf("second request: %d %q, want 504", resp.StatusCode, body)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("second request took %v: it was retried", d)
	}
	if got := counter(t, reg, "flotilla_agent_upstream_rq_retry_overflow", map[string]string{"cluster": "slow"}); got != 1 {
		t.Errorf("upstream_rq_retry_overflow = %v, want 1", got)
	}
	if status := <-first; status != 504 {
		t.Errorf("first request: %d, want 504 at the route timeout", status)
	}
	if got := counter(t, reg, "flotilla_agent_upstream_rq_timeout", map[string]string{"cluster": "slow"}); got != 1 {
		t.Errorf("upstream_rq_timeout = %v, want 1", got)
	}
}
