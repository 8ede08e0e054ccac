package xds

import (
	"maps"

	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/proto"

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
type nackAwareCache struct {
	cache.SnapshotCache
	held heldVersions
}

// CreateWatch parks state-of-the-world watches for rejected versions.
func (c *nackAwareCache) CreateWatch(req *cache.Request, sub cache.Subscription, out chan cache.Response) (func(), error) {
	hs := c.wrap(req.GetNode(), req.GetTypeUrl(), sub)
	if version, _ := hs.current(); version != "" && req.GetVersionInfo() != version {
		parked := proto.Clone(req).(*cache.Request)
		parked.VersionInfo = version
		req = parked
	}
	return c.SnapshotCache.CreateWatch(req, hs, out)
}

// CreateDeltaWatch parks delta watches for rejected versions.
func (c *nackAwareCache) CreateDeltaWatch(req *cache.DeltaRequest, sub cache.Subscription, out chan cache.DeltaResponse) (func(), error) {
	return c.SnapshotCache.CreateDeltaWatch(req, c.wrap(req.GetNode(), req.GetTypeUrl(), sub), out)
}

func (c *nackAwareCache) wrap(node *corev3.Node, typeURL string, sub cache.Subscription) *heldSubscription {
	return &heldSubscription{
		Subscription: sub,
		group:        fleet.GroupKey(fleet.Labels(node)),
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
}

func (s *heldSubscription) current() (string, map[string]string) {
	return s.held.held(s.group, s.nodeID, s.typeURL)
}

// ReturnedResources implements cache.Subscription.
func (s *heldSubscription) ReturnedResources() map[string]string {
	version, resources := s.current()
	if version == "" {
		return s.Subscription.ReturnedResources()
	}
	out := maps.Clone(s.Subscription.ReturnedResources())
	if out == nil {
		out = make(map[string]string, len(resources))
	}
	maps.Copy(out, resources)
	return out
}
