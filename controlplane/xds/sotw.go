package xds

import (
	"context"
	"maps"
	"slices"
	"sync"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// prepared is one type of a group's snapshot as it goes on the wire: every
// resource marshalled once, when the snapshot is built, and shared read-only
// by the response to every agent of the group. go-control-plane's snapshot
// cache marshals each resource again for every response, and keeps a map of
// what was returned per agent and type; at 10,000 agents that is most of a
// push's CPU and of an idle agent's memory.
type prepared struct {
	version   string
	resources []*anypb.Any // sorted by name; never modified
	// returned maps every resource name to version: what an agent holds after
	// this response. Shared by every subscription it is handed to, never
	// modified (go-control-plane stores it and hands it back, and
	// heldSubscription clones before it adds to it).
	returned map[string]string
	// encoded is the response's wire form without a nonce (wireCodec); the
	// cache answers a request with the prepared type of its own type URL.
	encoded []byte
}

// prepare builds the wire form of one type: marshalled holds each resource's
// deterministic encoding (versionOf's), by name.
func prepare(typeURL, version string, marshalled map[string][]byte) *prepared {
	p := &prepared{version: version, returned: make(map[string]string, len(marshalled))}
	for _, name := range slices.Sorted(maps.Keys(marshalled)) {
		p.resources = append(p.resources, &anypb.Any{TypeUrl: typeURL, Value: marshalled[name]})
		p.returned[name] = version
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(&discoveryv3.DiscoveryResponse{VersionInfo: version, Resources: p.resources, TypeUrl: typeURL})
	if err == nil { // it cannot fail: Anys of bytes; without it, responses are marshalled per agent
		p.encoded = b
	}
	return p
}

// sharedResponse is a state-of-the-world response built from a prepared
// type. GetDiscoveryResponse returns a new message each time, because the
// server sets the nonce on it, but its resources are the prepared ones.
type sharedResponse struct {
	req *cache.Request
	p   *prepared
}

var _ cache.Response = (*sharedResponse)(nil)

// GetDiscoveryResponse implements cache.Response.
func (r *sharedResponse) GetDiscoveryResponse() (*discoveryv3.DiscoveryResponse, error) {
	return &discoveryv3.DiscoveryResponse{VersionInfo: r.p.version, Resources: r.p.resources, TypeUrl: r.req.GetTypeUrl()}, nil
}

// GetRequest implements cache.Response.
func (r *sharedResponse) GetRequest() *discoveryv3.DiscoveryRequest { return r.req }

// GetVersion implements cache.Response.
func (r *sharedResponse) GetVersion() (string, error) { return r.p.version, nil }

// GetResponseVersion implements cache.Response.
func (r *sharedResponse) GetResponseVersion() string { return r.p.version }

// GetReturnedResources implements cache.Response.
func (r *sharedResponse) GetReturnedResources() map[string]string { return maps.Clone(r.p.returned) }

// GetNextVersionMap implements cache.Response.
func (r *sharedResponse) GetNextVersionMap() map[string]string { return r.p.returned }

// GetContext implements cache.Response.
func (r *sharedResponse) GetContext() context.Context { return context.Background() }

// sotwCache answers state-of-the-world watches from prepared types, per
// group. It behaves like go-control-plane's snapshot cache in ADS mode for
// the wildcard requests nackAwareCache hands it: a request whose version
// differs from the group's is answered at once, one that names the current
// version is parked (unless the subscription lacks a resource of it) until
// the group's snapshot moves on; parked watches of a group are answered in
// ADS order (clusters, endpoints, listeners, routes, secrets).
type sotwCache struct {
	mu     sync.Mutex
	nextID int64
	groups map[string]*sotwGroup
}

type sotwGroup struct {
	types map[string]*prepared // by type URL; absent until the first snapshot
	// watches are the parked watches by response type (ADS order), then id.
	watches [types.UnknownType + 1]map[int64]*sotwWatch
}

type sotwWatch struct {
	req     *cache.Request
	sub     cache.Subscription
	deliver deliverFunc
}

// deliverFunc hands a watch's response to its stream. It is called with the
// cache's lock held and must not block or call back into the cache.
type deliverFunc func(cache.Response)

// toChannel delivers into a go-control-plane server's response channel,
// which has room for one response per type; the server reads one response
// per type before it asks again, so this never blocks.
func toChannel(out chan cache.Response) deliverFunc {
	return func(r cache.Response) { out <- r }
}

func newSOTWCache() *sotwCache {
	return &sotwCache{groups: map[string]*sotwGroup{}}
}

func (c *sotwCache) group(key string) *sotwGroup {
	g := c.groups[key]
	if g == nil {
		g = &sotwGroup{types: map[string]*prepared{}}
		for i := range g.watches {
			g.watches[i] = map[int64]*sotwWatch{}
		}
		c.groups[key] = g
	}
	return g
}

// createWatch answers req at once (answered) or parks it. The request must
// be a wildcard one (nackAwareCache makes it so).
func (c *sotwCache) createWatch(key string, req *cache.Request, sub cache.Subscription, deliver deliverFunc) (cancel func() (parked bool), answered bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.group(key)
	if p := g.types[req.GetTypeUrl()]; p != nil && (req.GetVersionInfo() != p.version || missing(sub, p)) {
		deliver(&sharedResponse{req: req, p: p})
		return func() bool { return false }, true
	}
	c.nextID++
	id := c.nextID
	rt := cache.GetResponseType(req.GetTypeUrl())
	g.watches[rt][id] = &sotwWatch{req: req, sub: sub, deliver: deliver}
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		if g := c.groups[key]; g != nil {
			if _, ok := g.watches[rt][id]; ok {
				delete(g.watches[rt], id)
				return true
			}
		}
		return false
	}, false
}

// missing reports whether p holds a resource the subscription was not sent.
func missing(sub cache.Subscription, p *prepared) bool {
	known := sub.ReturnedResources()
	if !sub.IsWildcard() {
		for name := range sub.SubscribedResources() {
			_, has := p.returned[name]
			if _, ok := known[name]; has && !ok {
				return true
			}
		}
		return false
	}
	for name := range p.returned {
		if _, ok := known[name]; !ok {
			return true
		}
	}
	return false
}

// set makes types the group's snapshot and answers the parked watches whose
// version differs, in ADS order.
func (c *sotwCache) set(key string, types map[string]*prepared, publish func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if publish != nil {
		publish()
	}
	g := c.group(key)
	g.types = types
	// Every stream has at most one watch per type, so answering type by
	// type sends each stream's responses in ADS order.
	for _, watches := range g.watches {
		for id, w := range watches {
			p := types[w.req.GetTypeUrl()]
			if p == nil || p.version == w.req.GetVersionInfo() {
				continue
			}
			w.deliver(&sharedResponse{req: w.req, p: p})
			delete(watches, id)
		}
	}
}

// clear forgets a group: its snapshot and its parked watches.
func (c *sotwCache) clear(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.groups, key)
}

// pruneUnknown forgets the groups that have no snapshot (none was ever set: the server
// does not know them, e.g. requests from a node without an id) and no parked watch, so
// such requests cannot grow the cache for ever.
func (c *sotwCache) pruneUnknown() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for key, g := range c.groups {
		if len(g.types) > 0 {
			continue
		}
		parked := false
		for _, ws := range g.watches {
			if len(ws) > 0 {
				parked = true
				break
			}
		}
		if !parked {
			delete(c.groups, key)
		}
	}
}

// keys returns the groups known.
func (c *sotwCache) keys() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Collect(maps.Keys(c.groups))
}
