// Package lastgood keeps the agent's last good snapshot on disk: the complete,
// consistent set of xDS resources it last applied, so that an agent restarting
// while no control plane is reachable serves that again instead of nothing.
//
// A snapshot file is written whole or not at all (temp file in the same
// directory, fsync, rename, fsync of the directory), so a crash leaves either
// the previous file or the new one. Its bytes are a short header — magic,
// format version and a CRC-32C of the payload — followed by the
// flotilla.agent.v1.Snapshot protobuf; the checksum turns a damaged file into
// a clear error rather than a silently partial config (protobuf decoding alone
// accepts many truncated inputs).
//
// The snapshot holds every xDS type the agent runs, SDS secrets (certificates
// with their private keys) included, so that TLS listeners come back after a
// restart too. The file is therefore written with mode 0600.
package lastgood

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/flotilla-proxy/flotilla/agent/runtime"
	"github.com/flotilla-proxy/flotilla/agent/xdsclient"
	agentv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/agent/v1"
)

// FileName is the snapshot's name inside the agent's data directory.
const FileName = "snapshot.pb"

// The file header: magic, format version, CRC-32C (Castagnoli) of the payload.
var magic = []byte("FLSNAP")

const (
	formatVersion = 1
	headerLen     = 6 + 1 + 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt is wrapped by Load's error when the file exists but is not a
// readable snapshot.
var ErrCorrupt = errors.New("corrupt snapshot file")

// Save writes s to path atomically and durably. Temp files that an earlier,
// interrupted Save left next to path are removed.
func Save(path string, s *agentv1.Snapshot) (err error) {
	payload, err := proto.MarshalOptions{Deterministic: true}.Marshal(s)
	if err != nil {
		return fmt.Errorf("save snapshot %s: %w", path, err)
	}
	header := make([]byte, 0, headerLen)
	header = append(header, magic...)
	header = append(header, formatVersion)
	header = binary.BigEndian.AppendUint32(header, crc32.Checksum(payload, castagnoli))

	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, tempPrefix(base)+"*")
	if err != nil {
		return fmt.Errorf("save snapshot %s: %w", path, err)
	}
	tmp := f.Name()
	// The snapshot holds the SDS secrets, private keys included: owner only. CreateTemp
	// creates 0600 already; say so explicitly, whatever the platform.
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("save snapshot %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(append(header, payload...)); err != nil {
		return fmt.Errorf("save snapshot %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("save snapshot %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("save snapshot %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("save snapshot %s: %w", path, err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("save snapshot %s: %w", path, err)
	}
	leftovers, _ := filepath.Glob(filepath.Join(dir, tempPrefix(base)+"*"))
	for _, l := range leftovers {
		os.Remove(l)
	}
	return nil
}

func tempPrefix(base string) string { return "." + base + ".tmp-" }

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Load reads the snapshot at path. A missing file gives an error for which
// errors.Is(err, os.ErrNotExist) holds; a damaged one, ErrCorrupt.
func Load(path string) (*agentv1.Snapshot, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load snapshot: %w", err)
	}
	switch {
	case len(b) < headerLen || !bytes.Equal(b[:len(magic)], magic):
		return nil, fmt.Errorf("load snapshot %s: %w: not a snapshot file", path, ErrCorrupt)
	case b[len(magic)] != formatVersion:
		return nil, fmt.Errorf("load snapshot %s: %w: format version %d, want %d", path, ErrCorrupt, b[len(magic)], formatVersion)
	}
	payload := b[headerLen:]
	if want, got := binary.BigEndian.Uint32(b[len(magic)+1:]), crc32.Checksum(payload, castagnoli); want != got {
		return nil, fmt.Errorf("load snapshot %s: %w: checksum mismatch (truncated or damaged)", path, ErrCorrupt)
	}
	s := new(agentv1.Snapshot)
	if err := proto.Unmarshal(payload, s); err != nil {
		return nil, fmt.Errorf("load snapshot %s: %w: %v", path, ErrCorrupt, err)
	}
	return s, nil
}

// FromResources returns the snapshot of an applied set: one TypeSnapshot per
// type that has a version in versions, resources in name order.
func FromResources(nodeID string, set *runtime.Resources, versions map[string]string, savedAt time.Time) (*agentv1.Snapshot, error) {
	s := &agentv1.Snapshot{NodeId: nodeID, SavedAt: timestamppb.New(savedAt)}
	for _, t := range xdsclient.Types {
		version, ok := versions[t]
		if !ok {
			continue
		}
		ts := &agentv1.TypeSnapshot{TypeUrl: t, Version: version}
		items := xdsclient.Get(set, t)
		for _, name := range xdsclient.SortedNames(items) {
			a, err := anypb.New(items[name])
			if err != nil {
				return nil, fmt.Errorf("snapshot of %s %q: %w", xdsclient.ShortName(t), name, err)
			}
			ts.Resources = append(ts.Resources, a)
		}
		s.Types = append(s.Types, ts)
	}
	return s, nil
}

// ToResources turns a snapshot back into a resource set and its versions by
// type URL. Every resource goes through the same checks as one from the wire
// (xdsclient.Decode), so a snapshot this build no longer accepts is refused.
// Consistency is left to runtime.Build.
func ToResources(s *agentv1.Snapshot) (*runtime.Resources, map[string]string, error) {
	set := &runtime.Resources{}
	for _, t := range xdsclient.Types {
		xdsclient.Put(set, t, nil)
	}
	versions := make(map[string]string)
	for _, ts := range s.GetTypes() {
		t := ts.GetTypeUrl()
		if !slices.Contains(xdsclient.Types, t) {
			return nil, nil, fmt.Errorf("snapshot: type %q is not supported", t)
		}
		if _, dup := versions[t]; dup {
			return nil, nil, fmt.Errorf("snapshot: type %s appears twice", xdsclient.ShortName(t))
		}
		items, err := xdsclient.Decode(t, ts.GetResources())
		if err != nil {
			return nil, nil, fmt.Errorf("snapshot %s version %q: %w", xdsclient.ShortName(t), ts.GetVersion(), err)
		}
		xdsclient.Put(set, t, items)
		versions[t] = ts.GetVersion()
	}
	return set, versions, nil
}
