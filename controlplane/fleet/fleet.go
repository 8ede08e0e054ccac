// Package fleet is the control plane's view of its agents: who is connected,
// with which labels, and per xDS resource type which version was sent, which
// one the agent ACKed and what it last rejected.
//
// The Registry learns all of this from go-control-plane's server callbacks (it
// implements server.Callbacks), so it sees exactly what went over the wire for
// state-of-the-world and delta streams alike. It also remembers rejected
// versions per agent after the agent's stream closes, so that the xDS layer can
// refuse to push a version to an agent that already said no to it.
//
// Proxyless gRPC clients connect like agents and are tracked the same way;
// NodeGroup keeps them in groups of their own.
package fleet

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
)

// TrackedTypes are the resource types reported per agent, in push order.
var TrackedTypes = []string{resource.ClusterType, resource.EndpointType, resource.SecretType, resource.ListenerType, resource.RouteType}

// GRPCGroupPrefix starts the group key of proxyless gRPC clients (see
// NodeGroup). Label keys and values cannot contain '|', so no agent group
// key starts with it.
const GRPCGroupPrefix = "grpc|"

// IsGRPCClient reports whether a node is a proxyless gRPC client rather than
// an agent (flotilla-agent or Envoy): gRPC's xDS clients name themselves in
// user_agent_name as "gRPC Go", "gRPC Java", "gRPC C-core" and so on. Such
// clients request listeners by name and must only see the api_listeners of
// grpc_services, never the listeners agents serve.
func IsGRPCClient(node *corev3.Node) bool {
	return strings.HasPrefix(node.GetUserAgentName(), "gRPC")
}

// NodeGroup is the key of the snapshot a node is served: GroupKey of its
// labels for agents, and GRPCGroupPrefix followed by it for gRPC clients, so
// that a gRPC client never shares a snapshot with agents of the same labels.
func NodeGroup(node *corev3.Node) string {
	key := GroupKey(Labels(node))
	if IsGRPCClient(node) {
		return GRPCGroupPrefix + key
	}
	return key
}

// ShortName returns the xDS short name of a type URL (CDS, EDS, LDS, RDS, SDS)
// or the type URL itself.
func ShortName(typeURL string) string {
	switch typeURL {
	case resource.ClusterType:
		return "CDS"
	case resource.EndpointType:
		return "EDS"
	case resource.ListenerType:
		return "LDS"
	case resource.RouteType:
		return "RDS"
	case resource.SecretType:
		return "SDS"
	}
	return typeURL
}

// Labels returns the labels an agent carries in its node metadata under the
// "labels" key (a struct of string values). Non-string values are ignored.
func Labels(node *corev3.Node) map[string]string {
	out := map[string]string{}
	fields := node.GetMetadata().GetFields()["labels"].GetStructValue().GetFields()
	for k, v := range fields {
		if sv := v.GetStringValue(); sv != "" {
			out[k] = sv
		}
	}
	return out
}

// GroupKey is the canonical form of a label set ("dc=ams,role=edge"); agents
// with equal keys share one snapshot.
func GroupKey(labels map[string]string) string {
	keys := slices.Sorted(maps.Keys(labels))
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(labels[k])
	}
	return b.String()
}

// DesiredFunc returns the version an agent of a group should run for a type,
// or "" when there is none yet.
type DesiredFunc func(group, typeURL string) string

// Options configure a Registry.
type Options struct {
	// Logger receives ACK/NACK and connect/disconnect lines; nil means slog.Default().
	Logger *slog.Logger
	// Desired tells the registry which version each group should run, to
	// compute sync states. Nil means every type is reported by sent/acked only.
	Desired DesiredFunc
	// OnNodeSeen is called (outside the registry's lock) the first time a stream
	// names its node, before the request is handed to the cache, so that the
	// xDS layer can build the node's group snapshot. Nil means nothing is called.
	OnNodeSeen func(node *corev3.Node)
	// ConfigVersion returns the config version of a group's current snapshot
	// when acked (type URL → version an agent ACKed, types never ACKed left
	// out) covers all of it, else 0. It is called with the registry's lock
	// held and must not call back into the registry. Nil means config
	// versions are unknown: Agent.config_version stays 0 and
	// Observer.Converged is never called.
	ConfigVersion func(group string, acked map[string]string) uint64
	// Observer is told about pushes, answers and convergence; nil means nobody.
	Observer Observer
	// GroupOf returns the key of the snapshot a node is served (the group
	// Desired and ConfigVersion are asked about). It is called with the
	// registry's lock held and must not call back into the registry. Nil
	// means NodeGroup.
	GroupOf func(node *corev3.Node) string
}

func (o Options) groupOf(node *corev3.Node) string {
	if o.GroupOf == nil {
		return NodeGroup(node)
	}
	return o.GroupOf(node)
}

// Observer is told what the registry sees, for metrics. Its methods are
// called outside the registry's lock, from the xDS server's goroutines, so
// they must be safe for concurrent use and quick.
type Observer interface {
	// Pushed is called for every response sent to an agent.
	Pushed(nodeID, typeURL, version string)
	// Answered is called for every ACK (nack false) or NACK of the latest
	// response of a type.
	Answered(nodeID, typeURL, version string, nack bool)
	// Converged is called when an agent's ACK completes a config version
	// other than the one it last ran on this stream: it now runs all of the
	// snapshot of version for its group. It is not called again for the
	// same version when an assignment moves the stream to another group of
	// that version (a rollout completing). opened is when the agent's
	// stream opened; moved is when Regroup last moved it to another group
	// (a rollout assigned or took back a version), zero if never.
	Converged(nodeID string, labels map[string]string, version uint64, opened, moved time.Time)
}

// typeState is what happened to one resource type on one agent.
type typeState struct {
	sent      string // version of the latest response sent
	sentNonce string // nonce of that response; only it is answered
	acked     string
}

// agent is one node id. It may briefly have two streams while reconnecting
// (an agent restarted with new labels while its old stream lingers); the
// newest one describes it.
type agent struct {
	nodeID  string
	streams map[streamKey]*stream
}

// newest returns the agent's most recently opened stream.
func (a *agent) newest() *stream {
	var n *stream
	for _, s := range a.streams {
		if n == nil || s.opened.After(n.opened) {
			n = s
		}
	}
	return n
}

// streamKey tells state-of-the-world and delta streams apart: go-control-plane
// numbers each kind from 1 on its own.
type streamKey struct {
	delta bool
	id    int64
}

// stream is one xDS stream. Nonces are per stream, so what was sent and
// answered is tracked per stream too.
type stream struct {
	peer      string
	opened    time.Time
	nodeID    string // "" until the first request names the node
	node      *corev3.Node
	labels    map[string]string
	group     string
	userAgent string
	types     map[string]*typeState
	// converged is the config version the stream last reported to
	// Observer.Converged, so that each is reported once.
	converged uint64
	// moved is when Regroup last moved the stream to another group.
	moved time.Time
}

// Registry tracks agents. It is safe for concurrent use.
type Registry struct {
	opts Options

	mu      sync.Mutex
	streams map[streamKey]*stream
	agents  map[string]*agent
	// rejected remembers, per node id and type URL, the agent's last NACK. It
	// outlives streams: a reconnecting agent is not sent that version again.
	rejected map[string]map[string]*adminv1.Nack
	// gone is when each node without a stream lost its last one; Prune
	// forgets the rejections of nodes gone for long.
	gone map[string]time.Time
}

// maxNackMessage bounds an agent's error_detail as stored and logged: it is
// remote input.
const maxNackMessage = 1024

// NewRegistry returns an empty registry.
func NewRegistry(opts Options) *Registry {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Registry{
		opts:     opts,
		streams:  map[streamKey]*stream{},
		agents:   map[string]*agent{},
		rejected: map[string]map[string]*adminv1.Nack{},
		gone:     map[string]time.Time{},
	}
}

// Groups returns the number of connected agents per group key.
func (r *Registry) Groups() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int)
	for _, a := range r.agents {
		out[a.newest().group]++
	}
	return out
}

// Prune forgets the rejections of agents that have had no stream for longer
// than d: a node id that comes back after that is sent the current versions
// again.
// It returns the node ids it forgot.
func (r *Registry) Prune(d time.Duration) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var pruned []string
	for node, t := range r.gone {
		if time.Since(t) > d {
			delete(r.rejected, node)
			delete(r.gone, node)
			pruned = append(pruned, node)
		}
	}
	return pruned
}

var _ serverv3.Callbacks = (*Registry)(nil)

// Rejected reports whether the agent nodeID rejected version of typeURL.
func (r *Registry) Rejected(nodeID, typeURL, version string) bool {
	if version == "" {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rejected[nodeID][typeURL].GetVersion() == version
}

// Agents returns the connected agents whose labels include selector, sorted by node id.
func (r *Registry) Agents(selector map[string]string) []*adminv1.Agent {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*adminv1.Agent, 0, len(r.agents))
	for _, a := range r.agents {
		s := a.newest()
		if !matches(selector, s.labels) {
			continue
		}
		pa := &adminv1.Agent{
			NodeId:         a.nodeID,
			Labels:         maps.Clone(s.labels),
			ConnectedSince: timestamppb.New(s.opened),
			Peer:           s.peer,
			UserAgent:      s.userAgent,
			ConfigVersion:  r.configVersion(s),
		}
		for _, t := range TrackedTypes {
			pa.Resources = append(pa.Resources, r.status(a.nodeID, s, t))
		}
		out = append(out, pa)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].NodeId < out[j].NodeId })
	return out
}

func matches(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// configVersion is the config version the stream's agent runs entirely, or 0.
// Callers hold r.mu.
func (r *Registry) configVersion(s *stream) uint64 {
	if r.opts.ConfigVersion == nil {
		return 0
	}
	acked := make(map[string]string, len(s.types))
	for t, ts := range s.types {
		if ts.acked != "" {
			acked[t] = ts.acked
		}
	}
	return r.opts.ConfigVersion(s.group, acked)
}

// status summarises one type on one agent, like istioctl proxy-status.
func (r *Registry) status(nodeID string, s *stream, typeURL string) *adminv1.ResourceStatus {
	st := &adminv1.ResourceStatus{TypeUrl: typeURL, Short: ShortName(typeURL)}
	st.State, st.Desired, st.LastNack = r.state(nodeID, s, typeURL)
	if ts := s.types[typeURL]; ts != nil {
		st.Sent, st.Acked = ts.sent, ts.acked
	}
	return st
}

// state is a type's sync state on a stream, the version the agent should
// run and its last NACK of the type. Callers hold r.mu.
func (r *Registry) state(nodeID string, s *stream, typeURL string) (adminv1.SyncState, string, *adminv1.Nack) {
	var desired string
	if r.opts.Desired != nil {
		desired = r.opts.Desired(s.group, typeURL)
	}
	ts := s.types[typeURL]
	if desired == "" && ts != nil && ts.sent != "" {
		desired = ts.sent
	}
	// An agent can be NACKED with nothing sent on its current stream: the
	// version it rejected on an earlier stream is held back from it.
	nack := r.rejected[nodeID][typeURL]
	rejected := nack.GetVersion()
	switch {
	case rejected != "" && rejected == desired:
		return adminv1.SyncState_SYNC_STATE_NACKED, desired, nack
	case ts == nil || ts.sent == "":
		return adminv1.SyncState_SYNC_STATE_NOT_SENT, desired, nack
	case ts.acked == desired && ts.acked == ts.sent:
		return adminv1.SyncState_SYNC_STATE_SYNCED, desired, nack
	default:
		return adminv1.SyncState_SYNC_STATE_STALE, desired, nack
	}
}

// Brief is a connected agent as the rollout controller reads it at every
// tick: what Agents says of it, without a status per type.
type Brief struct {
	NodeID, UserAgent string
	// Labels are the registry's own: read them, never change them.
	Labels        map[string]string
	ConfigVersion uint64
	// NackType is the short name (ShortName) of the first type in
	// TrackedTypes the agent is NACKED on, "" when none; Nack is that NACK.
	NackType string
	Nack     *adminv1.Nack
}

// Briefs returns the connected agents whose labels include selector, in no
// particular order. At 10,000 agents it costs a fraction of Agents, which
// builds a message per agent and type, clones the labels and sorts, all
// under the registry's lock that every xDS request takes.
func (r *Registry) Briefs(selector map[string]string) []Brief {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Brief, 0, len(r.agents))
	for _, a := range r.agents {
		s := a.newest()
		if !matches(selector, s.labels) {
			continue
		}
		b := Brief{NodeID: a.nodeID, UserAgent: s.userAgent, Labels: s.labels, ConfigVersion: r.configVersion(s)}
		for _, t := range TrackedTypes {
			if st, _, nack := r.state(a.nodeID, s, t); st == adminv1.SyncState_SYNC_STATE_NACKED {
				b.NackType, b.Nack = ShortName(t), nack
				break
			}
		}
		out = append(out, b)
	}
	return out
}

// OnStreamOpen records a new state-of-the-world stream.
func (r *Registry) OnStreamOpen(ctx context.Context, id int64, _ string) error {
	r.open(ctx, streamKey{id: id})
	return nil
}

// OnDeltaStreamOpen records a new delta stream.
func (r *Registry) OnDeltaStreamOpen(ctx context.Context, id int64, _ string) error {
	r.open(ctx, streamKey{delta: true, id: id})
	return nil
}

func (r *Registry) open(ctx context.Context, key streamKey) {
	s := &stream{opened: time.Now(), types: map[string]*typeState{}}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		s.peer = p.Addr.String()
	}
	r.mu.Lock()
	r.streams[key] = s
	r.mu.Unlock()
}

// OnStreamClosed forgets a state-of-the-world stream.
func (r *Registry) OnStreamClosed(id int64, _ *corev3.Node) { r.close(streamKey{id: id}) }

// OnDeltaStreamClosed forgets a delta stream.
func (r *Registry) OnDeltaStreamClosed(id int64, _ *corev3.Node) {
	r.close(streamKey{delta: true, id: id})
}

func (r *Registry) close(key streamKey) {
	r.mu.Lock()
	s := r.streams[key]
	delete(r.streams, key)
	left := -1
	if s != nil && s.nodeID != "" {
		if a := r.agents[s.nodeID]; a != nil {
			delete(a.streams, key)
			left = len(a.streams)
			if left == 0 {
				delete(r.agents, s.nodeID)
				r.gone[s.nodeID] = time.Now()
			}
		}
	}
	r.mu.Unlock()
	// Logged outside the lock: when a control plane stops, every stream
	// closes at once.
	if left >= 0 {
		r.opts.Logger.Info("agent stream closed", "node", s.nodeID, "peer", s.peer,
			"connected_s", time.Since(s.opened).Seconds(), "streams_left", left)
	}
}

// bind attaches the node named by a request to its stream, creating the agent
// record on first sight. It reports whether the node was seen for the first
// time on this stream.
func (r *Registry) bind(key streamKey, node *corev3.Node) (nodeID string, first bool) {
	s := r.streams[key]
	if s == nil {
		return "", false
	}
	if s.nodeID != "" {
		return s.nodeID, false
	}
	if node.GetId() == "" {
		return "", false
	}
	s.nodeID = node.GetId()
	s.node = node
	s.labels = Labels(node)
	s.group = r.opts.groupOf(node)
	s.userAgent = strings.TrimSpace(node.GetUserAgentName() + " " + node.GetUserAgentVersion())
	a := r.agents[s.nodeID]
	if a == nil {
		a = &agent{nodeID: s.nodeID, streams: map[streamKey]*stream{}}
		r.agents[s.nodeID] = a
		delete(r.gone, s.nodeID)
	}
	a.streams[key] = s
	return s.nodeID, true
}

// Moved is a node whose group changed in Regroup.
type Moved struct {
	NodeID   string
	Labels   map[string]string
	From, To string
}

// Regroup asks Options.GroupOf again for every stream (a rollout assigned
// or took back a version) and returns the nodes whose group changed, each
// once. Their streams are in the new group when it returns.
func (r *Registry) Regroup() []Moved {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	var out []Moved
	seen := map[string]bool{}
	for _, s := range r.streams {
		if s.node == nil {
			continue
		}
		to := r.opts.groupOf(s.node)
		if to == s.group {
			continue
		}
		if !seen[s.nodeID] {
			seen[s.nodeID] = true
			out = append(out, Moved{NodeID: s.nodeID, Labels: maps.Clone(s.labels), From: s.group, To: to})
		}
		s.group = to
		// converged is kept: the agent that ran version n in its pinned group
		// and runs it again in its labels' group (a rollout completing) has
		// not converged on anything new.
		s.moved = now
	}
	return out
}

// OnStreamRequest records ACKs and NACKs of state-of-the-world responses.
func (r *Registry) OnStreamRequest(id int64, req *discoveryv3.DiscoveryRequest) error {
	r.request(streamKey{id: id}, req.GetNode(), req.GetTypeUrl(), req.GetResponseNonce(),
		req.GetVersionInfo(), req.GetErrorDetail().GetMessage(), req.GetErrorDetail() != nil)
	return nil
}

// OnStreamDeltaRequest records ACKs and NACKs of delta responses.
func (r *Registry) OnStreamDeltaRequest(id int64, req *discoveryv3.DeltaDiscoveryRequest) error {
	r.request(streamKey{delta: true, id: id}, req.GetNode(), req.GetTypeUrl(), req.GetResponseNonce(),
		"", req.GetErrorDetail().GetMessage(), req.GetErrorDetail() != nil)
	return nil
}

func (r *Registry) request(key streamKey, node *corev3.Node, typeURL, nonce, version, nackMsg string, nack bool) {
	r.mu.Lock()
	nodeID, first := r.bind(key, node)
	var ev answerEvent
	if nodeID != "" && nonce != "" {
		ev = r.answer(r.streams[key], typeURL, nonce, version, nackMsg, nack)
	}
	var peerAddr, group string
	if first {
		s := r.streams[key]
		peerAddr, group = s.peer, s.group
	}
	r.mu.Unlock()
	// Logged outside the lock, like "agent stream closed".
	if first {
		r.opts.Logger.Info("agent connected", "node", nodeID, "peer", peerAddr, "group", group)
	}
	if first && r.opts.OnNodeSeen != nil {
		r.opts.OnNodeSeen(node)
	}
	if o := r.opts.Observer; o != nil && ev.answered {
		o.Answered(nodeID, typeURL, ev.version, nack)
		if ev.converged != 0 {
			o.Converged(nodeID, ev.labels, ev.converged, ev.opened, ev.moved)
		}
	}
}

// answerEvent is what an answer tells the Observer.
type answerEvent struct {
	answered  bool
	version   string
	converged uint64 // a config version the agent now runs entirely, other than the one it last ran on its stream
	labels    map[string]string
	opened    time.Time
	moved     time.Time
}

// answer applies an ACK or NACK for the response with the given nonce. Answers
// to older nonces are ignored, as go-control-plane ignores them.
func (r *Registry) answer(s *stream, typeURL, nonce, version, nackMsg string, nack bool) answerEvent {
	nodeID := s.nodeID
	ts := s.types[typeURL]
	if ts == nil || ts.sentNonce != nonce {
		return answerEvent{}
	}
	if nack {
		if len(nackMsg) > maxNackMessage {
			nackMsg = strings.ToValidUTF8(nackMsg[:maxNackMessage], "") + "…(truncated)"
		}
		if r.rejected[nodeID] == nil {
			r.rejected[nodeID] = map[string]*adminv1.Nack{}
		}
		r.rejected[nodeID][typeURL] = &adminv1.Nack{Version: ts.sent, Message: nackMsg, Time: timestamppb.Now()}
		r.opts.Logger.Warn("agent rejected config", "node", nodeID, "type", ShortName(typeURL),
			"version", ts.sent, "error", nackMsg)
		return answerEvent{answered: true, version: ts.sent}
	}
	if version == "" { // delta ACKs carry no version: it is the one sent with the nonce
		version = ts.sent
	}
	if ts.acked != version {
		// Debug: at fleet scale every push would log a line per agent and
		// type; flotctl agents shows who runs what.
		r.opts.Logger.Debug("agent acked config", "node", nodeID, "type", ShortName(typeURL), "version", version)
	}
	ts.acked = version
	// Only an ACK of the version just sent supersedes a rejection. A request
	// that answers the rejected response without an error (a subscription
	// change) carries the old version and must not lift the hold.
	if rej := r.rejected[nodeID][typeURL]; rej != nil && version == ts.sent && rej.GetVersion() != version {
		delete(r.rejected[nodeID], typeURL)
	}
	ev := answerEvent{answered: true, version: version}
	if r.opts.Observer != nil {
		if cv := r.configVersion(s); cv != 0 && cv != s.converged {
			s.converged = cv
			ev.converged, ev.labels, ev.opened, ev.moved = cv, maps.Clone(s.labels), s.opened, s.moved
		}
	}
	return ev
}

// OnStreamResponse records a state-of-the-world response about to be sent.
func (r *Registry) OnStreamResponse(_ context.Context, id int64, _ *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
	r.sent(streamKey{id: id}, resp.GetTypeUrl(), resp.GetNonce(), resp.GetVersionInfo())
}

// OnStreamDeltaResponse records a delta response about to be sent.
func (r *Registry) OnStreamDeltaResponse(id int64, _ *discoveryv3.DeltaDiscoveryRequest, resp *discoveryv3.DeltaDiscoveryResponse) {
	r.sent(streamKey{delta: true, id: id}, resp.GetTypeUrl(), resp.GetNonce(), resp.GetSystemVersionInfo())
}

func (r *Registry) sent(key streamKey, typeURL, nonce, version string) {
	r.mu.Lock()
	s := r.streams[key]
	if s == nil || s.nodeID == "" {
		r.mu.Unlock()
		return
	}
	ts := s.types[typeURL]
	if ts == nil {
		ts = &typeState{}
		s.types[typeURL] = ts
	}
	ts.sent, ts.sentNonce = version, nonce
	nodeID := s.nodeID
	r.mu.Unlock()
	if r.opts.Observer != nil {
		r.opts.Observer.Pushed(nodeID, typeURL, version)
	}
}

// OnFetchRequest is part of server.Callbacks; REST fetches are not tracked.
func (r *Registry) OnFetchRequest(context.Context, *discoveryv3.DiscoveryRequest) error { return nil }

// OnFetchResponse is part of server.Callbacks; REST fetches are not tracked.
func (r *Registry) OnFetchResponse(*discoveryv3.DiscoveryRequest, *discoveryv3.DiscoveryResponse) {
}
