package xds

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
	configv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/config/v1"
)

// files builds a one-file bundle: listener "l" on port, selected by selector,
// to cluster "c" whose endpoints are eps.
func files(port int, selector map[string]string, eps ...string) []*adminv1.ConfigFile {
	b := &configv1.Bundle{
		Listeners: []*configv1.Listener{{
			Name:    "l",
			Address: fmt.Sprintf("127.0.0.1:%d", port),
			Agents:  selector,
			Tcp:     &configv1.TcpProxy{Cluster: "c"},
		}},
	}
	c := &configv1.Cluster{Name: "c"}
	for _, e := range eps {
		c.Endpoints = append(c.Endpoints, &configv1.Endpoint{Address: e})
	}
	b.Clusters = append(b.Clusters, c)
	return []*adminv1.ConfigFile{{Path: "test.yaml", Bundle: b}}
}

func startServer(t *testing.T, opts ...Options) (*Server, *grpc.ClientConn) {
	t.Helper()
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	s := New(o)
	g := grpc.NewServer(ServerOptions()...)
	s.Register(g)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return s, conn
}

func node(id string, labels map[string]string) *corev3.Node {
	l := map[string]any{}
	for k, v := range labels {
		l[k] = v
	}
	md, _ := structpb.NewStruct(map[string]any{"labels": l})
	return &corev3.Node{Id: id, Metadata: md}
}

// adsClient is a minimal state-of-the-world ADS client driven step by step.
type adsClient struct {
	t      *testing.T
	stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	node   *corev3.Node
	recv   chan *discoveryv3.DiscoveryResponse
}

func newADS(t *testing.T, conn *grpc.ClientConn, n *corev3.Node) *adsClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &adsClient{t: t, stream: st, node: n, recv: make(chan *discoveryv3.DiscoveryResponse, 16)}
	go func() {
		defer close(c.recv)
		for {
			r, err := st.Recv()
			if err != nil {
				return
			}
			c.recv <- r
		}
	}()
	return c
}

func (c *adsClient) send(typeURL, version, nonce string, names []string, nack string) {
	c.t.Helper()
	req := &discoveryv3.DiscoveryRequest{Node: c.node, TypeUrl: typeURL, VersionInfo: version, ResponseNonce: nonce, ResourceNames: names}
	if nack != "" {
		req.ErrorDetail = &statuspb.Status{Code: 3, Message: nack}
	}
	if err := c.stream.Send(req); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// next returns the next response, which must be of typeURL at version.
func (c *adsClient) next(typeURL, version string) *discoveryv3.DiscoveryResponse {
	c.t.Helper()
	select {
	case r, ok := <-c.recv:
		if !ok {
			c.t.Fatal("stream closed")
		}
		if r.GetTypeUrl() != typeURL || r.GetVersionInfo() != version {
			c.t.Fatalf("got %s version %q, want %s version %q", shortType(r.GetTypeUrl()), r.GetVersionInfo(), shortType(typeURL), version)
		}
		return r
	case <-time.After(10 * time.Second):
		c.t.Fatalf("no %s version %q within 10s", shortType(typeURL), version)
	}
	return nil
}

func shortType(u string) string { return u[len(resource.APITypePrefix):] }

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func state(s *Server, nodeID, short string) (adminv1.SyncState, *adminv1.Nack) {
	for _, a := range s.Agents(nil) {
		if a.GetNodeId() != nodeID {
			continue
		}
		for _, r := range a.GetResources() {
			if r.GetShort() == short {
				return r.GetState(), r.GetLastNack()
			}
		}
	}
	return adminv1.SyncState_SYNC_STATE_UNSPECIFIED, nil
}

// subscribe sends the initial wildcard CDS and LDS requests and EDS for "c".
func (c *adsClient) subscribe() {
	c.send(resource.ClusterType, "", "", nil, "")
	c.send(resource.EndpointType, "", "", []string{"c"}, "")
	c.send(resource.ListenerType, "", "", nil, "")
}

func TestPushOrderVersionsAndNACKHold(t *testing.T) {
	s, conn := startServer(t)
	if err := s.SetVersion(1, files(7001, nil, "127.0.0.1:9001")); err != nil {
		t.Fatal(err)
	}
	a := newADS(t, conn, node("a1", map[string]string{"dc": "ams"}))
	a.subscribe()
	// Make before break: clusters, then endpoints, then listeners.
	cds := a.next(resource.ClusterType, "1")
	eds := a.next(resource.EndpointType, "1")
	lds := a.next(resource.ListenerType, "1")
	a.send(resource.ClusterType, "1", cds.GetNonce(), nil, "")
	a.send(resource.EndpointType, "1", eds.GetNonce(), []string{"c"}, "")
	a.send(resource.ListenerType, "1", lds.GetNonce(), nil, "")
	waitFor(t, "LDS synced", func() bool { st, _ := state(s, "a1", "LDS"); return st == adminv1.SyncState_SYNC_STATE_SYNCED })

	// Only the endpoints change: only EDS is pushed, CDS and LDS keep version 1.
	if err := s.SetVersion(2, files(7001, nil, "127.0.0.1:9002")); err != nil {
		t.Fatal(err)
	}
	eds = a.next(resource.EndpointType, "2")
	a.send(resource.EndpointType, "2", eds.GetNonce(), []string{"c"}, "")

	// A listener change the agent rejects.
	if err := s.SetVersion(3, files(7002, nil, "127.0.0.1:9002")); err != nil {
		t.Fatal(err)
	}
	lds = a.next(resource.ListenerType, "3")
	a.send(resource.ListenerType, "1", lds.GetNonce(), nil, "listener \"l\": bind 127.0.0.1:7002: address already in use")
	waitFor(t, "LDS nacked", func() bool { st, _ := state(s, "a1", "LDS"); return st == adminv1.SyncState_SYNC_STATE_NACKED })
	if _, nack := state(s, "a1", "LDS"); nack.GetVersion() != "3" || nack.GetMessage() == "" {
		t.Fatalf("last nack = %v, want version 3 with the message", nack)
	}

	// The stock cache would resend LDS 3 at once. Two endpoint-only versions
	// later, the stream must have carried nothing but EDS.
	for v := 4; v <= 5; v++ {
		if err := s.SetVersion(uint64(v), files(7002, nil, fmt.Sprintf("127.0.0.1:90%02d", v))); err != nil {
			t.Fatal(err)
		}
		eds = a.next(resource.EndpointType, fmt.Sprint(v))
		a.send(resource.EndpointType, fmt.Sprint(v), eds.GetNonce(), []string{"c"}, "")
	}

	// A reconnecting agent is not sent the rejected version either.
	b := newADS(t, conn, node("a1", map[string]string{"dc": "ams"}))
	b.subscribe()
	b.next(resource.ClusterType, "1")
	eds = b.next(resource.EndpointType, "5")
	b.send(resource.EndpointType, "5", eds.GetNonce(), []string{"c"}, "")
	if err := s.SetVersion(6, files(7002, nil, "127.0.0.1:9006")); err != nil {
		t.Fatal(err)
	}
	b.next(resource.EndpointType, "6")
	if st, _ := state(s, "a1", "LDS"); st != adminv1.SyncState_SYNC_STATE_NACKED {
		t.Fatalf("LDS state after reconnect = %v, want NACKED", st)
	}

	// A new listener version is pushed again.
	if err := s.SetVersion(7, files(7003, nil, "127.0.0.1:9006")); err != nil {
		t.Fatal(err)
	}
	lds = b.next(resource.ListenerType, "7")
	b.send(resource.ListenerType, "7", lds.GetNonce(), nil, "")
	waitFor(t, "LDS synced on 7", func() bool { st, _ := state(s, "a1", "LDS"); return st == adminv1.SyncState_SYNC_STATE_SYNCED })
}

// TestUpdateOrder: an update that touches clusters, endpoints and listeners
// reaches an agent make-before-break, CDS then EDS then LDS, whatever order
// the agent subscribed in.
func TestUpdateOrder(t *testing.T) {
	s, conn := startServer(t)
	if err := s.SetVersion(1, files(7001, nil, "127.0.0.1:9001")); err != nil {
		t.Fatal(err)
	}
	a := newADS(t, conn, node("o1", nil))
	// Listeners first, on purpose.
	a.send(resource.ListenerType, "", "", nil, "")
	lds := a.next(resource.ListenerType, "1")
	a.send(resource.EndpointType, "", "", []string{"c"}, "")
	eds := a.next(resource.EndpointType, "1")
	a.send(resource.ClusterType, "", "", nil, "")
	cds := a.next(resource.ClusterType, "1")
	a.send(resource.ListenerType, "1", lds.GetNonce(), nil, "")
	a.send(resource.EndpointType, "1", eds.GetNonce(), []string{"c"}, "")
	a.send(resource.ClusterType, "1", cds.GetNonce(), nil, "")
	for _, short := range []string{"CDS", "EDS", "LDS"} {
		waitFor(t, short+" synced", func() bool { st, _ := state(s, "o1", short); return st == adminv1.SyncState_SYNC_STATE_SYNCED })
	}

	v2 := files(7002, nil, "127.0.0.1:9002")
	v2[0].Bundle.Clusters[0].ConnectTimeout = durationpb.New(2 * time.Second)
	if err := s.SetVersion(2, v2); err != nil {
		t.Fatal(err)
	}
	a.next(resource.ClusterType, "2")
	a.next(resource.EndpointType, "2")
	a.next(resource.ListenerType, "2")
}

func TestGroupsBySelector(t *testing.T) {
	s, conn := startServer(t)
	if err := s.SetVersion(1, files(7001, map[string]string{"role": "edge"}, "127.0.0.1:9001")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		labels    map[string]string
		listeners int
	}{
		{"selected", map[string]string{"role": "edge", "dc": "ams"}, 1},
		{"not selected", map[string]string{"role": "core"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The previous subtest's stream ends when its context is
			// cancelled, which the server sees a moment later.
			waitFor(t, "no agent connected", func() bool { return len(s.Agents(nil)) == 0 })
			c := newADS(t, conn, node(tt.name, tt.labels))
			c.send(resource.ListenerType, "", "", nil, "")
			lds := c.next(resource.ListenerType, "1")
			if got := len(lds.GetResources()); got != tt.listeners {
				t.Fatalf("got %d listeners, want %d", got, tt.listeners)
			}
			selected := len(s.Agents(map[string]string{"role": "edge"})) == 1
			if want := tt.listeners == 1; selected != want {
				t.Fatalf("Agents(role=edge) lists the agent: %v, want %v", selected, want)
			}
		})
	}
}

func TestDeltaNACKHold(t *testing.T) {
	s, conn := startServer(t)
	if err := s.SetVersion(1, files(7001, nil, "127.0.0.1:9001")); err != nil {
		t.Fatal(err)
	}
	d := newDelta(t, conn, node("d1", nil))
	send, recv := d.send, d.recv
	send(resource.ListenerType, "", "")
	r := recv(resource.ListenerType)
	send(resource.ListenerType, r.GetNonce(), "")
	send(resource.ClusterType, "", "")
	r = recv(resource.ClusterType)
	send(resource.ClusterType, r.GetNonce(), "")

	if err := s.SetVersion(2, files(7002, nil, "127.0.0.1:9001")); err != nil {
		t.Fatal(err)
	}
	r = recv(resource.ListenerType)
	send(resource.ListenerType, r.GetNonce(), "bind: address already in use")
	waitFor(t, "delta LDS nacked", func() bool { st, _ := state(s, "d1", "LDS"); return st == adminv1.SyncState_SYNC_STATE_NACKED })
	// The delta server flushes queued responses before it handles the next
	// request, so a resend of the rejected listener would come before the
	// answer to this new subscription.
	send(resource.EndpointType, "", "")
	recv(resource.EndpointType)
}

// deltaClient is a minimal delta ADS client driven step by step.
type deltaClient struct {
	t      *testing.T
	node   *corev3.Node
	stream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
}

func newDelta(t *testing.T, conn *grpc.ClientConn, n *corev3.Node) *deltaClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &deltaClient{t: t, node: n, stream: st}
}

// send answers nonce for typeURL: an ACK, or a NACK when nack is set.
func (d *deltaClient) send(typeURL, nonce, nack string) {
	d.t.Helper()
	req := &discoveryv3.DeltaDiscoveryRequest{Node: d.node, TypeUrl: typeURL, ResponseNonce: nonce}
	if nack != "" {
		req.ErrorDetail = &statuspb.Status{Code: 3, Message: nack}
	}
	if err := d.stream.Send(req); err != nil {
		d.t.Fatal(err)
	}
}

// recv returns the next response, which must be of typeURL.
func (d *deltaClient) recv(typeURL string) *discoveryv3.DeltaDiscoveryResponse {
	d.t.Helper()
	r, err := d.stream.Recv()
	if err != nil {
		d.t.Fatal(err)
	}
	if r.GetTypeUrl() != typeURL {
		d.t.Fatalf("got %s, want %s", shortType(r.GetTypeUrl()), shortType(typeURL))
	}
	return r
}

func BenchmarkSetVersion1000Listeners(b *testing.B) {
	bundle := &configv1.Bundle{}
	for i := range 1000 {
		name := fmt.Sprintf("svc-%04d", i)
		bundle.Listeners = append(bundle.Listeners, &configv1.Listener{
			Name: name, Address: fmt.Sprintf("127.0.0.1:%d", 20000+i), Tcp: &configv1.TcpProxy{Cluster: name},
		})
		bundle.Clusters = append(bundle.Clusters, &configv1.Cluster{Name: name, Endpoints: []*configv1.Endpoint{
			{Address: fmt.Sprintf("10.0.%d.%d:8080", i/250, i%250+1)},
			{Address: fmt.Sprintf("10.1.%d.%d:8080", i/250, i%250+1)},
			{Address: fmt.Sprintf("10.2.%d.%d:8080", i/250, i%250+1)},
		}})
	}
	fs := []*adminv1.ConfigFile{{Path: "bench.yaml", Bundle: bundle}}
	s := New(Options{Logger: slog.New(slog.DiscardHandler)})
	s.nodeSeen(node("bench", map[string]string{"dc": "ams"}))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		// Change one endpoint each time so every version is a real push.
		bundle.Clusters[0].Endpoints[0].Address = fmt.Sprintf("10.9.0.%d:8080", i%250+1)
		if err := s.SetVersion(uint64(i+1), fs); err != nil {
			b.Fatal(err)
		}
	}
}
