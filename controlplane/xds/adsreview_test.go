package xds

import (
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
	configv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/config/v1"
)

// Review of adsServer: drops decided from IsWildcard whether an empty request
// keeps the returned map, but SetResourceSubscription keeps it only for a
// legacy wildcard subscription. After an explicit "*", an empty request
// (unsubscribe from everything, xDS protocol) deletes every name from the
// map, which is the group's shared prepared.returned (TestDrops, "explicit
// wildcard, then empty", checks drops against SetResourceSubscription).
//
// Over a real ADS stream: one client could empty the group's shared
// prepared.returned while every other stream of the group reads it (with
// -race: a data race; without: "concurrent map iteration and map write"
// kills the control plane).
func TestADSExplicitWildcardThenEmptyKeepsSharedMap(t *testing.T) {
	s, conn := startServer(t)
	f := files(7301, nil, "127.0.0.1:9001")
	for i := range 5 {
		name := fmt.Sprintf("d%d", i)
		f[0].Bundle.Clusters = append(f[0].Bundle.Clusters, &configv1.Cluster{Name: name, Endpoints: []*configv1.Endpoint{{Address: "127.0.0.1:9100"}}})
	}
	s.nodeSeen(node("x", nil))
	if err := s.SetVersion(1, f); err != nil {
		t.Fatal(err)
	}
	s.cache.sotw.mu.Lock()
	before := maps.Clone(s.groups[""].types[resource.ClusterType].wire.returned)
	s.cache.sotw.mu.Unlock()

	a := newADS(t, conn, node("a1", nil))
	a.send(resource.ClusterType, "", "", []string{"*"}, "")
	cds := a.next(resource.ClusterType, "1")
	a.send(resource.ClusterType, "1", cds.GetNonce(), []string{"*"}, "") // ACK, parks
	waitFor(t, "the CDS watch parked", func() bool { return parkedWatches(s, resource.ClusterType) == 1 })
	a.send(resource.ClusterType, "1", cds.GetNonce(), nil, "") // unsubscribe from every cluster
	// Requests are handled in order: once the LDS response is here, the
	// empty CDS request was handled.
	a.send(resource.ListenerType, "", "", nil, "")
	a.next(resource.ListenerType, "1")
	s.cache.sotw.mu.Lock()
	after := maps.Clone(s.groups[""].types[resource.ClusterType].wire.returned)
	s.cache.sotw.mu.Unlock()
	if len(after) != len(before) {
		t.Fatalf("the group's shared prepared.returned for CDS went from %d to %d names: %v", len(before), len(after), after)
	}
}

// The same with other agents of the group reading the map at the same time:
// run with -race. Without -race, ADS_CRASH_VERSIONS=40 ADS_CRASH_CLUSTERS=3000
// makes the runtime's own check likely to fire ("fatal error: concurrent map
// read and map write"), which kills the process.
func TestADSExplicitWildcardThenEmptyRace(t *testing.T) {
	s, conn := startServer(t)
	versions, clusters := 5, 200
	if n, err := strconv.Atoi(os.Getenv("ADS_CRASH_VERSIONS")); err == nil {
		versions = n
	}
	if n, err := strconv.Atoi(os.Getenv("ADS_CRASH_CLUSTERS")); err == nil {
		clusters = n
	}
	bundleV := func(v int) []*adminv1.ConfigFile {
		f := files(7311, nil, "127.0.0.1:9001")
		for i := range clusters {
			name := fmt.Sprintf("v%dd%d", v, i)
			f[0].Bundle.Listeners = append(f[0].Bundle.Listeners, &configv1.Listener{Name: "l" + name, Address: fmt.Sprintf("127.0.0.1:%d", 8000+i), Tcp: &configv1.TcpProxy{Cluster: name}})
			f[0].Bundle.Clusters = append(f[0].Bundle.Clusters, &configv1.Cluster{Name: name, Endpoints: []*configv1.Endpoint{{Address: "127.0.0.1:9100"}}})
		}
		return f
	}
	s.nodeSeen(node("x", nil))
	for v := 1; v <= versions; v++ {
		if err := s.SetVersion(uint64(v), bundleV(v)); err != nil {
			t.Fatal(err)
		}
		version := fmt.Sprint(v)
		var wg sync.WaitGroup
		// Readers: every ACK of a named subscription makes the cache look
		// names up in the shared map (missing).
		for i := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				a := newADS(t, dial(t, conn.Target()), node(fmt.Sprintf("r%d-%d", v, i), nil))
				a.send(resource.ClusterType, "", "", []string{"c"}, "")
				cds := a.next(resource.ClusterType, version)
				for range 300 {
					a.send(resource.ClusterType, version, cds.GetNonce(), []string{"c"}, "")
				}
				a.send(resource.ListenerType, "", "", nil, "")
				a.next(resource.ListenerType, version)
			}()
		}
		// The writer: explicit wildcard, then nothing.
		for i := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				a := newADS(t, dial(t, conn.Target()), node(fmt.Sprintf("w%d-%d", v, i), nil))
				a.send(resource.ClusterType, "", "", []string{"*"}, "")
				cds := a.next(resource.ClusterType, version)
				a.send(resource.ClusterType, version, cds.GetNonce(), nil, "")
				a.send(resource.ListenerType, "", "", nil, "")
				a.next(resource.ListenerType, version)
			}()
		}
		wg.Wait()
		s.cache.sotw.mu.Lock()
		t.Logf("version %d: shared CDS returned map has %d names", v, len(s.groups[""].types[resource.ClusterType].wire.returned))
		s.cache.sotw.mu.Unlock()
	}
}

// dial opens a connection of its own to the server at target, so that two
// agents share no transport (and the race detector no happens-before edge
// through it).
func dial(t *testing.T, target string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// drops looks every returned name up in the request's list: O(returned ×
// names) per request. An agent names every cluster in its EDS request, and
// the cache returns every endpoint of the group, so an EDS ACK of an agent
// with n clusters costs about n²/2 string comparisons (go-control-plane's
// SetResourceSubscription builds a set: O(n)).
func BenchmarkDropsEDSAck(b *testing.B) {
	for _, n := range []int{100, 1000, 5000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			names := make([]string, n)
			returned := make(map[string]string, n)
			for i := range names {
				names[i] = fmt.Sprintf("cluster-%05d", i)
				returned[names[i]] = "1"
			}
			sub := stream.NewSotwSubscription(names, true)
			sub.SetReturnedResources(returned)
			for b.Loop() {
				if drops(sub, false, names) {
					b.Fatal("drops")
				}
			}
		})
		// What go-control-plane's handler paid for the same request.
		b.Run(fmt.Sprint(n, "/SetResourceSubscription"), func(b *testing.B) {
			names := make([]string, n)
			returned := make(map[string]string, n)
			for i := range names {
				names[i] = fmt.Sprintf("cluster-%05d", i)
				returned[names[i]] = "1"
			}
			sub := stream.NewSotwSubscription(names, true)
			sub.SetReturnedResources(returned)
			for b.Loop() {
				sub.SetResourceSubscription(names)
			}
		})
	}
}

// A stream whose peer stops reading and half-closes while a push is blocked
// in Send: the handler returns after senderWait (the registry shows the agent
// connected until then), and the blocked Send ends with the stream: no
// goroutine outlives it. (go-control-plane's handler stayed blocked in Send
// until the peer read or went away.)
func TestADSHandlerReturnsWhileSendBlocked(t *testing.T) {
	s, conn0 := startServer(t)
	f := files(7501, nil, "127.0.0.1:9001")
	for i := range 3000 {
		name := fmt.Sprintf("cluster-with-a-long-name-to-make-the-push-large-%05d", i)
		f[0].Bundle.Listeners = append(f[0].Bundle.Listeners, &configv1.Listener{Name: "l" + name, Address: fmt.Sprintf("127.0.0.1:%d", 10000+i), Tcp: &configv1.TcpProxy{Cluster: name}})
		f[0].Bundle.Clusters = append(f[0].Bundle.Clusters, &configv1.Cluster{Name: name, Endpoints: []*configv1.Endpoint{{Address: "127.0.0.1:9100"}}})
	}
	if err := s.SetVersion(1, f); err != nil {
		t.Fatal(err)
	}
	// A small fixed window: the push does not fit, and nothing reads it.
	conn, err := grpc.NewClient(conn0.Target(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discoveryv3.DiscoveryRequest{Node: node("slow", nil), TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	// grpc-go queues one message past its write quota: the second blocks.
	if err := st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.ListenerType}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the LDS push blocked in Send", func() bool { return goroutinesIn("(*writeQuota).get") == 1 })
	start := time.Now()
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the handler to return", func() bool {
		return len(s.Agents(nil)) == 0 && goroutinesIn("(*adsServer).StreamAggregatedResources") == 0
	})
	t.Logf("handler returned %.1fs after the half-close; senders still running: %d", time.Since(start).Seconds(), goroutinesIn("(*adsStream).send"))
	if n := goroutinesIn("(*adsStream).send"); n != 0 {
		t.Errorf("%d sender goroutine(s) outlive the stream's handler", n)
	}
	cancel()
	conn.Close()
	waitFor(t, "the sender to go once the peer is gone", func() bool { return goroutinesIn("(*adsStream).send") == 0 })
}

// goroutinesIn counts the goroutines whose stack has a frame containing fn.
func goroutinesIn(fn string) int {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			n++
		}
	}
	return n
}

// A Send that fails (here: a push larger than the server's MaxSendMsgSize)
// only records the error, and the handler keeps reading; were the stream to
// live on, the push would be lost for good (the watch it answered is gone).
// It does not: grpc-go's server SendMsg aborts the stream on error, so Recv
// fails and the agent reconnects, as with go-control-plane.
func TestADSSendErrorEndsStream(t *testing.T) {
	s := New(Options{})
	g := grpc.NewServer(grpc.MaxSendMsgSize(4 << 10))
	s.Register(g)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	f := files(7601, nil, "127.0.0.1:9001")
	for i := range 100 {
		name := fmt.Sprintf("c%03d", i)
		f[0].Bundle.Listeners = append(f[0].Bundle.Listeners, &configv1.Listener{Name: "l" + name, Address: fmt.Sprintf("127.0.0.1:%d", 11000+i), Tcp: &configv1.TcpProxy{Cluster: name}})
		f[0].Bundle.Clusters = append(f[0].Bundle.Clusters, &configv1.Cluster{Name: name, Endpoints: []*configv1.Endpoint{{Address: "127.0.0.1:9100"}}})
	}
	if err := s.SetVersion(1, f); err != nil {
		t.Fatal(err)
	}
	a := newADS(t, dial(t, lis.Addr().String()), node("big", nil))
	a.send(resource.ClusterType, "", "", nil, "")
	select {
	case r, ok := <-a.recv:
		if ok {
			t.Fatalf("got %s, want the stream to end", shortType(r.GetTypeUrl()))
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the CDS push failed to send, and 3s later the stream is still open: the agent waits for ever")
	}
}
