package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
)

// reportTimeout bounds how long traffic takes to show up in flotctl stats:
// agents report every 5s by default.
const reportTimeout = 30 * time.Second

// TestStatsAndConvergence: with two agents, `flotctl wait --for=converged`
// exits 0 once both run the applied version; traffic through an agent shows
// up in `flotctl stats`; the control plane's /metrics has a convergence
// observation per agent; a version one agent NACKs (its listener's port is
// taken) makes wait exit 1 naming that agent and the NACK, while the other
// agent converges.
func TestStatsAndConvergence(t *testing.T) {
	f := startFleet(t, 2)
	cp := f.cp

	r := cp.flotctl(t, "wait", "--for=converged", "--timeout", "60s")
	if r.code != 0 || !strings.Contains(r.stdout, "converged: 2 agents run version 1") {
		t.Fatalf("flotctl wait: %s", r)
	}
	for i := range 5 {
		if err := expectEcho(f.ports["a1"], "b1")(); err != nil {
			t.Fatalf("connection %d through a1: %v", i, err)
		}
	}

	var a1 *adminv1.StatsGroup
	waitFor(t, reportTimeout, "a1's connections in flotctl stats", func() error {
		resp, err := stats(t, cp)
		if err != nil {
			return err
		}
		for _, g := range resp.GetGroups() {
			if g.GetKey() == "a1" {
				a1 = g
			}
		}
		if a1 == nil {
			return fmt.Errorf("no stats for a1: %v", resp)
		}
		if w := a1.GetWindows()[0]; w.GetDownstreamCx() < 5 || w.GetConnectionsPerSecond() <= 0 || w.GetUpstreamCx() < 5 {
			return fmt.Errorf("a1's 1m window: %v", w)
		}
		return nil
	})
	if info := a1.GetAgent(); !info.GetConnected() || info.GetConfigVersion() != 1 || info.GetLabels()["dc"] != "ams" {
		t.Errorf("a1 as flotctl stats shows it: %v", info)
	}
	t.Logf("flotctl stats:\n%s", cp.flotctl(t, "stats").stdout)
	r = cp.flotctl(t, "stats", "--by", "dc")
	if r.code != 0 || !strings.Contains(lineWith(r.stdout, "ams "), "ams  ") {
		t.Errorf("flotctl stats --by dc: %s", r)
	}
	if fields := strings.Fields(lineWith(r.stdout, "ams ")); len(fields) < 2 || fields[1] != "2" {
		t.Errorf("flotctl stats --by dc: want 2 agents in ams:\n%s", r.stdout)
	}

	r = cp.flotctl(t, "stats", "--by", "version", "-o", "json")
	var cohorts adminv1.GetStatsResponse
	if err := protojson.Unmarshal([]byte(r.stdout), &cohorts); err != nil || r.code != 0 {
		t.Fatalf("flotctl stats --by version -o json: %v\n%s", err, r)
	}
	if g := cohorts.GetGroups(); len(g) != 1 || g[0].GetKey() != "1" || g[0].GetAgents() != 2 {
		t.Errorf("cohorts %v, want both agents on version 1", g)
	}

	if n, err := cpMetric(cp, "flotilla_controlplane_proxy_convergence_seconds_count"); err != nil || n < 2 {
		t.Fatalf("convergence observations = %v (%v), want at least 2", n, err)
	}
	if n, err := cpMetric(cp, `flotilla_controlplane_agents{state="SYNCED",type="lds"}`); err != nil || n != 2 {
		t.Errorf("agents SYNCED for LDS = %v (%v), want 2", n, err)
	}

	// Version 2 moves a1's listener to a port something else holds.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := f.cfg
	cfg.listeners = append([]listener(nil), f.cfg.listeners...)
	cfg.listeners[0].address = busy.Addr().String()
	if v := cp.apply(t, cfg.write(t, "v2.yaml"), "a1 to a taken port"); v != 2 {
		t.Fatalf("apply stored version %d, want 2", v)
	}
	r = cp.flotctl(t, "wait", "--for=converged", "2", "--timeout", "5s")
	if r.code != 1 {
		t.Fatalf("flotctl wait on a NACKed version: %s", r)
	}
	t.Logf("flotctl wait on a NACKed version:\n%s", r.stderr)
	for _, want := range []string{"1 of 2 agents did not converge on version 2", "a1: LDS NACKED v2: ", "address already in use"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("flotctl wait stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	if strings.Contains(r.stderr, "a2:") {
		t.Errorf("a2 runs version 2 but flotctl wait names it:\n%s", r.stderr)
	}
	if r := cp.flotctl(t, "wait", "-l", "node=a2", "--timeout", "30s"); r.code != 0 {
		t.Errorf("flotctl wait for a2 alone: %s", r)
	}
	// a1 rejected version 2 and still runs version 1: its cohort is 1.
	if r := cp.flotctl(t, "wait", "1", "-l", "node=a1", "--timeout", "30s"); r.code != 0 {
		t.Errorf("flotctl wait 1 for a1: %s", r)
	}
	r = cp.flotctl(t, "stats", "--by", "version", "-o", "json")
	cohorts.Reset()
	if err := protojson.Unmarshal([]byte(r.stdout), &cohorts); err != nil || r.code != 0 {
		t.Fatalf("flotctl stats --by version -o json: %v\n%s", err, r)
	}
	if g := cohorts.GetGroups(); len(g) != 2 || g[0].GetKey() != "1" || g[0].GetAgents() != 1 || g[1].GetKey() != "2" || g[1].GetAgents() != 1 {
		t.Errorf("cohorts %v, want a1 on version 1 and a2 on version 2", g)
	}
	if n, err := cpMetric(cp, `flotilla_controlplane_xds_nacks_total{type="lds"}`); err != nil || n < 1 {
		t.Errorf("LDS NACKs on /metrics = %v (%v), want at least 1", n, err)
	}

	// An agent that stopped is named as not connected, from its reports.
	f.agents[1].stop(t)
	waitFor(t, convergeTimeout, "a2 to disconnect", func() error {
		resp, err := cp.agents(t)
		if err != nil {
			return err
		}
		if n := len(resp.GetAgents()); n != 1 {
			return fmt.Errorf("%d agents connected", n)
		}
		return nil
	})
	r = cp.flotctl(t, "wait", "--timeout", "1s")
	if r.code != 1 || !strings.Contains(r.stderr, "a2: not connected (last report ") || !strings.Contains(r.stderr, "a1: LDS NACKED v2") {
		t.Errorf("flotctl wait with a2 gone: %s", r)
	}
}

// stats returns `flotctl stats -o json`.
func stats(t *testing.T, cp *controlPlane) (*adminv1.GetStatsResponse, error) {
	t.Helper()
	r := cp.flotctl(t, "stats", "-o", "json")
	if r.code != 0 {
		return nil, fmt.Errorf("flotctl stats: %s", r)
	}
	var resp adminv1.GetStatsResponse
	if err := protojson.Unmarshal([]byte(r.stdout), &resp); err != nil {
		return nil, fmt.Errorf("flotctl stats -o json: %v\n%s", err, r.stdout)
	}
	return &resp, nil
}

// cpMetric returns the value of one series on the control plane's /metrics,
// named with its labels in the exposition format's order.
func cpMetric(cp *controlPlane, series string) (float64, error) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + cp.metricsAddr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("no %s on the control plane's /metrics", series)
}
