package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
)

// Bolt layout, version 1:
//
//	versions/<big-endian uint64 n> → marshalled adminv1.Version n
//	meta/latest                    → big-endian uint64, the latest version number
//	meta/format                    → big-endian uint64, this layout's version (1)
//	meta/active                    → big-endian uint64, the active version; absent: the latest
//	rollouts/<big-endian uint64 id> → marshalled adminv1.Rollout
//
// meta/active and the rollouts bucket were added without changing the
// format: a file written before them reads as "the latest is active, no
// rollouts".
var (
	bucketVersions = []byte("versions")
	bucketMeta     = []byte("meta")
	bucketRollouts = []byte("rollouts")
	keyLatest      = []byte("latest")
	keyFormat      = []byte("format")
	keyActive      = []byte("active")
)

const boltFormat = 1

// Bolt is a Store in one bbolt file. Each Apply is one bbolt read-write
// transaction that writes the version and moves meta/latest together; bbolt
// commits a transaction atomically (copy-on-write pages, then one meta page
// write, fsynced), so a crash or power loss in the middle of an apply leaves
// the previous version as the latest and intact. Applies are serialised by
// bbolt's single writer, so concurrent applies get consecutive numbers.
type Bolt struct {
	db *bolt.DB
}

var _ Store = (*Bolt)(nil)

// OpenBolt opens the bbolt file at path, creating it (and its directory) if
// needed. bbolt holds an exclusive lock on the file while it is open, so a
// second process (or a second OpenBolt in this one) opening the same file
// fails after one second with an error saying so, rather than hanging.
func OpenBolt(path string) (*Bolt, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("open store %s: the file is locked by another process (is another control plane using it?)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bucketVersions); err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(bucketRollouts); err != nil {
			return err
		}
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		switch f := meta.Get(keyFormat); {
		case f == nil:
			return meta.Put(keyFormat, key(boltFormat))
		case len(f) != 8 || binary.BigEndian.Uint64(f) != boltFormat:
			return fmt.Errorf("unknown layout %x, this build reads layout %d", f, boltFormat)
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return &Bolt{db: db}, nil
}

// Apply implements Store.
func (b *Bolt) Apply(ctx context.Context, p ApplyParams) (*adminv1.VersionInfo, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	// A Version's wire form is its info (field 1) followed by its files
	// (field 2), so the files, the big part, are marshalled before the
	// transaction takes the write lock. This also refuses content that cannot
	// be marshalled before Hash sees it.
	files, err := proto.MarshalOptions{Deterministic: true}.Marshal(&adminv1.Version{Files: p.Files})
	if err != nil {
		return nil, false, fmt.Errorf("apply: %w", err)
	}
	hash := Hash(p.Files)
	var (
		info      *adminv1.VersionInfo
		unchanged bool
	)
	err = b.db.Update(func(tx *bolt.Tx) error {
		versions, meta := tx.Bucket(bucketVersions), tx.Bucket(bucketMeta)
		latest := latestNumber(meta)
		if p.ExpectVersion != nil && *p.ExpectVersion != latest {
			return &ConflictError{Expected: *p.ExpectVersion, Latest: latest}
		}
		if p.RollbackOf != 0 && versions.Get(key(p.RollbackOf)) == nil {
			return fmt.Errorf("apply: rollback of version %d: %w", p.RollbackOf, ErrNotFound)
		}
		if latest != 0 {
			li, err := decodeInfo(versions.Get(key(latest)))
			if err != nil {
				return fmt.Errorf("apply: read version %d: %w", latest, err)
			}
			if li.GetHash() == hash {
				info, unchanged = li, true
				if p.Stage {
					return nil
				}
				return meta.Put(keyActive, key(latest))
			}
		}
		n := latest + 1
		info = &adminv1.VersionInfo{
			Number:     n,
			Hash:       hash,
			Author:     p.Author,
			Message:    p.Message,
			CreatedAt:  timestamppb.New(p.now()),
			RollbackOf: p.RollbackOf,
		}
		ib, err := proto.MarshalOptions{Deterministic: true}.Marshal(info)
		if err != nil {
			return fmt.Errorf("apply: %w", err)
		}
		data := protowire.AppendTag(nil, 1, protowire.BytesType)
		data = protowire.AppendBytes(data, ib)
		data = append(data, files...)
		if err := versions.Put(key(n), data); err != nil {
			return fmt.Errorf("apply: %w", err)
		}
		if err := meta.Put(keyLatest, key(n)); err != nil {
			return fmt.Errorf("apply: %w", err)
		}
		if latest != 0 && meta.Get(keyActive) == nil {
			// A file from before staging: its latest was active. Say so
			// before the latest moves.
			if err := meta.Put(keyActive, key(latest)); err != nil {
				return fmt.Errorf("apply: %w", err)
			}
		}
		if !p.Stage {
			if err := meta.Put(keyActive, key(n)); err != nil {
				return fmt.Errorf("apply: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	return info, unchanged, nil
}

// Get implements Store.
func (b *Bolt) Get(ctx context.Context, n uint64) (*adminv1.Version, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	v := &adminv1.Version{}
	err := b.db.View(func(tx *bolt.Tx) error {
		if n == 0 {
			n = latestNumber(tx.Bucket(bucketMeta))
		}
		data := tx.Bucket(bucketVersions).Get(key(n))
		if data == nil {
			return fmt.Errorf("get version %d: %w", n, ErrNotFound)
		}
		if err := proto.Unmarshal(data, v); err != nil {
			return fmt.Errorf("get version %d: %w", n, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return v, nil
}

// List implements Store. It reads only each version's info, not its files.
func (b *Bolt) List(ctx context.Context, limit int) ([]*adminv1.VersionInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var infos []*adminv1.VersionInfo
	err := b.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketVersions).Cursor()
		for k, data := c.Last(); k != nil && (limit <= 0 || len(infos) < limit); k, data = c.Prev() {
			info, err := decodeInfo(data)
			if err != nil {
				return fmt.Errorf("list versions: version %d: %w", binary.BigEndian.Uint64(k), err)
			}
			infos = append(infos, info)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return infos, nil
}

// Active implements Store.
func (b *Bolt) Active(ctx context.Context) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	var n uint64
	err := b.db.View(func(tx *bolt.Tx) error {
		n = activeNumber(tx.Bucket(bucketMeta))
		return nil
	})
	return n, err
}

// SetActive implements Store.
func (b *Bolt) SetActive(ctx context.Context, n uint64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketVersions).Get(key(n)) == nil {
			return fmt.Errorf("set active version %d: %w", n, ErrNotFound)
		}
		if err := tx.Bucket(bucketMeta).Put(keyActive, key(n)); err != nil {
			return fmt.Errorf("set active version %d: %w", n, err)
		}
		return nil
	})
}

// CreateRollout implements Store.
func (b *Bolt) CreateRollout(ctx context.Context, r *adminv1.Rollout) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.db.Update(func(tx *bolt.Tx) error {
		rb := tx.Bucket(bucketRollouts)
		id, err := rb.NextSequence()
		if err != nil {
			return fmt.Errorf("create rollout: %w", err)
		}
		r.Id = id
		return putRollout(rb, r)
	})
}

// PutRollout implements Store.
func (b *Bolt) PutRollout(ctx context.Context, r *adminv1.Rollout) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.db.Update(func(tx *bolt.Tx) error {
		rb := tx.Bucket(bucketRollouts)
		if r.GetId() == 0 || rb.Get(key(r.GetId())) == nil {
			return fmt.Errorf("put rollout %d: %w", r.GetId(), ErrRolloutNotFound)
		}
		return putRollout(rb, r)
	})
}

func putRollout(rb *bolt.Bucket, r *adminv1.Rollout) error {
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
	if err != nil {
		return fmt.Errorf("rollout %d: %w", r.GetId(), err)
	}
	if err := rb.Put(key(r.GetId()), data); err != nil {
		return fmt.Errorf("rollout %d: %w", r.GetId(), err)
	}
	return nil
}

// GetRollout implements Store.
func (b *Bolt) GetRollout(ctx context.Context, id uint64) (*adminv1.Rollout, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r := &adminv1.Rollout{}
	err := b.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketRollouts).Cursor()
		var k, data []byte
		if id == 0 {
			k, data = c.Last()
		} else {
			k, data = c.Seek(key(id))
		}
		if k == nil || (id != 0 && binary.BigEndian.Uint64(k) != id) {
			return fmt.Errorf("get rollout %d: %w", id, ErrRolloutNotFound)
		}
		if err := proto.Unmarshal(data, r); err != nil {
			return fmt.Errorf("get rollout %d: %w", binary.BigEndian.Uint64(k), err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

// ListRollouts implements Store.
func (b *Bolt) ListRollouts(ctx context.Context, limit int) ([]*adminv1.Rollout, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []*adminv1.Rollout
	err := b.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketRollouts).Cursor()
		for k, data := c.Last(); k != nil && (limit <= 0 || len(out) < limit); k, data = c.Prev() {
			r := &adminv1.Rollout{}
			if err := proto.Unmarshal(data, r); err != nil {
				return fmt.Errorf("list rollouts: rollout %d: %w", binary.BigEndian.Uint64(k), err)
			}
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Close implements Store.
func (b *Bolt) Close() error {
	if err := b.db.Close(); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	return nil
}

// key is a version number as a bbolt key: big-endian, so keys sort by number.
func key(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }

func latestNumber(meta *bolt.Bucket) uint64 {
	if v := meta.Get(keyLatest); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

// activeNumber is the active version: meta/active, or the latest in a file
// written before staging existed.
func activeNumber(meta *bolt.Bucket) uint64 {
	if v := meta.Get(keyActive); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return latestNumber(meta)
}

// decodeInfo reads only the info (field 1) of a marshalled adminv1.Version,
// skipping the files.
func decodeInfo(data []byte) (*adminv1.VersionInfo, error) {
	info := &adminv1.VersionInfo{}
	found := false
	for b := data; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, protowire.ParseError(n)
			}
			// Repeated occurrences of a message field merge, as in proto.Unmarshal.
			if err := (proto.UnmarshalOptions{Merge: true}).Unmarshal(v, info); err != nil {
				return nil, err
			}
			found = true
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		b = b[n:]
	}
	if !found {
		return nil, errors.New("version has no info")
	}
	return info, nil
}
