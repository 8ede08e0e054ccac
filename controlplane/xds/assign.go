package xds

import (
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/flotilla-proxy/flotilla/controlplane/bundle"
	"github.com/flotilla-proxy/flotilla/controlplane/fleet"
	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
	configv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/config/v1"
)

// Assignment pins a config version on some agents: the ones a canary
// rollout's steps have reached. An agent is assigned when its labels include
// Selector and Hash(node id, Salt) is at most Threshold; a rollout step
// raises Threshold, so a step only adds agents, and an agent that connects
// later is assigned by the same rule. Proxyless gRPC clients are never
// assigned.
type Assignment struct {
	// Version is the config version the assigned agents run.
	Version uint64
	// Files are the version's files (valid: bundle.Validate).
	Files []*adminv1.ConfigFile
	// Selector keeps agents whose labels include every key=value here.
	Selector map[string]string
	// Salt makes the order of agents differ from one rollout to the next
	// (the rollout id).
	Salt string
	// Threshold is the largest hash assigned; math.MaxUint64 assigns every
	// selected agent.
	Threshold uint64
}

// Hash is the position of a node in a rollout's order: fnv64a of the node id,
// "/" and the salt.
func Hash(nodeID, salt string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(nodeID))
	h.Write([]byte{'/'})
	h.Write([]byte(salt))
	return h.Sum64()
}

// Covers reports whether the assignment assigns an agent.
func (a *Assignment) Covers(nodeID string, labels map[string]string) bool {
	for k, v := range a.Selector {
		if labels[k] != v {
			return false
		}
	}
	return Hash(nodeID, a.Salt) <= a.Threshold
}

// routing is which version each agent is served: the active one unless an
// assignment covers it. Immutable once published.
type routing struct {
	active  uint64
	assigns []*Assignment // the last one covering an agent wins
	bundles map[uint64]*configv1.Bundle
}

// pinnedSep separates an agent group's labels from the version pinned on it
// in a snapshot key ("dc=ams|v7"). Labels cannot contain it.
const pinnedSep = "|v"

// pinnedKey is the snapshot key of the agents of labels group base running
// version n by assignment.
func pinnedKey(base string, n uint64) string { return base + pinnedSep + strconv.FormatUint(n, 10) }

// version returns the version assigned to an agent, or 0 when it runs the
// active one.
func (r *routing) version(nodeID string, labels map[string]string) uint64 {
	for i := len(r.assigns) - 1; i >= 0; i-- {
		if a := r.assigns[i]; a.Covers(nodeID, labels) {
			if a.Version == r.active {
				return 0
			}
			return a.Version
		}
	}
	return 0
}

// nodeKey is the snapshot key of a node: its labels group (fleet.NodeGroup),
// followed by the pinned version when an assignment covers it. Agents with
// the same labels and version share a snapshot, so what the control plane
// builds and keeps grows with groups × versions in flight, not with agents.
func (s *Server) nodeKey(node *corev3.Node) string {
	base := s.cache.groups.of(node)
	r := s.routing.Load()
	if r == nil || len(r.assigns) == 0 || fleet.IsGRPCClient(node) {
		return base
	}
	if v := r.version(node.GetId(), fleet.Labels(node)); v != 0 {
		return pinnedKey(base, v)
	}
	return base
}

// pinnedOf returns the version pinned in a snapshot key, 0 for none.
func pinnedOf(key string) uint64 {
	i := strings.LastIndex(key, pinnedSep)
	if i < 0 || strings.HasPrefix(key, fleet.GRPCGroupPrefix) {
		return 0
	}
	n, err := strconv.ParseUint(key[i+len(pinnedSep):], 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// SetAssignments replaces the assignments (nil: none; later ones win where
// they overlap). Agents whose version changes are moved at once: their
// groups' snapshots are built if needed and their open watches answered from
// the new group, without closing their streams. The snapshots of versions no
// assignment pins any more (a rollout completed or aborted) are dropped once
// no agent is in their group, rather than at the next apply.
func (s *Server) SetAssignments(as []*Assignment) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	bundles := map[uint64]*configv1.Bundle{}
	for _, a := range as {
		if a.Version == 0 {
			return fmt.Errorf("assignment without a version")
		}
		if bundles[a.Version] == nil {
			bundles[a.Version] = bundle.Merge(a.Files)
		}
	}
	var active uint64
	if s.config != nil {
		active = s.config.number
	}
	r := &routing{active: active, assigns: as, bundles: bundles}
	s.routing.Store(r)
	err := s.regroup()
	s.dropUnpinned(r)
	return err
}

// dropUnpinned forgets the groups pinned to a version that r no longer
// assigns (or that is the active one) and that no agent is in: their
// agents, moved by regroup, are served from their labels' group. A group
// that still has an agent (one whose stream has not been moved yet) is left
// to forgetIdle. Callers hold s.mu.
func (s *Server) dropUnpinned(r *routing) {
	live := s.registry.Groups()
	var drop []string
	s.groupsMu.Lock()
	for key, g := range s.groups {
		if g.pinned == 0 || live[key] > 0 {
			continue
		}
		if r.bundles[g.pinned] != nil && g.pinned != r.active {
			continue
		}
		delete(s.groups, key)
		drop = append(drop, key)
	}
	s.groupsMu.Unlock()
	for _, key := range drop {
		s.cache.ClearSnapshot(key)
	}
	if len(drop) > 0 {
		s.log.Info("dropped the snapshots of versions no rollout pins", "groups", drop)
	}
}

// regroup moves the agents whose snapshot key changed. Callers hold s.mu.
func (s *Server) regroup() error {
	moved := s.registry.Regroup()
	var firstErr error
	for _, m := range moved {
		s.groupsMu.RLock()
		_, ok := s.groups[m.To]
		s.groupsMu.RUnlock()
		if !ok {
			if err := s.addGroup(m.To, m.Labels); err != nil && firstErr == nil {
				firstErr = err
			}
		}
	}
	for _, m := range moved {
		s.cache.rewatch(m.NodeID)
	}
	if len(moved) > 0 {
		s.log.Info("agents moved to other config versions", "agents", len(moved))
	}
	return firstErr
}

// addGroup creates the group of a snapshot key and builds its snapshot.
// Callers hold s.mu.
func (s *Server) addGroup(key string, labels map[string]string) error {
	g := &group{labels: labels, grpc: strings.HasPrefix(key, fleet.GRPCGroupPrefix), pinned: pinnedOf(key)}
	s.groupsMu.Lock()
	if _, ok := s.groups[key]; ok {
		s.groupsMu.Unlock()
		return nil
	}
	s.groups[key] = g
	s.groupsMu.Unlock()
	cfg := s.configFor(g)
	if cfg == nil {
		return nil
	}
	if err := s.build(key, cfg); err != nil {
		s.log.Error("cannot build snapshot", "group", key, "version", cfg.number, "error", err)
		return err
	}
	return nil
}

// configFor returns the configuration a group is served: its pinned version's
// or the active one (nil before the first). Callers hold s.mu.
func (s *Server) configFor(g *group) *configState {
	if g.pinned == 0 {
		return s.config
	}
	r := s.routing.Load()
	if r == nil || r.bundles[g.pinned] == nil {
		return nil
	}
	return &configState{number: g.pinned, bundle: r.bundles[g.pinned]}
}
