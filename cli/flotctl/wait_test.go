package flotctl

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/flotilla-proxy/flotilla/controlplane/admin"
	"github.com/flotilla-proxy/flotilla/controlplane/compiler"
	"github.com/flotilla-proxy/flotilla/controlplane/store"
	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
)

// staticStats answers GetStats with fixed groups, keeping the request; with
// bySelector, only the groups whose agent's labels match its selector.
type staticStats struct {
	groups     []*adminv1.StatsGroup
	bySelector bool
	last       *adminv1.GetStatsRequest
}

func (s *staticStats) GetStats(_ context.Context, req *adminv1.GetStatsRequest) (*adminv1.GetStatsResponse, error) {
	s.last = req
	groups := s.groups
	if s.bySelector {
		groups = nil
		for _, g := range s.groups {
			if compiler.Selects(req.GetSelector(), g.GetAgent().GetLabels()) {
				groups = append(groups, g)
			}
		}
	}
	return &adminv1.GetStatsResponse{Groups: groups, GroupBy: req.GetGroupBy(), Time: timestamppb.Now()}, nil
}

// startAdminWithStats is startAdmin with GetStats answered by st.
func startAdminWithStats(t *testing.T, st *staticStats, agents ...*adminv1.Agent) string {
	t.Helper()
	db, err := store.OpenBolt(filepath.Join(t.TempDir(), "flotilla.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	svc, err := admin.New(context.Background(), db, &fleet{agents: agents}, nil, admin.WithStats(st))
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	adminv1.RegisterAdminServiceServer(srv, svc)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

func agentAt(id string, version uint64, labels map[string]string, resources ...*adminv1.ResourceStatus) *adminv1.Agent {
	return &adminv1.Agent{NodeId: id, Labels: labels, ConfigVersion: version, Resources: resources}
}

func TestWait(t *testing.T) {
	ams, fra := map[string]string{"dc": "ams"}, map[string]string{"dc": "fra"}
	nacked := &adminv1.ResourceStatus{Short: "LDS", State: adminv1.SyncState_SYNC_STATE_NACKED,
		LastNack: &adminv1.Nack{Version: "2", Message: "listener \"web\": bind 127.0.0.1:80:\naddress already in use"}}
	stale := &adminv1.ResourceStatus{Short: "CDS", State: adminv1.SyncState_SYNC_STATE_STALE, Sent: "2", Acked: "1"}
	ber := map[string]string{"dc": "ber"}
	reported := func(id string, labels map[string]string, ago time.Duration) *adminv1.StatsGroup {
		g := &adminv1.StatsGroup{Key: id, Agent: &adminv1.AgentReportInfo{Labels: labels}}
		if ago > 0 {
			g.LastReport = timestamppb.New(time.Now().Add(-ago))
		}
		return g
	}
	st := &staticStats{bySelector: true, groups: []*adminv1.StatsGroup{
		reported("a1", ams, time.Second), reported("f1", fra, 0), reported("gone", fra, 3*time.Minute),
		reported("b1", ber, time.Second), reported("b2", ber, 3*time.Minute), reported("b3", ber, 4*time.Minute),
	}}
	server := startAdminWithStats(t, st,
		agentAt("a1", 2, ams), agentAt("a2", 2, ams),
		agentAt("f1", 0, fra, nacked), agentAt("f2", 1, fra, stale), agentAt("f3", 1, fra), agentAt("b1", 2, ber))
	dir := t.TempDir()
	for _, ep := range []string{"192.0.2.1:1", "192.0.2.2:1"} {
		writeFile(t, dir, "l.yaml", listenersYAML)
		writeFile(t, dir, "c.yaml", clustersYAML(ep))
		if r := flotctl(t, server, "apply", dir, "-m", "v"); r.code != 0 {
			t.Fatalf("apply: %+v", r)
		}
	}
	steps := []step{
		{name: "latest, converged", args: []string{"wait", "--for=converged", "-l", "dc=ams"},
			wantOut: []string{"converged: 2 agents run version 2"}, wantNoErr: true},
		// The agents that reported but are not connected run nothing: they
		// do not hold the wait, but a warning names them.
		{name: "converged, some not connected", args: []string{"wait", "-l", "dc=ber"},
			wantOut: []string{"converged: 1 agent runs version 2"},
			wantErr: []string{"warning: 2 agents reported in the last 10 minutes but are not connected: " +
				"b2 (last report 3m ago), b3 (last report 4m ago)\n"}, wantLines: 1},
		{name: "older version", args: []string{"wait", "v1", "--selector", "dc=fra", "--timeout", "200ms"}, wantCode: ExitFailure,
			wantErr: []string{"1 of 3 agents matching the selector did not converge on version 1 within 200ms",
				`f1: LDS NACKED v2: listener "web": bind 127.0.0.1:80:; address already in use`,
				"gone: not connected (last report 3m ago)"}},
		{name: "latest, lagging", args: []string{"wait", "-l", "dc=fra", "--timeout", "100ms"}, wantCode: ExitFailure,
			wantErr: []string{"3 of 3 agents", "f2: CDS STALE (sent v2, acked v1)",
				"f3: runs version 1; version 2 was not pushed to its group"}},
		{name: "nobody", args: []string{"wait", "-l", "dc=nowhere", "--timeout", "100ms"}, wantCode: ExitFailure,
			wantErr: []string{"no agent matching the selector is connected after 100ms"}},
		{name: "bad condition", args: []string{"wait", "--for=ready"}, wantCode: ExitUsage, wantErr: []string{"--for must be converged"}},
		{name: "bad version", args: []string{"wait", "seven"}, wantCode: ExitUsage, wantErr: []string{"VERSION must be a version number"}},
		{name: "two versions", args: []string{"wait", "1", "2"}, wantCode: ExitUsage, wantErr: []string{"at most one VERSION"}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) { s.check(t, flotctl(t, server, s.args...)) })
	}
}

func TestStats(t *testing.T) {
	window := func(d time.Duration, cps float64, up, fail, rq, rq5 uint64) *adminv1.WindowStats {
		ws := &adminv1.WindowStats{Window: durationpb.New(d), ConnectionsPerSecond: cps, BytesPerSecond: 2048,
			UpstreamCx: up, ConnectFailures: fail, HttpRequests: rq, Http_5Xx: rq5}
		if up > 0 {
			ws.ConnectFailureRatio = float64(fail) / float64(up)
		}
		if rq > 0 {
			ws.Http_5XxRatio = float64(rq5) / float64(rq)
		}
		return ws
	}
	st := &staticStats{groups: []*adminv1.StatsGroup{
		{Key: "a1", Agents: 1, DownstreamCxActive: 3, EndpointsHealthy: 1, EndpointsTotal: 2, LastReport: timestamppb.New(time.Now().Add(-2 * time.Second)),
			Windows: []*adminv1.WindowStats{window(time.Minute, 2.5, 10, 1, 0, 0), window(5*time.Minute, 0.5, 10, 1, 0, 0)},
			Agent:   &adminv1.AgentReportInfo{ConfigVersion: 7, Connected: true}},
		{Key: "a2", Agents: 1, Windows: []*adminv1.WindowStats{window(time.Minute, 0, 0, 0, 100, 5), window(5*time.Minute, 0, 0, 0, 100, 5)},
			Agent: &adminv1.AgentReportInfo{}},
	}}
	server := startAdminWithStats(t, st)
	r := flotctl(t, server, "stats", "-l", "dc=ams")
	step{wantOut: []string{"AGENT", "VERSION", "(window 1m)", "a1", "v7", "2.50", "2.00KiB", "10.0%", "1/2", "2s ago",
		"a2", "- (disconnected)", "5.0%"}, wantNoErr: true}.check(t, r)
	if st.last.GetSelector()["dc"] != "ams" || st.last.GetGroupBy() != "" {
		t.Errorf("request %v", st.last)
	}
	r = flotctl(t, server, "stats", "--by", "dc", "--window", "5m")
	step{wantOut: []string{"DC", "AGENTS", "(window 5m)", "0.50"}, wantNoErr: true}.check(t, r)
	if st.last.GetGroupBy() != "dc" {
		t.Errorf("request %v", st.last)
	}
	r = flotctl(t, server, "stats", "-o", "json")
	step{wantOut: []string{`"connections_per_second": 2.5`, `"key": "a1"`}, wantNoErr: true}.check(t, r)

	st.groups = nil
	r = flotctl(t, server, "stats")
	step{wantOut: []string{"no agent reported"}, wantNoErr: true}.check(t, r)
	if strings.Contains(r.stdout, "AGENT") {
		t.Errorf("header without rows:\n%s", r.stdout)
	}
}
