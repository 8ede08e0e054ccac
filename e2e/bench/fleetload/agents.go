package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/flotilla-proxy/flotilla/agent/backoff"
)

// Resource types, in the order the agent subscribes to them.
const (
	cds = iota
	eds
	lds
	rds
	sds
	numTypes
)

var typeURLs = [numTypes]string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType, resource.SecretType}
var typeNames = [numTypes]string{"cds", "eds", "lds", "rds", "sds"}

// typeIndex returns the index of a short name (cds…) or type URL, or -1.
func typeIndex(s string) int {
	for i := range numTypes {
		if strings.EqualFold(s, typeNames[i]) || s == typeURLs[i] {
			return i
		}
	}
	return -1
}

// parseTypes parses "cds,eds,lds" into a set.
func parseTypes(s string) ([numTypes]bool, error) {
	var set [numTypes]bool
	if s == "" {
		return set, nil
	}
	for _, name := range strings.Split(s, ",") {
		i := typeIndex(strings.TrimSpace(name))
		if i < 0 {
			return set, fmt.Errorf("unknown resource type %q (cds, eds, lds, rds, sds)", name)
		}
		set[i] = true
	}
	return set, nil
}

// fleetOptions configure a simulated fleet.
type fleetOptions struct {
	// Server is the control plane's xDS address.
	Server string
	// Agents is how many agents to simulate; First is the index of the
	// first one (node ids and labels are numbered from it, so several load
	// processes simulate one fleet).
	Agents, First int
	// IDPrefix starts every node id.
	IDPrefix string
	// Labels are added to every agent's labels (dc=dc{i%3} is always set).
	Labels map[string]string
	// Subscribe are the types requested: cds and lds at once, eds after the
	// first cds response, rds and sds after the first lds response.
	Subscribe [numTypes]bool
	// AgentsPerConn > 1 shares one ClientConn (and TCP connection) between
	// that many agents' streams.
	AgentsPerConn int
	// ConnectRate bounds how many agents start per second; 0 starts all at once.
	ConnectRate int
	// BackoffMin and BackoffMax bound the agent's full-jitter backoff.
	BackoffMin, BackoffMax time.Duration
	Logger                 *slog.Logger
}

// ack is a version of a type an agent ACKed, and when it first ACKed it
// (after ACKing another version, if it went back to this one).
type ack struct {
	version string
	at      int64 // Unix nanoseconds
}

// keptACKs is how many versions of a type an agent remembers: enough for a
// rollout's (old, new, and the old one's types again after its completion).
const keptACKs = 8

// agent is one simulated agent.
type agent struct {
	id     string
	labels map[string]string

	mu          sync.Mutex
	acked       [numTypes][]ack // the last keptACKs versions, oldest first
	streamAcked [numTypes]bool  // ACKed at least once on the current stream
	syncedAt    int64           // when the current stream first had every subscribed type ACKed; 0 until then
	connected   bool
}

// fleet is the set of simulated agents of one process.
type fleet struct {
	opts       fleetOptions
	agents     []*agent
	conns      []*grpc.ClientConn // shared connections when AgentsPerConn > 1
	streams    atomic.Int64       // streams opened
	fails      atomic.Int64       // streams that failed
	firstErrMu sync.Mutex
	firstErr   string
}

func newFleet(opts fleetOptions) (*fleet, error) {
	if opts.Agents <= 0 {
		return nil, errors.New("--agents must be positive")
	}
	if !opts.Subscribe[cds] && !opts.Subscribe[lds] {
		return nil, errors.New("--subscribe must include cds or lds")
	}
	if opts.AgentsPerConn < 1 {
		opts.AgentsPerConn = 1
	}
	f := &fleet{opts: opts}
	for i := opts.First; i < opts.First+opts.Agents; i++ {
		labels := maps.Clone(opts.Labels)
		if labels == nil {
			labels = map[string]string{}
		}
		labels["dc"] = fmt.Sprintf("dc%d", i%3)
		f.agents = append(f.agents, &agent{id: fmt.Sprintf("%s%05d", opts.IDPrefix, i), labels: labels})
	}
	if opts.AgentsPerConn > 1 {
		for i := 0; i < opts.Agents; i += opts.AgentsPerConn {
			c, err := dial(opts.Server, nil)
			if err != nil {
				f.close()
				return nil, err
			}
			f.conns = append(f.conns, c)
		}
	}
	return f, nil
}

func (f *fleet) close() {
	for _, c := range f.conns {
		c.Close()
	}
}

// dial returns a ClientConn configured like the agent's. With raw set, its
// first connection is raw, already established.
func dial(addr string, raw net.Conn) (*grpc.ClientConn, error) {
	var d net.Dialer
	dialer := func(ctx context.Context, target string) (net.Conn, error) {
		if c := raw; c != nil {
			raw = nil
			return c, nil
		}
		return d.DialContext(ctx, "tcp", target)
	}
	c, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithContextDialer(dialer),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.ForceCodecV2(lazyCodec{})),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}))
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return c, nil
}

// run runs every agent until ctx is done.
func (f *fleet) run(ctx context.Context) {
	var wg sync.WaitGroup
	var tick <-chan time.Time
	if f.opts.ConnectRate > 0 {
		t := time.NewTicker(time.Second / time.Duration(f.opts.ConnectRate))
		defer t.Stop()
		tick = t.C
	}
	for i, a := range f.agents {
		if tick != nil {
			select {
			case <-ctx.Done():
			case <-tick:
			}
		}
		var shared *grpc.ClientConn
		if len(f.conns) > 0 {
			shared = f.conns[i/f.opts.AgentsPerConn]
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.runAgent(ctx, a, shared)
		}()
	}
	wg.Wait()
}

// runAgent keeps one agent's stream open, with the agent's backoff between
// attempts (full jitter, reset after a stream that received a response).
func (f *fleet) runAgent(ctx context.Context, a *agent, shared *grpc.ClientConn) {
	b := backoff.Backoff{Min: f.opts.BackoffMin, Max: f.opts.BackoffMax}
	for ctx.Err() == nil {
		progressed, err := f.runStream(ctx, a, shared)
		if ctx.Err() != nil {
			return
		}
		f.fails.Add(1)
		f.recordErr(a, err)
		if progressed {
			b.Reset()
		}
		wait := b.Next()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (f *fleet) recordErr(a *agent, err error) {
	f.firstErrMu.Lock()
	defer f.firstErrMu.Unlock()
	if f.firstErr == "" && err != nil {
		f.firstErr = fmt.Sprintf("%s: %v", a.id, err)
	}
}

// runStream serves one ADS stream until it fails. progressed reports whether
// it received a response.
func (f *fleet) runStream(ctx context.Context, a *agent, shared *grpc.ClientConn) (progressed bool, err error) {
	conn := shared
	if conn == nil {
		// The TCP connection first: while the control plane is down, a
		// refused connect costs the load process a syscall rather than a
		// ClientConn, and the load processes share the machine with the
		// control plane that is starting up.
		raw, err := (&net.Dialer{Timeout: 10 * time.Second}).DialContext(ctx, "tcp", f.opts.Server)
		if err != nil {
			return false, fmt.Errorf("connect: %w", err)
		}
		c, err := dial(f.opts.Server, raw)
		if err != nil {
			raw.Close()
			return false, err
		}
		defer c.Close()
		conn = c
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ads, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(sctx)
	if err != nil {
		return false, fmt.Errorf("open ADS stream: %w", err)
	}
	f.streams.Add(1)
	a.mu.Lock()
	a.connected = true
	a.streamAcked = [numTypes]bool{}
	a.syncedAt = 0
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.connected = false
		a.mu.Unlock()
	}()

	node, err := a.node()
	if err != nil {
		return false, err
	}
	var requested [numTypes]bool
	request := func(t int, version, nonce string) error {
		req := &discoveryv3.DiscoveryRequest{TypeUrl: typeURLs[t], VersionInfo: version, ResponseNonce: nonce}
		if node != nil {
			req.Node, node = node, nil
		}
		requested[t] = true
		if err := ads.Send(req); err != nil {
			return fmt.Errorf("send %s request: %w", typeNames[t], err)
		}
		return nil
	}
	for _, t := range []int{cds, lds} {
		if f.opts.Subscribe[t] {
			if err := request(t, "", ""); err != nil {
				return false, err
			}
		}
	}
	for {
		resp, err := ads.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("stream closed by the control plane")
			}
			return progressed, err
		}
		progressed = true
		t := typeIndex(resp.GetTypeUrl())
		if t < 0 || !requested[t] {
			return progressed, fmt.Errorf("response of a type not requested: %q", resp.GetTypeUrl())
		}
		if err := request(t, resp.GetVersionInfo(), resp.GetNonce()); err != nil {
			return progressed, err
		}
		a.recordACK(t, resp.GetVersionInfo(), f.opts.Subscribe, time.Now().UnixNano())
		// Like the agent, ask for what clusters and listeners refer to once they arrived.
		var follow []int
		switch t {
		case cds:
			follow = []int{eds}
		case lds:
			follow = []int{rds, sds}
		}
		for _, n := range follow {
			if f.opts.Subscribe[n] && !requested[n] {
				if err := request(n, "", ""); err != nil {
					return progressed, err
				}
			}
		}
	}
}

// recordACK records the ACK of version of type t at now (Unix nanoseconds).
func (a *agent) recordACK(t int, version string, subscribed [numTypes]bool, now int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if n := len(a.acked[t]); n == 0 || a.acked[t][n-1].version != version {
		if n == keptACKs {
			a.acked[t] = append(a.acked[t][:0], a.acked[t][1:]...)
		}
		a.acked[t] = append(a.acked[t], ack{version: version, at: now})
	}
	a.streamAcked[t] = true
	if a.syncedAt != 0 {
		return
	}
	for i := range numTypes {
		if subscribed[i] && !a.streamAcked[i] {
			return
		}
	}
	a.syncedAt = now
}

// node is the xDS node the agent presents, like flotilla-agent's.
func (a *agent) node() (*corev3.Node, error) {
	labels := make(map[string]any, len(a.labels))
	for k, v := range a.labels {
		labels[k] = v
	}
	md, err := structpb.NewStruct(map[string]any{"labels": labels})
	if err != nil {
		return nil, fmt.Errorf("node %s labels: %w", a.id, err)
	}
	return &corev3.Node{
		Id:                   a.id,
		Cluster:              "flotilla",
		Metadata:             md,
		UserAgentName:        "flotilla-agent",
		UserAgentVersionType: &corev3.Node_UserAgentVersion{UserAgentVersion: "fleetload"},
	}, nil
}
