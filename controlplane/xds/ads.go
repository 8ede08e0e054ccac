package xds

import (
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// adsServer serves state-of-the-world ADS streams, the ones every agent and
// gRPC client holds open, and hands delta ADS streams to go-control-plane's
// server. It follows go-control-plane's ordered ADS handler (nonces, stale
// requests ignored, make-before-break order, the fleet registry's callbacks)
// and answers from the same cache, but an idle stream costs one goroutine
// instead of two: the handler's goroutine reads requests, and a response is
// sent by a goroutine started for the push and gone after it. It keeps no
// copy of what it sent: a subscription shares the prepared type's resource
// map until a request drops names from it. At 10,000 idle agents that is
// about a fifth of the control plane's memory (see BENCHMARKS.md).
type adsServer struct {
	// Server is go-control-plane's, for delta ADS.
	serverv3.Server
	cache     *nackAwareCache
	callbacks serverv3.Callbacks
	admission *admission // nil: no bound
	streams   atomic.Int64
}

// adsStreamIDBase separates this server's stream ids from those of
// go-control-plane's server (the per-type services and delta streams),
// which count from 1: the fleet registry keys streams by id.
const adsStreamIDBase = 1 << 48

// senderWait bounds how long a closing stream waits for the push it is
// sending; the stream's context ends the send when the handler returns.
const senderWait = 5 * time.Second

// StreamAggregatedResources serves one state-of-the-world ADS stream: it
// reads and handles requests until the stream ends. An idle stream waits
// here, in RecvMsg, on the handler's goroutine, and the frames below the
// wait are kept few and small (no interceptor, no defer, the transport's
// RecvMsg called directly): the runtime shrinks a goroutine's stack only
// while less than a quarter of it is in use, and this is what lets it
// shrink the stack back from the 16 KiB a request's handling grows it to,
// to 8 KiB (8 KiB per idle agent; see BENCHMARKS.md).
func (a *adsServer) StreamAggregatedResources(st discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	s, err := a.open(st)
	if err != nil {
		return err
	}
	for {
		req := new(discoveryv3.DiscoveryRequest)
		if err = s.recv.RecvMsg(req); err != nil {
			err = s.sendErr() // nil: the peer closed its side, or the stream ended
			break
		}
		if err = s.handle(req); err != nil {
			break
		}
	}
	// Not deferred (see above): a panic in handle ends the process, as
	// grpc-go recovers no handler's panic; a recovering interceptor added
	// to the xDS port would have to close the stream itself.
	s.close()
	return err
}

// open admits a new stream and tells the registry.
func (a *adsServer) open(st discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) (*adsStream, error) {
	if a.admission != nil {
		if err := a.admission.wait(st.Context()); err != nil {
			return nil, err
		}
	}
	s := &adsStream{
		a:       a,
		st:      st,
		recv:    st,
		id:      adsStreamIDBase + a.streams.Add(1),
		node:    &corev3.Node{},
		watches: make(map[string]*adsWatch, 4),
	}
	if g, ok := st.(*grpc.GenericServerStream[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]); ok {
		s.recv = g.ServerStream // one wrapper frame less under the wait
	} // else (other generated code) st itself: the same, one frame deeper

	if err := a.callbacks.OnStreamOpen(st.Context(), s.id, resource.AnyType); err != nil {
		return nil, err
	}
	return s, nil
}

// adsStream is one ADS stream's state.
type adsStream struct {
	a    *adsServer
	st   discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer
	recv interface{ RecvMsg(any) error } // st, or the transport stream under it
	id   int64
	node *corev3.Node // from the first request; later ones may omit it

	mu sync.Mutex
	// watches is the current watch per type URL. A response is sent only
	// while the watch it answers is current.
	watches map[string]*adsWatch
	nonce   int64
	// queue holds the responses to send, in the order the cache gave them
	// (make-before-break); sending says a sender goroutine is draining it,
	// and senderDone is closed when it stops.
	queue      []queued
	sending    bool
	senderDone chan struct{}
	closed     bool
	err        error // the first send error
}

// adsWatch is one type's subscription and open watch.
type adsWatch struct {
	sub    stream.Subscription
	cancel func()
	// legacy is true while the subscription never named a resource
	// (go-control-plane's legacy wildcard; see drops).
	legacy bool
	// nonce is the nonce of the last response sent for this watch's type
	// ("" until one is sent after the watch was created, as in
	// go-control-plane: a new request resets it).
	nonce string
}

type queued struct {
	w    *adsWatch
	resp cache.Response
}

// handle processes one request: an ACK, a NACK or a new subscription of a
// type replaces that type's watch.
func (s *adsStream) handle(req *discoveryv3.DiscoveryRequest) error {
	if req.GetNode() != nil {
		s.node = req.GetNode()
	} else {
		req.Node = s.node
	}
	typeURL := req.GetTypeUrl()
	if typeURL == "" {
		return status.Errorf(codes.InvalidArgument, "type URL is required for ADS")
	}
	if err := s.a.callbacks.OnStreamRequest(s.id, req); err != nil {
		return err
	}

	s.mu.Lock()
	old := s.watches[typeURL]
	if old != nil && old.nonce != "" && req.GetResponseNonce() != old.nonce {
		// A response newer than the one this request answers is on its way:
		// the request is stale (xDS protocol, "Resource updates").
		s.mu.Unlock()
		return nil
	}
	names := req.GetResourceNames()
	w := &adsWatch{}
	if old != nil {
		w.sub, w.legacy = old.sub, old.legacy && len(names) == 0
		if drops(w.sub, old.legacy, names) {
			// The map is the prepared type's, shared with every stream of the
			// group: take a copy before the subscription deletes from it.
			w.sub.SetReturnedResources(maps.Clone(w.sub.ReturnedResources()))
		}
		w.sub.SetResourceSubscription(names)
	} else {
		w.sub, w.legacy = stream.NewSotwSubscription(names, true), len(names) == 0
	}
	// From here on the old watch's responses are dropped, queued or not.
	s.watches[typeURL] = w
	s.mu.Unlock()

	if old != nil && old.cancel != nil {
		old.cancel()
	}
	cancel, err := s.a.cache.watch(req, w.sub, func(r cache.Response) { s.enqueue(w, r) })
	if err != nil {
		return err
	}
	s.mu.Lock()
	w.cancel = cancel
	s.mu.Unlock()
	return nil
}

// drops reports whether SetResourceSubscription(names) would delete from
// the subscription's returned resources. go-control-plane's rule: a request
// without "*" forgets every returned resource it does not name, unless it is
// an empty request of a legacy wildcard subscription (legacy: one that never
// named a resource; an explicit "*" followed by an empty request is an
// unsubscription from everything). A set, not a scan per name: an EDS ACK
// names every cluster of the agent.
func drops(sub stream.Subscription, legacy bool, names []string) bool {
	if legacy && len(names) == 0 {
		return false
	}
	returned := sub.ReturnedResources()
	if len(returned) == 0 || slices.Contains(names, "*") {
		return false
	}
	if len(names) < len(returned) {
		return true // some returned name is not among them
	}
	named := make(map[string]struct{}, len(names))
	for _, n := range names {
		named[n] = struct{}{}
	}
	for name := range returned {
		if _, ok := named[name]; !ok {
			return true
		}
	}
	return false
}

// enqueue queues a response for w and starts a sender if none runs. The
// cache calls it with its lock held: it never blocks.
func (s *adsStream) enqueue(w *adsWatch, r cache.Response) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.queue = append(s.queue, queued{w: w, resp: r})
	if !s.sending {
		s.sending = true
		s.senderDone = make(chan struct{})
		go s.send(s.senderDone)
	}
}

// send drains the queue, then stops.
func (s *adsStream) send(done chan struct{}) {
	defer close(done)
	for {
		s.mu.Lock()
		out, resp, ok := s.next()
		if !ok {
			s.sending = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		// The registry hears of the push before the agent can answer it, and
		// outside the stream's lock, which the cache waits for under its own.
		s.a.callbacks.OnStreamResponse(resp.GetContext(), s.id, resp.GetRequest(), out)
		var msg any = out
		if sr, ok := resp.(*sharedResponse); ok && sr.p.encoded != nil {
			msg = &wireResponse{DiscoveryResponse: out, encoded: sr.p.encoded}
		}
		if err := s.st.SendMsg(msg); err != nil {
			s.mu.Lock()
			if s.err == nil {
				s.err = err
			}
			s.queue, s.sending = nil, false
			s.mu.Unlock()
			return
		}
	}
}

// next pops the next response to send and records it as sent: its nonce
// and what the agent now holds. Callers hold s.mu.
func (s *adsStream) next() (*discoveryv3.DiscoveryResponse, cache.Response, bool) {
	for len(s.queue) > 0 && !s.closed {
		q := s.queue[0]
		s.queue[0] = queued{}
		s.queue = s.queue[1:]
		typeURL := q.resp.GetRequest().GetTypeUrl()
		if s.watches[typeURL] != q.w {
			continue // answers a watch a newer request replaced
		}
		out, err := q.resp.GetDiscoveryResponse()
		if err != nil {
			if s.err == nil {
				s.err = err
			}
			continue
		}
		s.nonce++
		out.Nonce = strconv.FormatInt(s.nonce, 10)
		q.w.nonce = out.Nonce
		if nv, ok := q.resp.(interface{ GetNextVersionMap() map[string]string }); ok {
			// Shared and never changed by the cache; drops guards the
			// subscription's own deletes.
			q.w.sub.SetReturnedResources(nv.GetNextVersionMap())
		} else {
			q.w.sub.SetReturnedResources(q.resp.GetReturnedResources())
		}
		return out, q.resp, true
	}
	if len(s.queue) == 0 {
		s.queue = nil // let a long queue's array go
	}
	return nil, nil, false
}

// sendErr returns the first error sending a response, as a status.
func (s *adsStream) sendErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		return nil
	}
	if _, ok := status.FromError(s.err); ok {
		return s.err
	}
	return status.Error(codes.Unavailable, s.err.Error())
}

// close cancels the stream's watches, waits (a bounded time) for a send in
// progress, and tells the registry.
func (s *adsStream) close() {
	s.mu.Lock()
	s.closed = true
	s.queue = nil
	watches := slices.Collect(maps.Values(s.watches))
	var done chan struct{}
	if s.sending {
		done = s.senderDone
	}
	s.mu.Unlock()
	for _, w := range watches {
		if w.cancel != nil {
			w.cancel()
		}
	}
	if done != nil {
		t := time.NewTimer(senderWait)
		select {
		case <-done:
		case <-t.C:
		}
		t.Stop()
	}
	s.a.callbacks.OnStreamClosed(s.id, s.node)
}
