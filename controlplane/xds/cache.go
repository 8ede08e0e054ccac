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
//
// It also keeps every open watch by node, so that an agent a rollout moves to
// another group (its snapshot key changed) is answered from the new group at
// once (rewatch), on the stream it has.
type nackAwareCache struct {
	// SnapshotCache serves delta streams; sotw serves state-of-the-world
	// ones from responses marshalled once per group (see prepared).
	cache.SnapshotCache
	sotw *sotwCache
	held heldVersions
	// groups memoises each node's labels group (fleet.NodeGroup); groupOf
	// is its snapshot key (Server.nodeKey: the labels group, and the
	// version an assignment pins on it).
	groups  groupMemo
	groupOf func(*corev3.Node) string

	mu sync.Mutex
	// deltaAcked is, per node and type, the resource versions a delta client
	// ACKed last (or announced when it subscribed); deltaNacked says whether
	// it rejected a response since.
	deltaAcked  map[deltaKey]map[string]string
	deltaNacked map[deltaKey]bool
	// watches are the open watches by node id.
	watches map[string]map[*trackedWatch]struct{}
}

// trackedWatch is one open watch, which rewatch can create again in the
// node's current group. The cancel function handed to go-control-plane
// cancels whichever watch is current.
type trackedWatch struct {
	nodeID, typeURL string
	// create creates the watch in the node's current group; answered says
	// it was answered at once.
	create func() (cancel func() (parked bool), answered bool, err error)

	mu sync.Mutex
	// cancel withdraws the current watch and reports whether it was still parked:
	// false once the group's snapshot answered it (sotwCache.set), which the
	// watch's creator cannot see otherwise.
	cancel func() (parked bool)
	closed bool
	// answered is true once the watch was answered: go-control-plane then
	// has a response of this type in flight, and the agent's next request
	// creates a new watch (in its current group). Creating it again would
	// put a second response of the type in the stream's channel, which has
	// room for one per type.
	answered bool
}

type deltaKey struct{ nodeID, typeURL string }

func newNACKAwareCache(c cache.SnapshotCache, held heldVersions, groupOf func(*corev3.Node) string) *nackAwareCache {
	return &nackAwareCache{
		SnapshotCache: c,
		sotw:          newSOTWCache(),
		held:          held,
		groupOf:       groupOf,
		deltaAcked:    map[deltaKey]map[string]string{},
		deltaNacked:   map[deltaKey]bool{},
		watches:       map[string]map[*trackedWatch]struct{}{},
	}
}

// track creates a watch and remembers it until its stream cancels it. The
// watch is registered before it is created, and created under its own lock:
// a rewatch (the node moved to another group) that comes in between waits
// for the creation and then moves it. Created first, a watch created in the
// old group just before the move would stay parked there, unseen by the
// rewatch, and the node would miss every push until its next request.
func (c *nackAwareCache) track(nodeID, typeURL string, create func() (func() bool, bool, error)) (func(), error) {
	w := &trackedWatch{nodeID: nodeID, typeURL: typeURL, create: create}
	w.mu.Lock()
	c.mu.Lock()
	if c.watches[nodeID] == nil {
		c.watches[nodeID] = map[*trackedWatch]struct{}{}
	}
	c.watches[nodeID][w] = struct{}{}
	c.mu.Unlock()
	cancel, answered, err := create()
	if err != nil {
		w.closed = true
		w.mu.Unlock()
		c.untrack(w)
		return nil, err
	}
	w.cancel, w.answered = cancel, answered
	w.mu.Unlock()
	return func() {
		w.mu.Lock()
		w.closed = true
		if w.cancel != nil {
			w.cancel()
		}
		w.mu.Unlock()
		c.untrack(w)
	}, nil
}

func (c *nackAwareCache) untrack(w *trackedWatch) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.watches[w.nodeID], w)
	if len(c.watches[w.nodeID]) == 0 {
		delete(c.watches, w.nodeID)
	}
}

// rewatch creates the parked watches of a node again: after its snapshot
// key changed, they are answered from its new group (at once when the
// versions differ), and its old group no longer answers them. Watches
// already answered are left alone (see trackedWatch.answered).
func (c *nackAwareCache) rewatch(nodeID string) {
	c.mu.Lock()
	ws := make([]*trackedWatch, 0, len(c.watches[nodeID]))
	for w := range c.watches[nodeID] {
		ws = append(ws, w)
	}
	c.mu.Unlock()
	// Make before break: clusters before the listeners that name them.
	slices.SortFunc(ws, func(a, b *trackedWatch) int {
		return slices.Index(pushTypes, a.typeURL) - slices.Index(pushTypes, b.typeURL)
	})
	for _, w := range ws {
		w.mu.Lock()
		if !w.closed && !w.answered {
			// Withdraw the parked watch; if a new snapshot answered it meanwhile,
			// a response of this type is in flight and the agent's next request
			// creates the next watch: creating it again here would put a second
			// response of the type on the stream.
			if w.cancel != nil && !w.cancel() {
				w.answered = true
				w.mu.Unlock()
				continue
			}
			cancel, answered, err := w.create()
			if err != nil {
				cancel, answered = nil, true // nothing parked: leave it to the next request
			}
			w.cancel, w.answered = cancel, answered
		}
		w.mu.Unlock()
	}
}

// CreateWatch parks state-of-the-world watches for rejected versions.
// go-control-plane's server calls it for the per-type discovery services;
// ADS streams are served by adsServer, which calls watch.
func (c *nackAwareCache) CreateWatch(req *cache.Request, sub cache.Subscription, out chan cache.Response) (func(), error) {
	return c.watch(req, sub, toChannel(out))
}

// watch is CreateWatch with the response handed to deliver.
func (c *nackAwareCache) watch(req *cache.Request, sub cache.Subscription, deliver deliverFunc) (func(), error) {
	return c.track(req.GetNode().GetId(), req.GetTypeUrl(), func() (func() bool, bool, error) { return c.createWatch(req, sub, deliver) })
}

func (c *nackAwareCache) createWatch(req *cache.Request, sub cache.Subscription, deliver deliverFunc) (func() bool, bool, error) {
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
	cancel, answered := c.sotw.createWatch(hs.group, req, hs, deliver)
	return cancel, answered, nil
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
	return c.track(req.GetNode().GetId(), req.GetTypeUrl(), func() (func() bool, bool, error) {
		cancel, answered, err := c.createDeltaWatch(req, sub, out)
		if cancel == nil {
			return nil, answered, err
		}
		// go-control-plane's delta cache does not say whether a watch was answered
		// after it was created: rewatch treats it as still parked.
		return func() bool { cancel(); return true }, answered, err
	})
}

// createDeltaWatch creates a delta watch; go-control-plane's cache returns
// no cancel function for a watch it answered at once.
func (c *nackAwareCache) createDeltaWatch(req *cache.DeltaRequest, sub cache.Subscription, out chan cache.DeltaResponse) (func(), bool, error) {
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
	cancel, err := c.SnapshotCache.CreateDeltaWatch(req, hs, out)
	return cancel, err == nil && cancel == nil, err
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
		group:        c.groupOf(node),
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
