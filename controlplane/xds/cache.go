package xds

import (
	"context"
	"maps"
	"runtime"
	"slices"
	"sync"
	"weak"

	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/flotilla-proxy/flotilla/controlplane/fleet"
)

// heldVersions answers, without taking go-control-plane's cache lock, which
// version of a type an agent must not be sent again because it rejected it.
// It returns "" when nothing is held.
type heldVersions interface {
	held(group, nodeID, typeURL string) (version string, resources map[string]string)
}

// nackAwareCache wraps go-control-plane's SnapshotCache so that a version an
// agent NACKed is never pushed to that agent again.
//
// The stock cache answers every request whose version_info differs from the
// snapshot's at once. A NACK carries the last version the agent accepted, so
// the cache resends the rejected version immediately, forever
// (go-control-plane #46, #962). The same happens when an agent that rejected a
// version reconnects. For a type whose current version the agent rejected, we
// present the request to the cache as if the agent held that version, and the
// subscription as if it had been sent every resource of it: the cache then
// parks the watch, and answers it as soon as the group's snapshot moves on.
//
// It also corrects two things the stock cache gets wrong for us:
//   - In ADS mode it answers a request naming resources only when the
//     request names every resource of that type in the snapshot. An agent
//     that rejected a CDS (LDS) update asks for the endpoints (routes) of the
//     clusters (listeners) it still runs, a subset, and would never hear of
//     changes again; a gRPC client asks for the one service it dials, while
//     its group's snapshot holds every service its labels select. Every
//     request therefore reaches the cache as a wildcard request; agents,
//     Envoy and gRPC clients ignore resources they did not ask for.
//   - After a delta NACK, the delta server believes the client holds what it
//     was sent. The next delta is computed from what the client last ACKed.
type nackAwareCache struct {
	// SnapshotCache serves delta streams; sotw serves state-of-the-world
	// ones from responses marshalled once per group (see prepared).
	cache.SnapshotCache
	sotw   *sotwCache
	held   heldVersions
	groups groupMemo

	mu sync.Mutex
	// deltaAcked is, per node and type, the resource versions a delta client
	// ACKed last (or announced when it subscribed); deltaNacked says whether
	// it rejected a response since.
	deltaAcked  map[deltaKey]map[string]string
	deltaNacked map[deltaKey]bool
}

type deltaKey struct{ nodeID, typeURL string }

func newNACKAwareCache(c cache.SnapshotCache, held heldVersions) *nackAwareCache {
	return &nackAwareCache{
		SnapshotCache: c,
		sotw:          newSOTWCache(),
		held:          held,
		deltaAcked:    map[deltaKey]map[string]string{},
		deltaNacked:   map[deltaKey]bool{},
	}
}

// CreateWatch parks state-of-the-world watches for rejected versions.
func (c *nackAwareCache) CreateWatch(req *cache.Request, sub cache.Subscription, out chan cache.Response) (func(), error) {
	hs := c.wrap(req.GetNode(), req.GetTypeUrl(), sub)
	version, _ := hs.current()
	park := version != "" && req.GetVersionInfo() != version
	wildcard := len(req.GetResourceNames()) > 0
	if park || wildcard {
		// A shallow copy: the node (with its metadata) is shared with the
		// stream's other requests, and nothing here changes it; cloning it
		// for every request was a good part of a push's allocations.
		r := &cache.Request{
			VersionInfo:      req.GetVersionInfo(),
			Node:             req.GetNode(),
			ResourceNames:    req.GetResourceNames(),
			ResourceLocators: req.GetResourceLocators(),
			TypeUrl:          req.GetTypeUrl(),
			ResponseNonce:    req.GetResponseNonce(),
			ErrorDetail:      req.GetErrorDetail(),
		}
		if park {
			r.VersionInfo = version
		}
		if wildcard {
			r.ResourceNames, r.ResourceLocators = nil, nil
		}
		req = r
	}
	return c.sotw.createWatch(hs.group, req, hs, out), nil
}

// setSnapshot sets a group's snapshot: snap for delta streams, types (the
// same content, marshalled) for state-of-the-world ones.
//
// publish makes the new versions visible to held() (the NACK hold). It runs under the
// state-of-the-world cache's lock, in the same critical section that swaps its responses,
// so a watch never sees held() and the responses of two different versions: were the
// versions published first, a NACK of the old version handled in between would find no
// hold and be answered with the very version it rejected; published after, a NACK of the
// new one likewise. Delta streams read held() while SetSnapshot answers them, after that.
func (c *nackAwareCache) setSnapshot(ctx context.Context, key string, snap *cache.Snapshot, types map[string]*prepared, publish func()) error {
	c.sotw.set(key, types, publish)
	return c.SnapshotCache.SetSnapshot(ctx, key, snap)
}

// ClearSnapshot forgets a group.
func (c *nackAwareCache) ClearSnapshot(key string) {
	c.sotw.clear(key)
	c.SnapshotCache.ClearSnapshot(key)
}

// GetStatusKeys returns the groups the cache knows of.
func (c *nackAwareCache) GetStatusKeys() []string {
	keys := c.SnapshotCache.GetStatusKeys()
	for _, k := range c.sotw.keys() {
		if !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	return keys
}

// CreateDeltaWatch parks delta watches for rejected versions and makes the
// next delta start from what the client accepted.
func (c *nackAwareCache) CreateDeltaWatch(req *cache.DeltaRequest, sub cache.Subscription, out chan cache.DeltaResponse) (func(), error) {
	hs := c.wrap(req.GetNode(), req.GetTypeUrl(), sub)
	key := deltaKey{hs.nodeID, hs.typeURL}
	c.mu.Lock()
	switch {
	case req.GetErrorDetail() != nil:
		c.deltaNacked[key] = true
	default:
		// An ACK, or a first request announcing what the client has. The map
		// is the server's own, replaced (never changed) on every response.
		c.deltaAcked[key] = sub.ReturnedResources()
		delete(c.deltaNacked, key)
	}
	if c.deltaNacked[key] {
		hs.accepted = c.deltaAcked[key]
		hs.useAccepted = true
	}
	c.mu.Unlock()
	return c.SnapshotCache.CreateDeltaWatch(req, hs, out)
}

// forget drops what is known of a node's delta streams.
func (c *nackAwareCache) forget(nodeID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.deltaAcked {
		if k.nodeID == nodeID {
			delete(c.deltaAcked, k)
			delete(c.deltaNacked, k)
		}
	}
}

func (c *nackAwareCache) wrap(node *corev3.Node, typeURL string, sub cache.Subscription) *heldSubscription {
	return &heldSubscription{
		Subscription: sub,
		group:        c.groups.of(node),
		nodeID:       node.GetId(),
		typeURL:      typeURL,
		held:         c.held,
	}
}

// heldSubscription reports the resources of a held version as already
// returned, but only while that version is still the current one: once the
// snapshot moves on, the cache sees the agent's real state again and computes
// the next response (delta: the differences) from what the agent really has.
type heldSubscription struct {
	cache.Subscription
	group, nodeID, typeURL string
	held                   heldVersions
	// accepted replaces the server's view of a delta client's resources
	// after a NACK (useAccepted).
	accepted    map[string]string
	useAccepted bool
}

func (s *heldSubscription) returned() map[string]string {
	if s.useAccepted {
		return s.accepted
	}
	return s.Subscription.ReturnedResources()
}

func (s *heldSubscription) current() (string, map[string]string) {
	return s.held.held(s.group, s.nodeID, s.typeURL)
}

// ReturnedResources implements cache.Subscription.
func (s *heldSubscription) ReturnedResources() map[string]string {
	version, resources := s.current()
	if version == "" {
		return s.returned()
	}
	out := maps.Clone(s.returned())
	if out == nil {
		out = make(map[string]string, len(resources))
	}
	maps.Copy(out, resources)
	return out
}

// groupMemo memoises fleet.NodeGroup per node message. The ADS server hands
// a stream's node to every request of the stream, so the labels are read and
// the key built once per stream, not once per request; an entry goes when its
// node is collected.
type groupMemo struct {
	mu sync.Mutex
	m  map[weak.Pointer[corev3.Node]]string
}

func (g *groupMemo) of(node *corev3.Node) string {
	if node == nil {
		return fleet.NodeGroup(nil)
	}
	wp := weak.Make(node)
	g.mu.Lock()
	key, ok := g.m[wp]
	g.mu.Unlock()
	if ok {
		return key
	}
	key = fleet.NodeGroup(node)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.m == nil {
		g.m = map[weak.Pointer[corev3.Node]]string{}
	}
	if _, ok := g.m[wp]; !ok {
		g.m[wp] = key
		runtime.AddCleanup(node, g.forget, wp)
	}
	return key
}

func (g *groupMemo) forget(wp weak.Pointer[corev3.Node]) {
	g.mu.Lock()
	delete(g.m, wp)
	g.mu.Unlock()
}
