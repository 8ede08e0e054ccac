// Package admin implements the AdminService that flotctl calls: it validates
// and stores versions, rolls back, and shows the fleet. Every stored version
// is handed to the xDS layer in order, so agents always converge on the
// latest one.
package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/flotilla-proxy/flotilla/controlplane/bundle"
	"github.com/flotilla-proxy/flotilla/controlplane/rollout"
	"github.com/flotilla-proxy/flotilla/controlplane/store"
	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
)

// Publisher receives every version that becomes the latest.
type Publisher interface {
	// SetVersion makes a version the fleet's configuration.
	SetVersion(number uint64, files []*adminv1.ConfigFile) error
	// Check compiles valid files for the fleet without changing anything.
	Check(files []*adminv1.ConfigFile) error
	// Agents lists the connected agents whose labels include selector.
	Agents(selector map[string]string) []*adminv1.Agent
}

// Stats answers GetStats from the agents' reports (stats.Aggregator).
type Stats interface {
	// GetStats aggregates the reports of the selected agents.
	GetStats(ctx context.Context, req *adminv1.GetStatsRequest) (*adminv1.GetStatsResponse, error)
}

// Option configures a Service.
type Option func(*Service)

// WithStats makes GetStats answer from st; without it GetStats is
// Unimplemented.
func WithStats(st Stats) Option { return func(s *Service) { s.stats = st } }

// Rollouts runs canary rollouts (rollout.Controller).
type Rollouts interface {
	Start(ctx context.Context, req *adminv1.StartRolloutRequest) (*adminv1.Rollout, error)
	Get(ctx context.Context, id uint64) (*adminv1.Rollout, error)
	List(ctx context.Context, limit int) ([]*adminv1.Rollout, error)
	Pause(ctx context.Context, id uint64) (*adminv1.Rollout, error)
	Resume(ctx context.Context, id uint64) (*adminv1.Rollout, error)
	Promote(ctx context.Context, id uint64) (*adminv1.Rollout, error)
	Abort(ctx context.Context, id uint64, reason string) (*adminv1.Rollout, error)
	// ActiveChanged is told when an apply or rollback made a version active.
	ActiveChanged(ctx context.Context) error
	// Live returns the running or paused rollout, or nil.
	Live(ctx context.Context) (*adminv1.Rollout, error)
}

// SetRollouts makes the rollout RPCs answer from r; without it they are
// Unimplemented. The controller needs Activate, so it is set after New.
func (s *Service) SetRollouts(r Rollouts) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rollouts = r
}

// Service implements adminv1.AdminServiceServer.
type Service struct {
	adminv1.UnimplementedAdminServiceServer

	store store.Store
	pub   Publisher
	log   *slog.Logger
	stats Stats

	// mu makes "store, then publish" one step, so versions reach the xDS
	// layer in the order they were stored.
	mu sync.Mutex
	// active is the version last published as active; guarded by mu.
	active   uint64
	rollouts Rollouts
}

var _ adminv1.AdminServiceServer = (*Service)(nil)

// New returns a Service. It publishes the active stored version, if any, so
// a restarted control plane serves what it served before.
func New(ctx context.Context, st store.Store, pub Publisher, log *slog.Logger, opts ...Option) (*Service, error) {
	if log == nil {
		log = slog.Default()
	}
	s := &Service{store: st, pub: pub, log: log}
	for _, o := range opts {
		o(s)
	}
	active, err := st.Active(ctx)
	if err != nil {
		return nil, fmt.Errorf("load active version: %w", err)
	}
	if active == 0 {
		log.Info("store is empty: agents wait for the first apply")
		return s, nil
	}
	v, err := st.Get(ctx, active)
	if err != nil {
		return nil, fmt.Errorf("load active version %d: %w", active, err)
	}
	if err := pub.SetVersion(active, v.GetFiles()); err != nil {
		return nil, fmt.Errorf("publish version %d: %w", active, err)
	}
	s.active = active
	return s, nil
}

// Activate makes stored version n the active one: stored as such, and served
// to every agent no assignment pins (a rollout completing).
func (s *Service) Activate(ctx context.Context, n uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.store.Get(ctx, n)
	if err != nil {
		return err
	}
	if err := s.store.SetActive(ctx, n); err != nil {
		return err
	}
	if err := s.pub.SetVersion(n, v.GetFiles()); err != nil {
		return fmt.Errorf("version %d is active but not pushed: %w", n, err)
	}
	s.active = n
	s.log.Info("version activated", "version", n)
	return nil
}

// Apply validates the files and stores them as a new version.
func (s *Service) Apply(ctx context.Context, req *adminv1.ApplyRequest) (*adminv1.ApplyResponse, error) {
	if err := bundle.Validate(req.GetFiles()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if req.GetDryRun() {
		if err := s.pub.Check(req.GetFiles()); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "does not compile: %v", err)
		}
		latest, err := s.store.Get(ctx, 0)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, storeError(err)
		}
		info := &adminv1.VersionInfo{Number: latest.GetInfo().GetNumber() + 1, Hash: store.Hash(req.GetFiles())}
		unchanged := latest != nil && latest.GetInfo().GetHash() == info.GetHash()
		if unchanged {
			info = latest.GetInfo()
		}
		return &adminv1.ApplyResponse{Version: info, Unchanged: unchanged}, nil
	}
	if !req.GetStage() {
		if err := s.refuseDuringRollout(ctx, "or apply with --stage"); err != nil {
			return nil, err
		}
	}
	if req.GetStage() {
		// A staged version is served later, by a rollout: say now that it
		// does not compile, not then.
		if err := s.pub.Check(req.GetFiles()); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "does not compile: %v", err)
		}
	}
	info, unchanged, err := s.storeAndPublish(ctx, store.ApplyParams{
		Files:         req.GetFiles(),
		Author:        req.GetAuthor(),
		Message:       req.GetMessage(),
		ExpectVersion: expect(req.ExpectVersion),
		Stage:         req.GetStage(),
	})
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	active := s.active
	s.mu.Unlock()
	if !req.GetStage() {
		s.activeChanged(ctx)
	}
	return &adminv1.ApplyResponse{Version: info, Unchanged: unchanged, Active: active}, nil
}

// Rollback stores a new version whose content equals an older one.
func (s *Service) Rollback(ctx context.Context, req *adminv1.RollbackRequest) (*adminv1.RollbackResponse, error) {
	if req.GetNumber() == 0 {
		return nil, status.Error(codes.InvalidArgument, "rollback needs a version number")
	}
	if err := s.refuseDuringRollout(ctx, ""); err != nil {
		return nil, err
	}
	old, err := s.store.Get(ctx, req.GetNumber())
	if err != nil {
		return nil, storeError(err)
	}
	msg := req.GetMessage()
	if msg == "" {
		msg = fmt.Sprintf("rollback to version %d", req.GetNumber())
	}
	info, unchanged, err := s.storeAndPublish(ctx, store.ApplyParams{
		Files:         old.GetFiles(),
		Author:        req.GetAuthor(),
		Message:       msg,
		ExpectVersion: expect(req.ExpectVersion),
		RollbackOf:    req.GetNumber(),
	})
	if err != nil {
		return nil, err
	}
	if unchanged {
		return nil, status.Errorf(codes.FailedPrecondition,
			"the latest version %d already has the content of version %d", info.GetNumber(), req.GetNumber())
	}
	s.activeChanged(ctx)
	return &adminv1.RollbackResponse{Version: info}, nil
}

// refuseDuringRollout fails with FailedPrecondition while a rollout is
// running or paused: a new active version would be reverted by its
// completion, or mixed with its canaries. alt is what else the operator can
// do ("or apply with --stage"). An apply that slips in as a rollout starts
// is caught by the rollout itself: it aborts rather than activate over a
// version that is not its from_version.
func (s *Service) refuseDuringRollout(ctx context.Context, alt string) error {
	r := s.rolloutsOrNil()
	if r == nil {
		return nil
	}
	ro, err := r.Live(ctx)
	if err != nil {
		return status.Errorf(codes.Internal, "rollouts: %v", err)
	}
	if ro == nil {
		return nil
	}
	verb := "running"
	if ro.GetState() == adminv1.RolloutState_ROLLOUT_STATE_PAUSED {
		verb = "paused"
	}
	msg := fmt.Sprintf("rollout %d of version %d is %s: abort or promote it first", ro.GetId(), ro.GetVersion(), verb)
	if alt != "" {
		msg += ", " + alt
	}
	return status.Error(codes.FailedPrecondition, msg)
}

func (s *Service) storeAndPublish(ctx context.Context, p store.ApplyParams) (*adminv1.VersionInfo, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	info, unchanged, err := s.store.Apply(ctx, p)
	if err != nil {
		return nil, false, storeError(err)
	}
	if !unchanged {
		s.log.Info("version stored", "version", info.GetNumber(), "hash", info.GetHash(),
			"author", info.GetAuthor(), "message", info.GetMessage(), "rollback_of", info.GetRollbackOf(), "staged", p.Stage)
	}
	if p.Stage || s.active == info.GetNumber() {
		return info, unchanged, nil
	}
	if err := s.pub.SetVersion(info.GetNumber(), p.Files); err != nil {
		// The version is stored; it will be published again on restart.
		return nil, false, status.Errorf(codes.Internal, "version %d stored but not pushed: %v", info.GetNumber(), err)
	}
	s.active = info.GetNumber()
	return info, unchanged, nil
}

// GetVersion returns one version with its files, private keys redacted
// (bundle.Redact): keys leave the control plane only to agents, over xDS.
// The version's hash is of the real keys; Rollback works from the store.
func (s *Service) GetVersion(ctx context.Context, req *adminv1.GetVersionRequest) (*adminv1.GetVersionResponse, error) {
	v, err := s.store.Get(ctx, req.GetNumber())
	if err != nil {
		return nil, storeError(err)
	}
	active, err := s.store.Active(ctx)
	if err != nil {
		return nil, storeError(err)
	}
	return &adminv1.GetVersionResponse{Version: &adminv1.Version{Info: v.GetInfo(), Files: bundle.Redact(v.GetFiles())}, Active: active}, nil
}

// ListVersions returns the history, newest first.
func (s *Service) ListVersions(ctx context.Context, req *adminv1.ListVersionsRequest) (*adminv1.ListVersionsResponse, error) {
	infos, err := s.store.List(ctx, int(req.GetLimit()))
	if err != nil {
		return nil, storeError(err)
	}
	return &adminv1.ListVersionsResponse{Versions: infos}, nil
}

// ListAgents returns the connected agents matching the selector.
func (s *Service) ListAgents(_ context.Context, req *adminv1.ListAgentsRequest) (*adminv1.ListAgentsResponse, error) {
	return &adminv1.ListAgentsResponse{Agents: s.pub.Agents(req.GetSelector())}, nil
}

// GetStats aggregates the agents' reports.
func (s *Service) GetStats(ctx context.Context, req *adminv1.GetStatsRequest) (*adminv1.GetStatsResponse, error) {
	if s.stats == nil {
		return nil, status.Error(codes.Unimplemented, "this control plane does not aggregate agent reports")
	}
	return s.stats.GetStats(ctx, req)
}

// activeChanged tells the rollouts that the active version may have
// changed. It runs without s.mu: the controller calls Activate holding its
// own lock.
func (s *Service) activeChanged(ctx context.Context) {
	if r := s.rolloutsOrNil(); r != nil {
		if err := r.ActiveChanged(ctx); err != nil {
			s.log.Error("rollouts: cannot update assignments after a new active version", "error", err)
		}
	}
}

func (s *Service) rolloutsOrNil() Rollouts {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rollouts
}

func (s *Service) withRollouts(f func(r Rollouts) (*adminv1.Rollout, error)) (*adminv1.Rollout, error) {
	r := s.rolloutsOrNil()
	if r == nil {
		return nil, status.Error(codes.Unimplemented, "this control plane does not run rollouts")
	}
	ro, err := f(r)
	if err != nil {
		return nil, rolloutError(err)
	}
	return ro, nil
}

// StartRollout starts a canary rollout.
func (s *Service) StartRollout(ctx context.Context, req *adminv1.StartRolloutRequest) (*adminv1.StartRolloutResponse, error) {
	ro, err := s.withRollouts(func(r Rollouts) (*adminv1.Rollout, error) {
		if req.GetAuthor() == "" {
			req.Author = "unknown"
		}
		return r.Start(ctx, req)
	})
	if err != nil {
		return nil, err
	}
	return &adminv1.StartRolloutResponse{Rollout: ro}, nil
}

// GetRollout returns a rollout, or the latest.
func (s *Service) GetRollout(ctx context.Context, req *adminv1.GetRolloutRequest) (*adminv1.GetRolloutResponse, error) {
	ro, err := s.withRollouts(func(r Rollouts) (*adminv1.Rollout, error) { return r.Get(ctx, req.GetId()) })
	if err != nil {
		return nil, err
	}
	return &adminv1.GetRolloutResponse{Rollout: ro}, nil
}

// ListRollouts returns the rollouts, newest first.
func (s *Service) ListRollouts(ctx context.Context, req *adminv1.ListRolloutsRequest) (*adminv1.ListRolloutsResponse, error) {
	r := s.rolloutsOrNil()
	if r == nil {
		return nil, status.Error(codes.Unimplemented, "this control plane does not run rollouts")
	}
	list, err := r.List(ctx, int(req.GetLimit()))
	if err != nil {
		return nil, rolloutError(err)
	}
	return &adminv1.ListRolloutsResponse{Rollouts: list}, nil
}

// PauseRollout pauses a rollout.
func (s *Service) PauseRollout(ctx context.Context, req *adminv1.PauseRolloutRequest) (*adminv1.PauseRolloutResponse, error) {
	ro, err := s.withRollouts(func(r Rollouts) (*adminv1.Rollout, error) { return r.Pause(ctx, req.GetId()) })
	if err != nil {
		return nil, err
	}
	return &adminv1.PauseRolloutResponse{Rollout: ro}, nil
}

// ResumeRollout resumes a paused rollout.
func (s *Service) ResumeRollout(ctx context.Context, req *adminv1.ResumeRolloutRequest) (*adminv1.ResumeRolloutResponse, error) {
	ro, err := s.withRollouts(func(r Rollouts) (*adminv1.Rollout, error) { return r.Resume(ctx, req.GetId()) })
	if err != nil {
		return nil, err
	}
	return &adminv1.ResumeRolloutResponse{Rollout: ro}, nil
}

// PromoteRollout jumps a rollout to its last step.
func (s *Service) PromoteRollout(ctx context.Context, req *adminv1.PromoteRolloutRequest) (*adminv1.PromoteRolloutResponse, error) {
	ro, err := s.withRollouts(func(r Rollouts) (*adminv1.Rollout, error) { return r.Promote(ctx, req.GetId()) })
	if err != nil {
		return nil, err
	}
	return &adminv1.PromoteRolloutResponse{Rollout: ro}, nil
}

// AbortRollout aborts a rollout.
func (s *Service) AbortRollout(ctx context.Context, req *adminv1.AbortRolloutRequest) (*adminv1.AbortRolloutResponse, error) {
	ro, err := s.withRollouts(func(r Rollouts) (*adminv1.Rollout, error) { return r.Abort(ctx, req.GetId(), req.GetReason()) })
	if err != nil {
		return nil, err
	}
	return &adminv1.AbortRolloutResponse{Rollout: ro}, nil
}

// rolloutError maps the rollout controller's errors to gRPC status codes.
func rolloutError(err error) error {
	switch {
	case errors.Is(err, rollout.ErrInvalid), errors.Is(err, store.ErrNotFound):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, rollout.ErrConflict):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, store.ErrRolloutNotFound):
		return status.Error(codes.NotFound, err.Error())
	case status.Code(err) != codes.Unknown:
		return err
	default:
		return status.Errorf(codes.Internal, "rollout: %v", err)
	}
}

func expect(v *uint64) *uint64 {
	if v == nil {
		return nil
	}
	n := *v
	return &n
}

// storeError maps store errors to gRPC status codes the CLI explains.
func storeError(err error) error {
	var conflict *store.ConflictError
	switch {
	case errors.As(err, &conflict):
		return status.Error(codes.FailedPrecondition, conflict.Error())
	case errors.Is(err, store.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	default:
		return status.Errorf(codes.Internal, "store: %v", err)
	}
}
