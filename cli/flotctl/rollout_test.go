package flotctl

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/flotilla-proxy/flotilla/controlplane/admin"
	"github.com/flotilla-proxy/flotilla/controlplane/store"
	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
)

func TestParseSteps(t *testing.T) {
	tests := []struct {
		in      string
		want    []uint32
		wantErr string
	}{
		{"1,10,50,100", []uint32{1, 10, 50, 100}, ""},
		{"34%, 100%", []uint32{34, 100}, ""},
		{"0,100", nil, `"0" is not a percentage in 1..100`},
		{"50,101", nil, `"101" is not a percentage`},
		{"ten", nil, `"ten" is not a percentage`},
	}
	for _, tt := range tests {
		got, err := parseSteps(tt.in)
		switch {
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("parseSteps(%q) = %v, %v; want an error with %q", tt.in, got, err, tt.wantErr)
		case tt.wantErr == "" && (err != nil || !slices.Equal(got, tt.want)):
			t.Errorf("parseSteps(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestProgressLine(t *testing.T) {
	base := func() *adminv1.Rollout {
		return &adminv1.Rollout{Id: 3, Version: 8, Steps: []uint32{10, 50, 100}, Step: 1, Bake: durationpb.New(2 * time.Minute),
			State: adminv1.RolloutState_ROLLOUT_STATE_RUNNING, Selected: 10, Assigned: 5, Ready: 4}
	}
	waiting := base()
	waiting.Phase = adminv1.RolloutPhase_ROLLOUT_PHASE_WAITING
	baking := base()
	baking.Phase, baking.Baked = adminv1.RolloutPhase_ROLLOUT_PHASE_BAKING, durationpb.New(70*time.Second)
	aborted := base()
	aborted.State, aborted.Reason = adminv1.RolloutState_ROLLOUT_STATE_ABORTED, "a1: LDS NACKED v8: bind: address already in use"
	done := base()
	done.State, done.Step, done.Selector = adminv1.RolloutState_ROLLOUT_STATE_COMPLETED, 2, map[string]string{"dc": "ams"}
	tests := []struct {
		name string
		r    *adminv1.Rollout
		bar  bool
		want string
	}{
		{"waiting", waiting, false, "rollout 3 v8: RUNNING step 2/3 (50%): waiting for ACKs, 4 of 5 assigned agents run v8 (10 selected)"},
		{"baking, bar", baking, true, "[##########..........] rollout 3 v8: RUNNING step 2/3 (50%): baking 1m10s of 2m0s, 5 agents on v8 (10 selected)"},
		{"aborted", aborted, false, "rollout 3 v8: ABORTED step 2/3 (50%): a1: LDS NACKED v8: bind: address already in use"},
		{"completed with selector", done, true, "[####################] rollout 3 v8: COMPLETED step 3/3 (100%): agents matching dc=ams run version 8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := progressLine(tt.r, tt.bar); got != tt.want {
				t.Errorf("progressLine =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

// startedRollouts is an admin.Rollouts that keeps the StartRollout requests
// and answers GetRollout with rollout, or with the last request's settings.
type startedRollouts struct {
	admin.Rollouts // nil: the methods these tests do not call

	mu      sync.Mutex
	reqs    []*adminv1.StartRolloutRequest
	rollout *adminv1.Rollout
}

func (s *startedRollouts) Start(_ context.Context, req *adminv1.StartRolloutRequest) (*adminv1.Rollout, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reqs = append(s.reqs, proto.Clone(req).(*adminv1.StartRolloutRequest))
	return &adminv1.Rollout{Id: uint64(len(s.reqs)), Version: req.GetVersion(), Steps: req.GetSteps(), Bake: req.GetBake(),
		State: adminv1.RolloutState_ROLLOUT_STATE_RUNNING}, nil
}

func (s *startedRollouts) Get(context.Context, uint64) (*adminv1.Rollout, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rollout == nil {
		return nil, errors.New("no rollout")
	}
	return s.rollout, nil
}

func (s *startedRollouts) Live(context.Context) (*adminv1.Rollout, error) { return nil, nil }

func (s *startedRollouts) last() *adminv1.StartRolloutRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reqs[len(s.reqs)-1]
}

// startAdminWithRollouts is startAdmin with the rollout RPCs answered by r.
func startAdminWithRollouts(t *testing.T, r admin.Rollouts) string {
	t.Helper()
	db, err := store.OpenBolt(filepath.Join(t.TempDir(), "flotilla.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	svc, err := admin.New(context.Background(), db, &fleet{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	svc.SetRollouts(r)
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

// TestRolloutStartFlags: the analysis settings and the ACK wait reach the
// StartRollout request; without --ack-wait the control plane's default
// stays (no ack_wait sent).
func TestRolloutStartFlags(t *testing.T) {
	rs := &startedRollouts{}
	server := startAdminWithRollouts(t, rs)
	tests := []struct {
		name    string
		args    []string
		drop    float64
		samples uint32
		ackWait *durationpb.Duration
	}{
		{"defaults", nil, 0.5, 20, nil},
		{"set", []string{"--max-active-drop-ratio", "0.3", "--min-samples", "50", "--ack-wait", "45s"}, 0.3, 50, durationpb.New(45 * time.Second)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := flotctl(t, server, append([]string{"rollout", "start", "2"}, tt.args...)...)
			if r.code != 0 || !strings.Contains(r.stdout, "started: version 2") {
				t.Fatalf("flotctl rollout start: %+v", r)
			}
			req := rs.last()
			if req.GetMaxActiveDropRatio() != tt.drop || req.GetMinSamples() != tt.samples || !proto.Equal(req.GetAckWait(), tt.ackWait) {
				t.Errorf("request %v, want max_active_drop_ratio %v, min_samples %d, ack_wait %v", req, tt.drop, tt.samples, tt.ackWait)
			}
		})
	}
}

// TestRolloutStatusShowsTheAnalysis: status prints the thresholds, the ACK
// wait and what the last analysis judged or skipped.
func TestRolloutStatusShowsTheAnalysis(t *testing.T) {
	rs := &startedRollouts{rollout: &adminv1.Rollout{Id: 4, Version: 8, FromVersion: 7, Steps: []uint32{10, 100}, Step: 1,
		Bake: durationpb.New(time.Minute), State: adminv1.RolloutState_ROLLOUT_STATE_COMPLETED,
		MaxConnectFailureRatio: 0.05, Max_5XxRatio: 0.05, MaxActiveDropRatio: 0.5, MinSamples: 20, AckWait: durationpb.New(45 * time.Second),
		Analysis: "step 2 (100%) over 1m0s: 10 canaries against 0 baseline agents on v7; connect failures not judged: 3 attempts, fewer than 20"}}
	server := startAdminWithRollouts(t, rs)
	r := flotctl(t, server, "rollout", "status")
	step{wantOut: []string{
		"thresholds:  connect failures 5.0%, 5xx 5.0%, active connections dropping 50.0%; at least 20 samples",
		"ack wait:    45s",
		"analysis:    step 2 (100%) over 1m0s: 10 canaries against 0 baseline agents on v7; connect failures not judged: 3 attempts, fewer than 20",
	}, wantNoErr: true}.check(t, r)
	r = flotctl(t, server, "rollout", "status", "-w")
	step{wantOut: []string{"analysis: step 2 (100%) over 1m0s", "rollout 4 v8: COMPLETED step 2/2 (100%)"}, wantNoErr: true}.check(t, r)
}
