// Package store keeps configuration versions: every apply produces an
// immutable, numbered version with its content hash, author and message, like
// a commit. Rollback is applying an old version's files again, recorded with
// RollbackOf. Numbers count from 1 without gaps.
//
// The active version is the one the fleet is served outside rollouts: the
// latest, unless versions were staged (ApplyParams.Stage) after it. Canary
// rollouts (adminv1.Rollout) are stored too, so that a control plane
// restarted in the middle of one carries on.
//
// Store is the contract; Bolt keeps versions in one bbolt file, the default
// for a single control plane.
package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/flotilla-proxy/flotilla/controlplane/bundle"
	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
)

// Store keeps versions. Implementations are safe for concurrent use. Returned
// messages belong to the caller; the store keeps no reference to them, nor to
// the files passed in ApplyParams once Apply returns.
type Store interface {
	// Apply stores a new version unless the content hash equals the latest
	// version's, in which case it returns the latest with unchanged=true. With
	// p.ExpectVersion set it fails with a *ConflictError unless the latest
	// version number equals *p.ExpectVersion (0 = empty store).
	Apply(ctx context.Context, p ApplyParams) (info *adminv1.VersionInfo, unchanged bool, err error)
	// Get returns version n, or the latest when n is 0. ErrNotFound when
	// absent (or the store is empty).
	Get(ctx context.Context, n uint64) (*adminv1.Version, error)
	// List returns version infos newest first; limit 0 (or less) means all.
	List(ctx context.Context, limit int) ([]*adminv1.VersionInfo, error)
	// Active returns the active version, 0 when there is none.
	Active(ctx context.Context) (uint64, error)
	// SetActive makes stored version n the active one (ErrNotFound if absent).
	SetActive(ctx context.Context, n uint64) error
	// CreateRollout stores r as a new rollout, numbering it (r.Id is set).
	CreateRollout(ctx context.Context, r *adminv1.Rollout) error
	// PutRollout replaces the stored rollout r.Id (ErrRolloutNotFound if absent).
	PutRollout(ctx context.Context, r *adminv1.Rollout) error
	// GetRollout returns rollout id, or the latest when id is 0;
	// ErrRolloutNotFound when absent.
	GetRollout(ctx context.Context, id uint64) (*adminv1.Rollout, error)
	// ListRollouts returns rollouts newest first; limit 0 (or less) means all.
	ListRollouts(ctx context.Context, limit int) ([]*adminv1.Rollout, error)
	// Close releases the store; other methods fail after it.
	Close() error
}

// ApplyParams describe a new version. The store does not validate the files:
// callers run bundle.Validate first.
type ApplyParams struct {
	// Files are the version's content, as the user wrote them.
	Files []*adminv1.ConfigFile
	// Author is who applies; Message says why.
	Author, Message string
	// ExpectVersion, when set, makes Apply fail with a *ConflictError unless
	// the latest version is this one (0: no version yet): compare-and-set for
	// concurrent pushes.
	ExpectVersion *uint64
	// RollbackOf is the version this one restores, or 0. It must exist.
	RollbackOf uint64
	// Stage stores the version without making it the active one. Without
	// it, the new version (or the latest, when the content is unchanged)
	// becomes active.
	Stage bool
	// Now is the creation time; zero means time.Now().
	Now time.Time
}

func (p *ApplyParams) now() time.Time {
	if p.Now.IsZero() {
		return time.Now()
	}
	return p.Now
}

// ErrNotFound is returned for a version that does not exist.
var ErrNotFound = errors.New("version not found")

// ErrRolloutNotFound is returned for a rollout that does not exist.
var ErrRolloutNotFound = errors.New("rollout not found")

// ConflictError is returned when ApplyParams.ExpectVersion is not the latest
// version.
type ConflictError struct{ Expected, Latest uint64 }

// Error says which version is latest.
func (e *ConflictError) Error() string {
	return fmt.Sprintf("latest version is %d, not %d as expected", e.Latest, e.Expected)
}

// Hash is the hex SHA-256 of the canonical content: the merged bundle
// (bundle.Merge, sorted by name) marshalled deterministically. File names and
// how listeners and clusters are spread over files do not change it.
//
// Deterministic marshalling is stable for one build of the protobuf library;
// a library upgrade may change hashes, which only makes the next apply of
// equal content store a new version.
func Hash(files []*adminv1.ConfigFile) string {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(bundle.Merge(files))
	if err != nil {
		// Marshal fails only for strings with invalid UTF-8, which neither
		// Parse nor gRPC lets through, and which Apply refuses before it
		// hashes. Hash has no error to return, so it hashes the error.
		b = []byte(err.Error())
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
