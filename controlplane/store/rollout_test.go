package store

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
)

func active(t *testing.T, s Store) uint64 {
	t.Helper()
	n, err := s.Active(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestStageAndActive(t *testing.T) {
	ctx := context.Background()
	s, path := openTemp(t)
	if got := active(t, s); got != 0 {
		t.Fatalf("empty store: active %d, want 0", got)
	}
	steps := []struct {
		name       string
		port       string
		stage      bool
		wantNumber uint64
		wantActive uint64
	}{
		{"first apply", "1", false, 1, 1},
		{"staged", "2", true, 2, 1},
		{"staged again", "3", true, 3, 1},
		{"staged, unchanged", "3", true, 3, 1},
		{"plain apply of the staged content activates it", "3", false, 3, 3},
		{"plain apply", "4", false, 4, 4},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			info, _ := apply(t, s, ApplyParams{Files: files(t, cluster(st.port)), Stage: st.stage})
			if info.GetNumber() != st.wantNumber {
				t.Errorf("version %d, want %d", info.GetNumber(), st.wantNumber)
			}
			if got := active(t, s); got != st.wantActive {
				t.Errorf("active %d, want %d", got, st.wantActive)
			}
		})
	}
	if err := s.SetActive(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if err := s.SetActive(ctx, 9); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetActive(9) = %v, want ErrNotFound", err)
	}
	s.Close()
	s2, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s2.Close() })
	if got := active(t, s2); got != 2 {
		t.Errorf("after reopen active %d, want 2", got)
	}
}

func TestRollouts(t *testing.T) {
	ctx := context.Background()
	s, path := openTemp(t)
	if _, err := s.GetRollout(ctx, 0); !errors.Is(err, ErrRolloutNotFound) {
		t.Errorf("GetRollout(0) on an empty store = %v, want ErrRolloutNotFound", err)
	}
	if err := s.PutRollout(ctx, &adminv1.Rollout{Id: 3}); !errors.Is(err, ErrRolloutNotFound) {
		t.Errorf("PutRollout of an unknown id = %v, want ErrRolloutNotFound", err)
	}
	var made []*adminv1.Rollout
	for v := range uint64(3) {
		r := &adminv1.Rollout{Version: v + 2, Selector: map[string]string{"dc": "ams"}, Steps: []uint32{1, 100},
			Bake: durationpb.New(120e9), State: adminv1.RolloutState_ROLLOUT_STATE_RUNNING}
		if err := s.CreateRollout(ctx, r); err != nil {
			t.Fatal(err)
		}
		if r.GetId() != v+1 {
			t.Errorf("rollout id %d, want %d", r.GetId(), v+1)
		}
		made = append(made, r)
	}
	made[1].State, made[1].Reason = adminv1.RolloutState_ROLLOUT_STATE_ABORTED, "NACK"
	if err := s.PutRollout(ctx, made[1]); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s2.Close() })
	tests := []struct {
		id   uint64
		want *adminv1.Rollout
	}{{0, made[2]}, {1, made[0]}, {2, made[1]}, {3, made[2]}}
	for _, tt := range tests {
		got, err := s2.GetRollout(ctx, tt.id)
		if err != nil || !proto.Equal(got, tt.want) {
			t.Errorf("GetRollout(%d) = %v, %v; want %v", tt.id, got, err, tt.want)
		}
	}
	if _, err := s2.GetRollout(ctx, 4); !errors.Is(err, ErrRolloutNotFound) {
		t.Errorf("GetRollout(4) = %v, want ErrRolloutNotFound", err)
	}
	list, err := s2.ListRollouts(ctx, 2)
	if err != nil || len(list) != 2 || list[0].GetId() != 3 || list[1].GetId() != 2 {
		t.Errorf("ListRollouts(2) = %v, %v; want ids 3, 2", list, err)
	}
	r := &adminv1.Rollout{Version: 9}
	if err := s2.CreateRollout(ctx, r); err != nil || r.GetId() != 4 {
		t.Errorf("after reopen new rollout id %d (%v), want 4", r.GetId(), err)
	}
}
