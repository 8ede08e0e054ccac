package flotctl

import (
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

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
