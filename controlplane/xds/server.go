// Package xds serves the fleet's configuration to agents over Envoy's xDS v3
// protocol: state-of-the-world ADS, which agents and gRPC clients use, with a
// stream handler of our own (adsServer: one goroutine per idle stream), and
// delta ADS and the per-type discovery services with go-control-plane's
// server; both answer from one cache (nackAwareCache).
//
// Agents are grouped by their labels: agents with equal label sets share one
// snapshot, so memory and compile work grow with the number of groups, not of
// agents. When a version is set, the bundle is compiled once per group and
// each resource type gets a new version only if its content changed for that
// group; an unchanged type is not pushed again. ADS responses go out in
// make-before-break order (CDS, EDS, LDS, RDS: routes after the listeners
// that name them, as Envoy orders them; go-control-plane sends SDS last,
// and agents wait for the secrets a listener or cluster names as they wait
// for EDS), and a version an agent NACKed is
// never pushed to that agent again (see nackAwareCache).
//
// Canary rollouts pin a version on some agents (SetAssignments): such an
// agent's snapshot key is its labels group followed by the version
// ("dc=ams|v8", nodeKey), so agents with the same labels and version still
// share one snapshot, and SetVersion (the active version) leaves pinned
// groups alone. An agent whose key changes is moved on its open stream: its
// parked watches are created again in the new group (nackAwareCache.rewatch).
//
// Proxyless gRPC clients (fleet.IsGRPCClient) are grouped apart from agents
// (fleet.NodeGroup): their snapshots hold only what grpc_services compile to
// (compiler.CompileGRPC), and agents never see those api_listeners.
package xds

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	secretservice "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	gcplog "github.com/envoyproxy/go-control-plane/pkg/log"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/sotw/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"

	"github.com/flotilla-proxy/flotilla/controlplane/bundle"
	"github.com/flotilla-proxy/flotilla/controlplane/compiler"
	"github.com/flotilla-proxy/flotilla/controlplane/fleet"
	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
	configv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/config/v1"
)

// Options configure a Server.
type Options struct {
	// Logger is used for the server's own lines and go-control-plane's
	// (at debug level); nil means slog.Default().
	Logger *slog.Logger
	// GroupIdleTimeout is how long a group's snapshot is kept after its last
	// agent left; idle groups are dropped when a version is set. 0 means 10m.
	GroupIdleTimeout time.Duration
	// RejectionTimeout is how long a NACK of an agent that left is remembered.
	// 0 means 1h.
	RejectionTimeout time.Duration
	// Observer is told about pushes, ACKs, NACKs and agents converging on a
	// config version (fleet.Observer); nil means nobody.
	Observer fleet.Observer
	// StreamRate bounds how many new xDS streams a second are served (see
	// admission); the others wait their turn. 0 means 5000; negative means
	// no bound.
	StreamRate float64
	// StreamBurst is how many streams may be admitted at once above
	// StreamRate. 0 means 1000.
	StreamBurst int
}

func (o Options) groupIdleTimeout() time.Duration {
	if o.GroupIdleTimeout == 0 {
		return 10 * time.Minute
	}
	return o.GroupIdleTimeout
}

func (o Options) rejectionTimeout() time.Duration {
	if o.RejectionTimeout == 0 {
		return time.Hour
	}
	return o.RejectionTimeout
}

// Server is the xDS server and the fleet registry behind it. It is safe for
// concurrent use.
type Server struct {
	opts      Options
	log       *slog.Logger
	registry  *fleet.Registry
	cache     *nackAwareCache
	xds       serverv3.Server
	admission *admission // nil: no bound

	// mu serialises everything that builds snapshots (SetVersion and the
	// first sight of a group), so snapshots are set in version order.
	mu     sync.Mutex
	config *configState

	// groupsMu guards groups. It is never held while calling into the cache:
	// the cache calls back into held() under its own lock.
	groupsMu sync.RWMutex
	groups   map[string]*group

	// routing says which agents a rollout assigned a version to (nodeKey).
	// Stored under mu, read without it.
	routing atomic.Pointer[routing]
}

type configState struct {
	number uint64
	bundle *configv1.Bundle
}

// group is one set of labels and the versions of its current snapshot.
type group struct {
	labels map[string]string
	// grpc is true for a group of proxyless gRPC clients.
	grpc bool
	// pinned is the config version an assignment pins on the group's
	// agents; 0: the group follows the active version.
	pinned uint64
	types  map[string]typeVersion // replaced whole, never mutated
	// number is the config version types was built from; prev and
	// prevNumber are the snapshot before it, which agents that rejected
	// the current one still run. Guarded by Server.groupsMu.
	number, prevNumber uint64
	prev               map[string]typeVersion
	// idleSince is when the group was first seen without agents; zero while
	// it has some. Guarded by Server.groupsMu.
	idleSince time.Time
}

// typeVersion is one type of a group's snapshot.
type typeVersion struct {
	version   string
	hash      string            // of the type's content, to detect "unchanged"
	resources map[string]string // resource name → content hash (delta's version map)
	wire      *prepared         // what state-of-the-world responses carry
}

// pushTypes are the types in a snapshot, in push order.
// SDS is listed before LDS as in Envoy's make-before-break order; the
// ordered ADS server of go-control-plane sends it after LDS all the same,
// which is correct because agents wait for the secrets a listener or cluster
// names, as they wait for EDS.
var pushTypes = []string{resource.ClusterType, resource.EndpointType, resource.SecretType, resource.ListenerType, resource.RouteType}

// New returns a Server with no configuration: agents that connect wait until
// SetVersion is called.
func New(opts Options) *Server {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Server{opts: opts, log: log, groups: map[string]*group{}}
	if r := opts.streamRate(); r > 0 {
		s.admission = newAdmission(r, opts.streamBurst())
	}
	s.registry = fleet.NewRegistry(fleet.Options{
		Logger:        log,
		Desired:       s.desired,
		OnNodeSeen:    s.nodeSeen,
		ConfigVersion: s.configVersion,
		Observer:      opts.Observer,
		GroupOf:       s.nodeKey,
	})
	snapshots := cache.NewSnapshotCache(true, groupHash{s}, gcpLogger(log))
	s.cache = newNACKAwareCache(snapshots, s, s.nodeKey)
	s.xds = serverv3.NewServer(context.Background(), s.cache, s.registry, sotw.WithOrderedADS())
	return s
}

// Register registers ADS and the per-type discovery services on g. New
// streams of every one of them are admitted at Options.StreamRate; other
// services on g (the agents' reports) are not held back.
func (s *Server) Register(g *grpc.Server) {
	adm := admitted{Server: s.xds, adm: s.admission}
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, &adsServer{Server: adm, cache: s.cache, callbacks: s.registry, admission: s.admission})
	clusterservice.RegisterClusterDiscoveryServiceServer(g, adm)
	endpointservice.RegisterEndpointDiscoveryServiceServer(g, adm)
	listenerservice.RegisterListenerDiscoveryServiceServer(g, adm)
	routeservice.RegisterRouteDiscoveryServiceServer(g, adm)
	secretservice.RegisterSecretDiscoveryServiceServer(g, adm)
}

// Agents returns the connected agents matching selector.
func (s *Server) Agents(selector map[string]string) []*adminv1.Agent {
	return s.registry.Agents(selector)
}

// Briefs returns the connected agents matching selector, briefly (fleet.Brief).
func (s *Server) Briefs(selector map[string]string) []fleet.Brief {
	return s.registry.Briefs(selector)
}

// SetVersion makes version number with the given files the fleet's active
// configuration: every group not pinned to a version by an assignment
// (SetAssignments) gets a new snapshot. The files must be valid
// (bundle.Validate).
func (s *Server) SetVersion(number uint64, files []*adminv1.ConfigFile) error {
	cfg := &configState{number: number, bundle: bundle.Merge(files)}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.config = cfg
	r := &routing{active: number}
	if old := s.routing.Load(); old != nil {
		r.assigns, r.bundles = old.assigns, old.bundles
	}
	s.routing.Store(r)
	s.forgetIdle()
	s.groupsMu.RLock()
	keys := make([]string, 0, len(s.groups))
	for k, g := range s.groups {
		if g.pinned == 0 {
			keys = append(keys, k)
		}
	}
	s.groupsMu.RUnlock()
	var firstErr error
	for _, key := range keys {
		if err := s.build(key, cfg); err != nil {
			s.log.Error("cannot build snapshot", "group", key, "version", number, "error", err)
			if firstErr == nil {
				firstErr = err
			}
		}
	}
	s.log.Info("config version set", "version", number, "groups", len(keys))
	// Agents pinned to the version that is now active join their labels'
	// group again.
	if err := s.regroup(); err != nil && firstErr == nil {
		firstErr = err
	}
	return firstErr
}

// Check compiles files for every group of agents seen so far (and for an
// agent with no labels), without changing anything: the dry run of an apply.
func (s *Server) Check(files []*adminv1.ConfigFile) error {
	b := bundle.Merge(files)
	s.groupsMu.RLock()
	groups := []*group{{labels: map[string]string{}}, {labels: map[string]string{}, grpc: true}}
	for _, g := range s.groups {
		groups = append(groups, g)
	}
	s.groupsMu.RUnlock()
	for _, g := range groups {
		if _, err := compile(b, g); err != nil {
			who := "agents"
			if g.grpc {
				who = "gRPC clients"
			}
			return fmt.Errorf("%s with labels %q: %w", who, fleet.GroupKey(g.labels), err)
		}
	}
	return nil
}

// compile compiles b for a group: the agents' resources, or for a group of
// gRPC clients what grpc_services compile to.
func compile(b *configv1.Bundle, g *group) (*compiler.Resources, error) {
	if g.grpc {
		return compiler.CompileGRPC(b, g.labels)
	}
	return compiler.Compile(b, g.labels)
}

// forgetIdle drops the groups no agent has used for GroupIdleTimeout, and the
// rejections of agents long gone, so that what the control plane keeps and
// what every apply compiles grows with the fleet as it is, not as it was.
// Callers hold s.mu.
func (s *Server) forgetIdle() {
	for _, node := range s.registry.Prune(s.opts.rejectionTimeout()) {
		s.cache.forget(node)
	}
	live := s.registry.Groups()
	now := time.Now()
	var drop []string
	s.groupsMu.Lock()
	for key, g := range s.groups {
		switch {
		case live[key] > 0:
			g.idleSince = time.Time{}
		case g.idleSince.IsZero():
			g.idleSince = now
		}
		if !g.idleSince.IsZero() && now.Sub(g.idleSince) >= s.opts.groupIdleTimeout() {
			delete(s.groups, key)
			drop = append(drop, key)
		}
	}
	s.groupsMu.Unlock()
	for _, key := range drop {
		s.cache.ClearSnapshot(key)
		s.log.Info("dropped the snapshot of an idle group", "group", key)
	}
	s.cache.sotw.pruneUnknown()
}

// nodeSeen creates the snapshot of a node's group the first time the group is
// seen, and marks a known group as in use.
func (s *Server) nodeSeen(node *corev3.Node) {
	labels := fleet.Labels(node)
	key := s.nodeKey(node)
	s.groupsMu.Lock()
	g, ok := s.groups[key]
	if ok {
		// Touched under the write lock: forgetIdle, which runs under s.mu,
		// either sees this and keeps the group, or dropped it before and
		// the slow path below builds it again.
		g.idleSince = time.Time{}
	}
	s.groupsMu.Unlock()
	if ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = s.addGroup(key, labels) // logged; a no-op if built meanwhile
}

// build compiles cfg for one group and sets its snapshot. Types whose content
// did not change keep their version, so they are not pushed again. Callers hold s.mu.
func (s *Server) build(key string, cfg *configState) error {
	s.groupsMu.RLock()
	g := s.groups[key]
	s.groupsMu.RUnlock()
	res, err := compile(cfg.bundle, g)
	if err != nil {
		return fmt.Errorf("compile version %d for group %q: %w", cfg.number, key, err)
	}
	items := map[string][]types.Resource{
		resource.ClusterType:  asResources(res.Clusters),
		resource.EndpointType: asResources(res.Endpoints),
		resource.ListenerType: asResources(res.Listeners),
		resource.SecretType:   asResources(res.Secrets),
		resource.RouteType:    asResources(res.Routes),
	}
	snap := &cache.Snapshot{VersionMap: map[string]map[string]string{}}
	next := make(map[string]typeVersion, len(items))
	wire := make(map[string]*prepared, len(items))
	for _, typeURL := range pushTypes {
		tv, marshalled, err := versionOf(items[typeURL])
		if err != nil {
			return fmt.Errorf("group %q: %w", key, err)
		}
		tv.version = strconv.FormatUint(cfg.number, 10)
		prev, ok := g.types[typeURL]
		if !ok && g.pinned != 0 {
			// A new pinned group (a rollout's canaries): a type whose
			// content the group of the same labels on the active version
			// serves takes its version, so agents moved between the two are
			// not sent the same resources again.
			prev, ok = s.sameContent(key, typeURL, tv.hash)
		}
		if ok && prev.hash == tv.hash {
			tv.version = prev.version
			// Unchanged: keep what agents were sent, shared.
			tv.wire = prev.wire
		} else {
			tv.wire = prepare(typeURL, tv.version, marshalled)
		}
		next[typeURL] = tv
		wire[typeURL] = tv.wire
		snap.Resources[cache.GetResponseType(typeURL)] = cache.NewResources(tv.version, items[typeURL])
		snap.VersionMap[typeURL] = tv.resources
	}
	// go-control-plane's check does not see the routes an api_listener
	// names; CompileGRPC emits one route configuration per api_listener.
	if err := snap.Consistent(); err != nil && !g.grpc {
		return fmt.Errorf("group %q: inconsistent snapshot: %w", key, err)
	}
	// The versions are published (for held(), the NACK hold) together with the
	// state-of-the-world responses, under the cache's lock: see setSnapshot.
	publish := func() {
		s.groupsMu.Lock()
		g.prev, g.prevNumber = g.types, g.number
		g.types, g.number = next, cfg.number
		s.groupsMu.Unlock()
	}
	return s.cache.setSnapshot(context.Background(), key, snap, wire, publish)
}

// sameContent returns the type typeURL of the unpinned group of a pinned
// group's labels (key without its "|vN"), if its content hash is hash.
func (s *Server) sameContent(key, typeURL, hash string) (typeVersion, bool) {
	i := strings.LastIndex(key, pinnedSep)
	if i < 0 {
		return typeVersion{}, false
	}
	s.groupsMu.RLock()
	defer s.groupsMu.RUnlock()
	if base := s.groups[key[:i]]; base != nil {
		if tv, ok := base.types[typeURL]; ok && tv.hash == hash {
			return tv, true
		}
	}
	return typeVersion{}, false
}

func asResources[T types.Resource](in []T) []types.Resource {
	out := make([]types.Resource, len(in))
	for i, r := range in {
		out[i] = r
	}
	return out
}

// versionOf hashes a type's resources (each marshalled once, deterministically,
// as go-control-plane does for delta's version map) and returns their
// encodings by name.
func versionOf(items []types.Resource) (typeVersion, map[string][]byte, error) {
	tv := typeVersion{resources: make(map[string]string, len(items))}
	marshalled := make(map[string][]byte, len(items))
	h := sha256.New()
	for _, r := range items {
		b, err := cache.MarshalResource(r)
		if err != nil {
			return tv, nil, fmt.Errorf("marshal %q: %w", cache.GetResourceName(r), err)
		}
		name := cache.GetResourceName(r)
		marshalled[name] = b
		rh := cache.HashResource(b)
		tv.resources[name] = rh
		fmt.Fprintf(h, "%s\x00%s\x00", name, rh)
	}
	tv.hash = hex.EncodeToString(h.Sum(nil))
	return tv, marshalled, nil
}

// desired is the version a group should run for a type.
func (s *Server) desired(group, typeURL string) string {
	s.groupsMu.RLock()
	defer s.groupsMu.RUnlock()
	if g := s.groups[group]; g != nil {
		return g.types[typeURL].version
	}
	return ""
}

// configVersion implements fleet.Options.ConfigVersion: the config version
// of group's current snapshot if acked covers it, else that of the snapshot
// before it (an agent that rejected the current one runs the previous one),
// else 0.
func (s *Server) configVersion(group string, acked map[string]string) uint64 {
	s.groupsMu.RLock()
	defer s.groupsMu.RUnlock()
	g := s.groups[group]
	switch {
	case g == nil:
		return 0
	case covers(acked, g.types):
		return g.number
	case g.prev != nil && covers(acked, g.prev):
		return g.prevNumber
	}
	return 0
}

// covers reports whether acked runs a snapshot's types: every type holding
// resources ACKed at the snapshot's version; the types subscribed by name
// (EDS, RDS, SDS) only once ACKed at all, since an agent asks for them only
// when a cluster or listener names them (and ACKs those only with what they
// name).
func covers(acked map[string]string, types map[string]typeVersion) bool {
	if len(types) == 0 {
		return false
	}
	for typeURL, tv := range types {
		v, ok := acked[typeURL]
		switch {
		case typeURL == resource.ClusterType || typeURL == resource.ListenerType:
			// Always subscribed (wildcard): the agent must have ACKed this version,
			// even when it is empty (a version that removes every listener of the
			// group is not run until the agent has dropped them).
			if !ok || v != tv.version {
				return false
			}
		case len(tv.resources) == 0:
			// An empty named type (EDS, RDS, SDS) is never subscribed to.
		case ok && v != tv.version:
			return false
		}
	}
	return true
}

// held implements heldVersions: the group's current version of a type, if
// the node rejected it.
func (s *Server) held(group, nodeID, typeURL string) (string, map[string]string) {
	s.groupsMu.RLock()
	var tv typeVersion
	if g := s.groups[group]; g != nil {
		tv = g.types[typeURL]
	}
	s.groupsMu.RUnlock()
	if tv.version == "" || !s.registry.Rejected(nodeID, typeURL, tv.version) {
		return "", nil
	}
	return tv.version, tv.resources
}

// groupHash maps a node to its group's snapshot key (Server.nodeKey).
type groupHash struct{ s *Server }

func (h groupHash) ID(node *corev3.Node) string { return h.s.nodeKey(node) }

// gcpLogger sends go-control-plane's logs to slog at debug level.
func gcpLogger(log *slog.Logger) gcplog.Logger {
	f := func(format string, args ...any) {
		log.Debug(fmt.Sprintf(format, args...), "component", "go-control-plane")
	}
	return gcplog.LoggerFuncs{DebugFunc: f, InfoFunc: f, WarnFunc: f, ErrorFunc: func(format string, args ...any) {
		log.Error(fmt.Sprintf(format, args...), "component", "go-control-plane")
	}}
}
