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
}

var _ adminv1.AdminServiceServer = (*Service)(nil)

// New returns a Service. It publishes the latest stored version, if any, so a
// restarted control plane serves what it served before.
func New(ctx context.Context, st store.Store, pub Publisher, log *slog.Logger, opts ...Option) (*Service, error) {
	if log == nil {
		log = slog.Default()
	}
	s := &Service{store: st, pub: pub, log: log}
	for _, o := range opts {
		o(s)
	}
	v, err := st.Get(ctx, 0)
	switch {
	case errors.Is(err, store.ErrNotFound):
		log.Info("store is empty: agents wait for the first apply")
	case err != nil:
		return nil, fmt.Errorf("load latest version: %w", err)
	default:
		if err := pub.SetVersion(v.GetInfo().GetNumber(), v.GetFiles()); err != nil {
			return nil, fmt.Errorf("publish version %d: %w", v.GetInfo().GetNumber(), err)
		}
	}
	return s, nil
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
	info, unchanged, err := s.storeAndPublish(ctx, store.ApplyParams{
		Files:         req.GetFiles(),
		Author:        req.GetAuthor(),
		Message:       req.GetMessage(),
		ExpectVersion: expect(req.ExpectVersion),
	})
	if err != nil {
		return nil, err
	}
	return &adminv1.ApplyResponse{Version: info, Unchanged: unchanged}, nil
}

// Rollback stores a new version whose content equals an older one.
func (s *Service) Rollback(ctx context.Context, req *adminv1.RollbackRequest) (*adminv1.RollbackResponse, error) {
	if req.GetNumber() == 0 {
		return nil, status.Error(codes.InvalidArgument, "rollback needs a version number")
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
	return &adminv1.RollbackResponse{Version: info}, nil
}

func (s *Service) storeAndPublish(ctx context.Context, p store.ApplyParams) (*adminv1.VersionInfo, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	info, unchanged, err := s.store.Apply(ctx, p)
	if err != nil {
		return nil, false, storeError(err)
	}
	if unchanged {
		return info, true, nil
	}
	s.log.Info("version stored", "version", info.GetNumber(), "hash", info.GetHash(),
		"author", info.GetAuthor(), "message", info.GetMessage(), "rollback_of", info.GetRollbackOf())
	if err := s.pub.SetVersion(info.GetNumber(), p.Files); err != nil {
		// The version is stored; it will be published again on restart.
		return nil, false, status.Errorf(codes.Internal, "version %d stored but not pushed: %v", info.GetNumber(), err)
	}
	return info, false, nil
}

// GetVersion returns one version with its files, private keys redacted
// (bundle.Redact): keys leave the control plane only to agents, over xDS.
// The version's hash is of the real keys; Rollback works from the store.
func (s *Service) GetVersion(ctx context.Context, req *adminv1.GetVersionRequest) (*adminv1.GetVersionResponse, error) {
	v, err := s.store.Get(ctx, req.GetNumber())
	if err != nil {
		return nil, storeError(err)
	}
	return &adminv1.GetVersionResponse{Version: &adminv1.Version{Info: v.GetInfo(), Files: bundle.Redact(v.GetFiles())}}, nil
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
