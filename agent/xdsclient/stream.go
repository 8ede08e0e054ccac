package xdsclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/flotilla-proxy/flotilla/agent/runtime"
)

// Keepalive pings on the ADS connection.
const (
	keepaliveTime    = 30 * time.Second
	keepaliveTimeout = 10 * time.Second
)

// maxMessageSize bounds one response; a fleet's config can outgrow gRPC's 4 MiB default.
const maxMessageSize = 64 << 20

// Delays between repeated identical NACKs of one type. A snapshot-cache
// control plane answers a NACK by resending the rejected version at once; the
// delay keeps that from becoming a busy loop while still answering (the
// control plane pushes nothing new for a type until it is answered).
const (
	minRepeatDelay = 500 * time.Millisecond
	maxRepeatDelay = 10 * time.Second
)

// runStream opens one ADS stream to addr and serves it until it fails or ctx
// is done. connected reports whether the stream was established, progressed
// whether it received a response.
func (c *Client) runStream(ctx context.Context, addr string) (connected, progressed bool, err error) {
	creds := c.opts.Credentials
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessageSize)),
		// A control plane that vanishes without a FIN (host down, partition)
		// is noticed within 40s, and the client fails over to the next one.
		// flotilla-controlplane permits pings every 10s; a server that allows
		// fewer makes grpc-go back off its interval by itself.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: keepaliveTime, Timeout: keepaliveTimeout, PermitWithoutStream: true}))
	if err != nil {
		return false, false, fmt.Errorf("dial %s: %w", addr, err)
	}
	defer conn.Close()

	var wg sync.WaitGroup
	defer wg.Wait()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()

	ads, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(sctx)
	if err != nil {
		return false, false, fmt.Errorf("open ADS stream: %w", err)
	}
	s := &stream{
		c:         c,
		ctx:       ctx,
		send:      ads.Send,
		node:      c.node(),
		nonces:    make(map[string]string),
		pending:   make(map[string]*update),
		names:     make(map[string][]string),
		deferred:  make(map[string]deferredNACK),
		nackDelay: make(map[string]time.Duration),
	}
	if err := s.subscribe(); err != nil {
		return false, false, fmt.Errorf("subscribe: %w", err)
	}
	c.setConnected(addr, true)
	defer c.setConnected(addr, false)
	c.log.Info("connected to control plane", "address", addr)

	responses := make(chan *discoveryv3.DiscoveryResponse)
	recvErr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		receiveLoop(sctx, ads, responses, recvErr)
	}()

	for {
		var timer *time.Timer
		var timeout <-chan time.Time
		if due := s.nextDue(); !due.IsZero() {
			timer = time.NewTimer(time.Until(due))
			timeout = timer.C
		}
		var err error
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case err = <-recvErr:
		case r := <-responses:
			progressed = true
			err = s.handle(r)
		case now := <-timeout:
			err = s.expire(now)
		}
		if timer != nil {
			timer.Stop()
		}
		if err != nil {
			return true, progressed, err
		}
	}
}

// receiveLoop hands every response of ads to out until the stream fails.
func receiveLoop(ctx context.Context, ads grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse], out chan<- *discoveryv3.DiscoveryResponse, errc chan<- error) {
	for {
		r, err := ads.Recv()
		if err != nil {
			errc <- err
			return
		}
		select {
		case out <- r:
		case <-ctx.Done():
			return
		}
	}
}

// node is the xDS node this client presents.
func (c *Client) node() *corev3.Node {
	labels := make(map[string]any, len(c.opts.Labels))
	for k, v := range c.opts.Labels {
		labels[k] = v
	}
	md, err := structpb.NewStruct(map[string]any{"labels": labels})
	if err != nil {
		// Only invalid UTF-8 in a label can get here; send the node without it
		// rather than not at all.
		c.log.Error("node labels are not valid UTF-8", "error", err)
		md = nil
	}
	return &corev3.Node{
		Id:                   c.opts.NodeID,
		Cluster:              "flotilla",
		Metadata:             md,
		UserAgentName:        "flotilla-agent",
		UserAgentVersionType: &corev3.Node_UserAgentVersion{UserAgentVersion: c.opts.UserAgentVersion},
	}
}

// stream is the protocol state of one ADS stream. It is owned by the
// goroutine in runStream; the running config it builds on lives in Client and
// outlives the stream.
type stream struct {
	c    *Client
	ctx  context.Context // Run's, so an apply completes even if the stream breaks
	send func(*discoveryv3.DiscoveryRequest) error
	node *corev3.Node // sent with the first request only

	nonces  map[string]string  // latest nonce received, by type
	pending map[string]*update // statically valid, not yet applied, by type

	// names are the resource names of the current EDS, SDS and RDS subscriptions,
	// by type; a type is present once a request for it was sent on this stream.
	names map[string][]string

	holdSince time.Time // when the pending set was first found inconsistent
	holdErr   error     // why

	deferred  map[string]deferredNACK  // repeated NACKs waiting for their delay
	nackDelay map[string]time.Duration // current repeat delay, by type
}

// update is one statically valid response.
type update struct {
	version string
	items   map[string]proto.Message
}

type deferredNACK struct {
	due              time.Time
	version, message string
}

// subscribe sends the first request of every type: wildcard clusters and
// listeners, and the endpoints and secrets the running config needs.
// version_info is empty so the control plane sends everything again.
func (s *stream) subscribe() error {
	for _, t := range []string{ClusterType, ListenerType} {
		if err := s.send(s.request(t, "", "")); err != nil {
			return err
		}
	}
	cand, _, _ := s.candidate()
	return s.subscribeNamed(cand)
}

// neededNames returns the resource names cand needs of a by-name type.
func neededNames(cand *runtime.Resources, typeURL string) []string {
	switch typeURL {
	case SecretType:
		return cand.SDSNames()
	case RouteType:
		return cand.RDSNames()
	}
	return cand.EDSNames()
}

// request builds a request for typeURL answering the latest response of that
// type. message, if set, makes it a NACK.
func (s *stream) request(typeURL, version, message string) *discoveryv3.DiscoveryRequest {
	req := &discoveryv3.DiscoveryRequest{
		VersionInfo:   version,
		Node:          s.node,
		TypeUrl:       typeURL,
		ResponseNonce: s.nonces[typeURL],
	}
	s.node = nil
	if slices.Contains(namedTypes, typeURL) {
		req.ResourceNames = s.names[typeURL]
	}
	if message != "" {
		req.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: message}
	}
	return req
}

// handle processes one response.
func (s *stream) handle(r *discoveryv3.DiscoveryResponse) error {
	t := r.GetTypeUrl()
	_, subscribed := s.names[t]
	if _, ok := messageTypes[t]; !ok || (slices.Contains(namedTypes, t) && !subscribed) {
		// Answering would subscribe us to it; a legacy wildcard at that.
		s.c.log.Warn("ignoring xDS response for a type not subscribed to", "type_url", t, "version", r.GetVersionInfo())
		return nil
	}
	s.nonces[t] = r.GetNonce()
	delete(s.deferred, t)
	items, err := Decode(t, r.GetResources())
	if err != nil {
		delete(s.pending, t) // superseded by this response, which is rejected
		if err := s.nack(t, r.GetVersionInfo(), err, true); err != nil {
			return err
		}
		return s.commit()
	}
	s.pending[t] = &update{version: r.GetVersionInfo(), items: items}
	return s.commit()
}

// commit applies the running config overlaid with every pending type if that
// is consistent, and ACKs the types it took from pending. An apply that fails
// on a pending type's resource NACKs that type and tries again without it;
// any other failure NACKs all pending types. It also keeps the EDS
// subscription in line with the clusters of the candidate.
func (s *stream) commit() error {
	for {
		// A type that never arrived counts as empty. That drops nothing (had
		// it run, it would be in the running config) and keeps the types
		// that did arrive moving: a held type is not pushed again until it is
		// answered.
		cand, versions, states := s.candidate()
		if err := s.subscribeNamed(cand); err != nil {
			return err
		}
		if len(s.pending) == 0 {
			s.holdSince, s.holdErr = time.Time{}, nil
			return nil
		}
		if err := cand.Missing(); err != nil {
			if s.holdSince.IsZero() {
				s.holdSince = time.Now()
				s.c.log.Debug("holding xDS update until consistent", "error", err)
			}
			s.holdErr = err
			applied, err := s.commitPart()
			if err != nil || !applied {
				return err
			}
			continue
		}
		s.holdSince, s.holdErr = time.Time{}, nil

		err := s.c.opts.Applier.Apply(s.ctx, cand, versions)
		if err == nil {
			s.c.commitRunning(states)
			for _, t := range Types {
				if u := s.pending[t]; u != nil {
					delete(s.pending, t)
					if err := s.ack(t, u.version); err != nil {
						return err
					}
				}
			}
			return nil
		}
		if s.ctx.Err() != nil {
			return s.ctx.Err()
		}
		var re *runtime.ResourceError
		if errors.As(err, &re) && s.pending[re.TypeURL] != nil {
			u := s.pending[re.TypeURL]
			delete(s.pending, re.TypeURL)
			if err := s.nack(re.TypeURL, u.version, err, true); err != nil {
				return err
			}
			continue
		}
		if err := s.nackPending(err, true); err != nil {
			return err
		}
	}
}

// commitPart applies and ACKs the largest part of an inconsistent pending set
// that is consistent on its own, leaving the rest pending: the pending types
// without listeners, else also without route configurations, else also without
// clusters, else only secrets.
// It reports whether it applied anything. Without it a hold could wedge the
// stream: an EDS or SDS response sent before the control plane had the names
// asked for (go-control-plane answers at once, with what it has) must be
// answered before the control plane sends the names, while a listener held
// for them is not answered until they arrive. A part whose apply fails stays
// pending; the hold timeout settles it.
func (s *stream) commitPart() (bool, error) {
	// What the whole held set needs must survive the part's commit: a secret
	// or endpoint set that only a held listener or cluster uses would
	// otherwise be dropped from the running state and ACKed, and the control
	// plane, whose version for it does not move, would never send it again.
	held, _, _ := s.candidateOf(s.pending, nil)
	part := maps.Clone(s.pending)
	for _, drop := range []string{ListenerType, RouteType, ClusterType, EndpointType} {
		if part[drop] == nil {
			continue
		}
		delete(part, drop)
		if len(part) == 0 {
			return false, nil
		}
		cand, versions, states := s.candidateOf(part, held)
		if cand.Missing() != nil {
			continue
		}
		if err := s.c.opts.Applier.Apply(s.ctx, cand, versions); err != nil {
			if s.ctx.Err() != nil {
				return false, s.ctx.Err()
			}
			s.c.log.Debug("applying the consistent part of a held xDS update failed", "error", err)
			return false, nil
		}
		s.c.commitRunning(states)
		for _, t := range Types {
			if u := part[t]; u != nil {
				delete(s.pending, t)
				if err := s.ack(t, u.version); err != nil {
					return false, err
				}
			}
		}
		return true, nil
	}
	return false, nil
}

// nackPending NACKs and drops every pending type.
func (s *stream) nackPending(err error, deferRepeat bool) error {
	for _, t := range Types {
		if u := s.pending[t]; u != nil {
			delete(s.pending, t)
			if err := s.nack(t, u.version, err, deferRepeat); err != nil {
				return err
			}
		}
	}
	return nil
}

// candidate returns the running config overlaid with every pending type, the
// version of each type in it, and the per-type state that becomes running if
// it is applied.
func (s *stream) candidate() (*runtime.Resources, map[string]string, map[string]*typeState) {
	return s.candidateOf(s.pending, nil)
}

// candidateOf is candidate with the given pending types. Endpoint sets and
// secrets that keep (if not nil) needs stay in the returned states, though not
// in the returned set.
func (s *stream) candidateOf(pending map[string]*update, keep *runtime.Resources) (*runtime.Resources, map[string]string, map[string]*typeState) {
	set := &runtime.Resources{}
	versions := make(map[string]string)
	states := make(map[string]*typeState)
	for _, t := range Types {
		st := s.c.runningState(t)
		if u := pending[t]; u != nil {
			items := u.items
			if slices.Contains(namedTypes, t) && st != nil {
				// In state-of-the-world EDS, SDS and RDS a response carries the
				// subscribed names the server chose to send; a name left out
				// is not a deletion, so keep what runs for it.
				items = maps.Clone(st.items)
				maps.Copy(items, u.items)
			}
			st = &typeState{version: u.version, items: items}
		}
		if st != nil {
			versions[t] = st.version
			states[t] = st
		}
		Put(set, t, states[t].itemsOrNil())
	}
	// Endpoints no cluster needs any more, and secrets no listener or cluster
	// needs, are dropped.
	for _, t := range namedTypes {
		st := states[t]
		if st == nil {
			continue
		}
		kept := make(map[string]proto.Message)
		for _, n := range neededNames(set, t) {
			if m, ok := st.items[n]; ok {
				kept[n] = m
			}
		}
		running := kept
		if keep != nil {
			running = maps.Clone(kept)
			for _, n := range neededNames(keep, t) {
				if m, ok := st.items[n]; ok {
					running[n] = m
				}
			}
		}
		if len(kept) != len(st.items) {
			Put(set, t, kept)
		}
		if len(running) != len(st.items) {
			states[t] = &typeState{version: st.version, items: running}
		}
	}
	return set, versions, states
}

func (st *typeState) itemsOrNil() map[string]proto.Message {
	if st == nil {
		return nil
	}
	return st.items
}

// subscribeNamed keeps the EDS, SDS and RDS subscriptions in line with what cand
// refers to.
func (s *stream) subscribeNamed(cand *runtime.Resources) error {
	for _, t := range namedTypes {
		if err := s.subscribeNames(t, neededNames(cand, t)); err != nil {
			return err
		}
	}
	return nil
}

// subscribeNames makes the subscription of a by-name type (EDS, SDS) names,
// if it is not already. The request carries the last accepted version and the
// latest nonce of the type, and no error: a server that follows the xDS spec
// to the letter may take it as an implicit ACK of a statically valid response
// we are still holding in pending. That is acceptable — the response was
// valid, and the server answers the new names with a fresh response we then
// hold instead.
func (s *stream) subscribeNames(typeURL string, names []string) error {
	cur, subscribed := s.names[typeURL]
	if subscribed && slices.Equal(names, cur) || !subscribed && len(names) == 0 {
		return nil
	}
	s.names[typeURL] = names
	delete(s.deferred, typeURL) // this request answers the latest nonce
	return s.send(s.request(typeURL, s.acceptedVersion(typeURL), ""))
}

// acceptedVersion is the version_info for requests of typeURL that accept
// nothing new: the running version, or empty before the first response of
// the type on this stream (so the control plane sends everything again).
func (s *stream) acceptedVersion(typeURL string) string {
	if s.nonces[typeURL] == "" {
		return ""
	}
	if st := s.c.runningState(typeURL); st != nil {
		return st.version
	}
	return ""
}

// ack accepts version of typeURL.
func (s *stream) ack(typeURL, version string) error {
	if err := s.send(s.request(typeURL, version, "")); err != nil {
		return err
	}
	delete(s.nackDelay, typeURL)
	s.c.metrics.updates.WithLabelValues(ShortName(typeURL), "ack").Inc()
	s.c.log.Info("accepted xDS update", "type", ShortName(typeURL), "version", version)
	return nil
}

// nack rejects version of typeURL because of cause. When deferRepeat is set
// and this NACK repeats the previous one of the type word for word, it is
// sent after a growing delay instead of at once.
func (s *stream) nack(typeURL, version string, cause error, deferRepeat bool) error {
	msg := strings.ReplaceAll(cause.Error(), "\n", "; ")
	prev, ok := s.c.lastNACK(typeURL)
	repeat := ok && prev.Version == version && prev.Message == msg
	if !repeat {
		delete(s.nackDelay, typeURL)
	} else if deferRepeat {
		d := s.nackDelay[typeURL]
		d = min(max(2*d, minRepeatDelay), maxRepeatDelay)
		s.nackDelay[typeURL] = d
		s.deferred[typeURL] = deferredNACK{due: time.Now().Add(d), version: version, message: msg}
		return nil
	}
	return s.sendNACK(typeURL, version, msg, repeat)
}

func (s *stream) sendNACK(typeURL, version, msg string, repeat bool) error {
	running := s.acceptedVersion(typeURL)
	if err := s.send(s.request(typeURL, running, msg)); err != nil {
		return err
	}
	s.c.recordNACK(typeURL, NACK{Version: version, Message: msg, Time: time.Now()})
	s.c.metrics.updates.WithLabelValues(ShortName(typeURL), "nack").Inc()
	level := slog.LevelInfo
	if repeat {
		level = slog.LevelDebug
	}
	s.c.log.Log(s.ctx, level, "rejected xDS update", "type", ShortName(typeURL), "version", version,
		"running_version", running, "error", msg)
	return nil
}

// nextDue is when expire must run next, or zero.
func (s *stream) nextDue() time.Time {
	var due time.Time
	for _, d := range s.deferred {
		if due.IsZero() || d.due.Before(due) {
			due = d.due
		}
	}
	if !s.holdSince.IsZero() {
		if h := s.holdSince.Add(s.c.opts.holdTimeout()); due.IsZero() || h.Before(due) {
			due = h
		}
	}
	return due
}

// expire sends the deferred NACKs that are due and gives up on a pending set
// held inconsistent for too long.
func (s *stream) expire(now time.Time) error {
	for _, t := range Types {
		if d, ok := s.deferred[t]; ok && !now.Before(d.due) {
			delete(s.deferred, t)
			if err := s.sendNACK(t, d.version, d.message, true); err != nil {
				return err
			}
		}
	}
	if s.holdSince.IsZero() || now.Before(s.holdSince.Add(s.c.opts.holdTimeout())) {
		return nil
	}
	// Give up on pending types one at a time, in the order references point
	// (listeners name clusters and secrets, clusters name endpoints and
	// secrets), until what is left
	// is consistent with the running config; that much is then applied.
	err := fmt.Errorf("no consistent set after %s: %w", s.c.opts.holdTimeout(), s.holdErr)
	s.holdSince, s.holdErr = time.Time{}, nil
	for _, t := range []string{ListenerType, RouteType, ClusterType, EndpointType, SecretType} {
		u := s.pending[t]
		if u == nil {
			continue
		}
		delete(s.pending, t)
		if err := s.nack(t, u.version, err, false); err != nil {
			return err
		}
		if cand, _, _ := s.candidate(); cand.Missing() == nil {
			break
		}
	}
	return s.commit()
}
