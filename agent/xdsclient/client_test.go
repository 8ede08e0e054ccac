package xdsclient_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/flotilla-proxy/flotilla/agent/runtime"
	"github.com/flotilla-proxy/flotilla/agent/runtime/runtimetest"
	"github.com/flotilla-proxy/flotilla/agent/xdsclient"
	"github.com/flotilla-proxy/flotilla/agent/xdsclient/xdstest"
)

const (
	node    = "agent-1"
	timeout = 5 * time.Second
)

var (
	lds = xdsclient.ListenerType
	cds = xdsclient.ClusterType
	eds = xdsclient.EndpointType
	sds = xdsclient.SecretType
)

// recorder is an Applier that records what it installs and can be told to fail.
type recorder struct {
	mu       sync.Mutex
	applied  []applied
	attempts int
	fail     func(*runtime.Resources) error
}

type applied struct {
	set      *runtime.Resources
	versions map[string]string
}

func (r *recorder) Apply(_ context.Context, set *runtime.Resources, versions map[string]string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attempts++
	if r.fail != nil {
		if err := r.fail(set); err != nil {
			return err
		}
	}
	r.applied = append(r.applied, applied{set, versions})
	return nil
}

func (r *recorder) calls() []applied {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.applied)
}

func (r *recorder) last() (applied, bool) {
	c := r.calls()
	if len(c) == 0 {
		return applied{}, false
	}
	return c[len(c)-1], true
}

// runClient runs a client against servers until the test ends.
func runClient(t *testing.T, rec xdsclient.Applier, modify func(*xdsclient.Options), servers ...string) *xdsclient.Client {
	t.Helper()
	opts := xdsclient.Options{
		Servers:          servers,
		NodeID:           node,
		Labels:           map[string]string{"dc": "ams", "role": "edge"},
		UserAgentVersion: "v0.0.1-test",
		Applier:          rec,
		Logger:           slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if modify != nil {
		modify(&opts)
	}
	c, err := xdsclient.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return c
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// acked waits until every type's response of version was ACKed.
func acked(t *testing.T, srv *xdstest.Server, version string, types ...string) {
	t.Helper()
	for _, typ := range types {
		xdstest.WaitFor(t, timeout, fmt.Sprintf("ACK of %s %s", xdsclient.ShortName(typ), version), func() bool {
			req, ok := srv.Answered(typ, version, version)
			return ok && req.GetErrorDetail() == nil
		})
	}
}

// nacked waits until the response of typ at version was NACKed with
// version_info kept at running, and returns the NACK.
func nacked(t *testing.T, srv *xdstest.Server, typ, version, running string) *discoveryv3.DiscoveryRequest {
	t.Helper()
	var nack *discoveryv3.DiscoveryRequest
	xdstest.WaitFor(t, timeout, fmt.Sprintf("NACK of %s %s", xdsclient.ShortName(typ), version), func() bool {
		req, ok := srv.Answered(typ, version, running)
		if ok && req.GetErrorDetail() != nil {
			nack = req
			return true
		}
		return false
	})
	if got := codes.Code(nack.GetErrorDetail().GetCode()); got != codes.InvalidArgument {
		t.Errorf("NACK code = %v, want InvalidArgument", got)
	}
	return nack
}

func TestAppliesConsistentSnapshotAndACKs(t *testing.T) {
	srv := xdstest.NewServer(t, "")
	srv.SetSnapshot(t, node, "v1",
		runtimetest.Listener("web", "127.0.0.1", 10001, "backend"),
		runtimetest.EDSCluster("backend"),
		runtimetest.LoadAssignment("backend", runtimetest.Endpoint("127.0.0.1:20001", 1)))
	rec := &recorder{}
	reg := prometheus.NewRegistry()
	c := runClient(t, rec, func(o *xdsclient.Options) { o.Registerer = reg }, srv.Addr())

	acked(t, srv, "v1", cds, eds, lds)
	// Whatever order the types arrive in, nothing is applied before the
	// endpoints the cluster needs are there.
	calls := rec.calls()
	for _, c := range calls {
		if err := c.set.Missing(); err != nil {
			t.Errorf("applier got an inconsistent set: %v", err)
		}
	}
	got := calls[len(calls)-1]
	if _, ok := got.set.Listeners["web"]; !ok || len(got.set.Listeners) != 1 {
		t.Errorf("listeners = %v, want web", keys(got.set.Listeners))
	}
	if _, ok := got.set.Clusters["backend"]; !ok || len(got.set.Clusters) != 1 {
		t.Errorf("clusters = %v, want backend", keys(got.set.Clusters))
	}
	if _, ok := got.set.Endpoints["backend"]; !ok || len(got.set.Endpoints) != 1 {
		t.Errorf("endpoints = %v, want backend", keys(got.set.Endpoints))
	}
	wantVersions := map[string]string{lds: "v1", cds: "v1", eds: "v1"}
	if !mapsEqual(got.versions, wantVersions) {
		t.Errorf("versions = %v, want %v", got.versions, wantVersions)
	}

	// The node is presented with labels in its metadata.
	n := srv.Requests()[0].GetNode()
	labels := n.GetMetadata().GetFields()["labels"].GetStructValue().GetFields()
	if n.GetId() != node || n.GetCluster() != "flotilla" || n.GetUserAgentName() != "flotilla-agent" ||
		n.GetUserAgentVersion() != "v0.0.1-test" || labels["dc"].GetStringValue() != "ams" || labels["role"].GetStringValue() != "edge" {
		t.Errorf("node = %v", n)
	}
	// An update that adds a cluster: the EDS subscription follows, the set is
	// applied once complete.
	srv.SetSnapshot(t, node, "v2",
		runtimetest.Listener("web", "127.0.0.1", 10001, "backend"),
		runtimetest.Listener("db", "127.0.0.1", 10002, "mysql"),
		runtimetest.EDSCluster("backend"),
		runtimetest.EDSCluster("mysql"),
		runtimetest.LoadAssignment("backend", runtimetest.Endpoint("127.0.0.1:20001", 1)),
		runtimetest.LoadAssignment("mysql", runtimetest.Endpoint("127.0.0.1:20002", 1)))
	acked(t, srv, "v2", cds, eds, lds)
	last, _ := rec.last()
	if len(last.set.Listeners) != 2 || len(last.set.Clusters) != 2 || len(last.set.Endpoints) != 2 {
		t.Errorf("v2 applied %v / %v / %v", keys(last.set.Listeners), keys(last.set.Clusters), keys(last.set.Endpoints))
	}
	for _, set := range rec.calls() {
		if err := set.set.Missing(); err != nil {
			t.Errorf("applier got an inconsistent set: %v", err)
		}
	}

	// Removing a cluster drops its endpoints and narrows the subscription.
	srv.SetSnapshot(t, node, "v3",
		runtimetest.Listener("db", "127.0.0.1", 10002, "mysql"),
		runtimetest.EDSCluster("mysql"),
		runtimetest.LoadAssignment("mysql", runtimetest.Endpoint("127.0.0.1:20002", 1)))
	acked(t, srv, "v3", cds, eds, lds)
	xdstest.WaitFor(t, timeout, "v3 applied", func() bool {
		last, _ := rec.last()
		return last.versions[cds] == "v3" && last.versions[lds] == "v3"
	})
	last, _ = rec.last()
	if len(last.set.Endpoints) != 1 || last.set.Endpoints["mysql"] == nil {
		t.Errorf("v3 endpoints = %v, want mysql only", keys(last.set.Endpoints))
	}
	var edsNames []string
	for _, req := range srv.Requests() {
		if req.GetTypeUrl() == eds {
			edsNames = req.GetResourceNames()
		}
	}
	if !slices.Equal(edsNames, []string{"mysql"}) {
		t.Errorf("EDS subscription = %v, want [mysql]", edsNames)
	}

	// Every response was answered by a request carrying its nonce and
	// version: an ACK. (A request crossing a response on the wire may still
	// carry the previous nonce; the server ignores it.)
	events := srv.Events()
	for i, e := range events {
		resp := e.Response
		if resp == nil {
			continue
		}
		var next *discoveryv3.DiscoveryRequest
		for _, later := range events[i+1:] {
			if r := later.Request; r != nil && r.GetTypeUrl() == resp.GetTypeUrl() && r.GetResponseNonce() == resp.GetNonce() {
				next = r
				break
			}
		}
		if next == nil || next.GetResponseNonce() != resp.GetNonce() || next.GetVersionInfo() != resp.GetVersionInfo() || next.GetErrorDetail() != nil {
			t.Errorf("%s response %s (nonce %s) answered by %v, want an ACK", xdsclient.ShortName(resp.GetTypeUrl()), resp.GetVersionInfo(), resp.GetNonce(), next)
		}
	}

	st := c.Status()
	if !st.Connected || st.Server != srv.Addr() {
		t.Errorf("status = %+v, want connected to %s", st, srv.Addr())
	}
	if v := st.Types[lds].Version; v != "v3" {
		t.Errorf("running LDS version = %q, want v3", v)
	}
	if got := metricValue(t, reg, "flotilla_agent_xds_connected", nil); got != 1 {
		t.Errorf("connected gauge = %v, want 1", got)
	}
	if got := metricValue(t, reg, "flotilla_agent_xds_updates_total", map[string]string{"type": "lds", "result": "ack"}); got < 3 {
		t.Errorf("lds ack count = %v, want >= 3", got)
	}
}

func TestInvalidResourceIsNACKedAndNotApplied(t *testing.T) {
	bad := runtimetest.Listener("web", "127.0.0.1", 10001, "backend")
	bad.ListenerFilters = []*listenerv3.ListenerFilter{{Name: "envoy.filters.listener.tls_inspector"}}
	srv := xdstest.NewServer(t, "")
	srv.SetSnapshot(t, node, "v1", bad, runtimetest.EDSCluster("backend"), runtimetest.LoadAssignment("backend", runtimetest.Endpoint("127.0.0.1:20001", 1)))
	rec := &recorder{}
	c := runClient(t, rec, nil, srv.Addr())

	nack := nacked(t, srv, lds, "v1", "")
	msg := nack.GetErrorDetail().GetMessage()
	if !strings.Contains(msg, "listener_filters") || !strings.Contains(msg, `"web"`) {
		t.Errorf("NACK message %q does not name the listener and the field", msg)
	}
	if n := c.Status().Types[lds].LastNACK; n == nil || n.Version != "v1" || n.Message != msg {
		t.Errorf("status LastNACK = %+v", n)
	}

	// A fixed version gets through: answering the NACK reopened the watch.
	srv.SetSnapshot(t, node, "v2",
		runtimetest.Listener("web", "127.0.0.1", 10001, "backend"),
		runtimetest.EDSCluster("backend"),
		runtimetest.LoadAssignment("backend", runtimetest.Endpoint("127.0.0.1:20001", 1)))
	xdstest.WaitFor(t, timeout, "v2 applied", func() bool {
		last, ok := rec.last()
		return ok && last.versions[lds] == "v2"
	})
	for _, a := range rec.calls() {
		if a.versions[lds] == "v1" {
			t.Errorf("applier saw the rejected listener version: %v", a.versions)
		}
	}
}

func TestRepeatedNACKIsDelayed(t *testing.T) {
	bad := runtimetest.Listener("web", "127.0.0.1", 10001, "backend")
	bad.ListenerFilters = []*listenerv3.ListenerFilter{{Name: "envoy.filters.listener.tls_inspector"}}
	srv := xdstest.NewServer(t, "")
	srv.SetSnapshot(t, node, "v1", bad, runtimetest.EDSCluster("backend"), runtimetest.LoadAssignment("backend", runtimetest.Endpoint("127.0.0.1:20001", 1)))
	runClient(t, &recorder{}, nil, srv.Addr())

	var nacks []time.Time
	xdstest.WaitFor(t, timeout, "two LDS NACKs", func() bool {
		nacks = nacks[:0]
		for _, e := range srv.Events() {
			if r := e.Request; r != nil && r.GetTypeUrl() == lds && r.GetErrorDetail() != nil {
				nacks = append(nacks, e.Time)
			}
		}
		return len(nacks) >= 2
	})
	// Without the delay the second NACK follows the first within a round trip.
	if gap := nacks[1].Sub(nacks[0]); gap < 400*time.Millisecond {
		t.Errorf("second NACK came %v after the first, want the repeat delay (>= 500ms)", gap)
	}
}

func TestApplyResourceErrorNACKsOnlyThatType(t *testing.T) {
	srv := xdstest.NewServer(t, "")
	srv.SetSnapshot(t, node, "v1",
		runtimetest.Listener("web", "127.0.0.1", 10001, "backend"),
		runtimetest.EDSCluster("backend"),
		runtimetest.LoadAssignment("backend", runtimetest.Endpoint("127.0.0.1:20001", 1)))
	rec := &recorder{fail: func(set *runtime.Resources) error {
		if _, ok := set.Listeners["taken"]; ok {
			return &runtime.ResourceError{TypeURL: lds, Name: "taken", Err: errors.New("bind 127.0.0.1:10002: address already in use")}
		}
		return nil
	}}
	c := runClient(t, rec, nil, srv.Addr())
	acked(t, srv, "v1", cds, eds, lds)

	srv.SetSnapshot(t, node, "v2",
		runtimetest.Listener("web", "127.0.0.1", 10001, "backend"),
		runtimetest.Listener("taken", "127.0.0.1", 10002, "mysql"),
		runtimetest.EDSCluster("backend"),
		runtimetest.EDSCluster("mysql"),
		runtimetest.LoadAssignment("backend", runtimetest.Endpoint("127.0.0.1:20001", 1)),
		runtimetest.LoadAssignment("mysql", runtimetest.Endpoint("127.0.0.1:20002", 1)))
	nack := nacked(t, srv, lds, "v2", "v1")
	if msg := nack.GetErrorDetail().GetMessage(); !strings.Contains(msg, "address already in use") || !strings.Contains(msg, `"taken"`) {
		t.Errorf("NACK message = %q", msg)
	}
	acked(t, srv, "v2", cds, eds)
	last, _ := rec.last()
	want := map[string]string{cds: "v2", eds: "v2", lds: "v1"}
	if !mapsEqual(last.versions, want) {
		t.Errorf("applied versions = %v, want %v", last.versions, want)
	}
	if _, ok := last.set.Listeners["taken"]; ok {
		t.Error("applied set contains the rejected listener")
	}
	st := c.Status()
	if st.Types[lds].Version != "v1" || st.Types[cds].Version != "v2" || st.Types[lds].LastNACK == nil || st.Types[cds].LastNACK != nil {
		t.Errorf("status = %+v", st.Types)
	}
}

func TestApplyOtherErrorNACKsAllPending(t *testing.T) {
	srv := xdstest.NewServer(t, "")
	srv.SetSnapshot(t, node, "v1",
		runtimetest.Listener("web", "127.0.0.1", 10001, "backend"),
		runtimetest.EDSCluster("backend"),
		runtimetest.LoadAssignment("backend", runtimetest.Endpoint("127.0.0.1:20001", 1)))
	rec := &recorder{fail: func(*runtime.Resources) error { return errors.New("out of file descriptors") }}
	runClient(t, rec, nil, srv.Addr())
	for _, typ := range []string{cds, eds, lds} {
		nack := nacked(t, srv, typ, "v1", "")
		if msg := nack.GetErrorDetail().GetMessage(); msg != "out of file descriptors" {
			t.Errorf("%s NACK message = %q", xdsclient.ShortName(typ), msg)
		}
	}
	if n := len(rec.calls()); n != 0 {
		t.Errorf("%d sets applied, want none", n)
	}
}

func TestInconsistentUpdateIsHeldThenNACKed(t *testing.T) {
	srv := xdstest.NewServer(t, "")
	srv.SetSnapshot(t, node, "v1",
		runtimetest.Listener("web", "127.0.0.1", 10001, "backend"),
		runtimetest.EDSCluster("backend"),
		runtimetest.LoadAssignment("backend", runtimetest.Endpoint("127.0.0.1:20001", 1)))
	rec := &recorder{}
	runClient(t, rec, func(o *xdsclient.Options) { o.HoldTimeout = 300 * time.Millisecond }, srv.Addr())
	acked(t, srv, "v1", cds, eds, lds)

	// v2's listener names a cluster the control plane never sends.
	srv.SetSnapshot(t, node, "v2",
		runtimetest.Listener("web", "127.0.0.1", 10001, "nowhere"),
		runtimetest.EDSCluster("backend"),
		runtimetest.LoadAssignment("backend", runtimetest.Endpoint("127.0.0.1:20001", 1)))
	nack := nacked(t, srv, lds, "v2", "v1")
	if msg := nack.GetErrorDetail().GetMessage(); !strings.Contains(msg, "nowhere") || !strings.Contains(msg, "no consistent set") {
		t.Errorf("NACK message = %q", msg)
	}
	for _, a := range rec.calls() {
		if a.versions[lds] != "v1" {
			t.Errorf("applier got LDS %s", a.versions[lds])
		}
	}
}

func TestReconnectsToRestartedServer(t *testing.T) {
	srv := xdstest.NewServer(t, "")
	srv.SetSnapshot(t, node, "v1",
		runtimetest.Listener("web", "127.0.0.1", 10001, "backend"),
		runtimetest.EDSCluster("backend"),
		runtimetest.LoadAssignment("backend", runtimetest.Endpoint("127.0.0.1:20001", 1)))
	rec := &recorder{}
	c := runClient(t, rec, nil, srv.Addr())
	acked(t, srv, "v1", cds, eds, lds)

	srv.Stop()
	xdstest.WaitFor(t, timeout, "disconnect", func() bool { return !c.Status().Connected })
	if v := c.Status().Types[lds].Version; v != "v1" {
		t.Errorf("running LDS after disconnect = %q, want v1 kept", v)
	}

	srv2 := xdstest.NewServer(t, srv.Addr())
	srv2.SetSnapshot(t, node, "v2",
		runtimetest.Listener("web", "127.0.0.1", 10001, "backend"),
		runtimetest.EDSCluster("backend"),
		runtimetest.LoadAssignment("backend", runtimetest.Endpoint("127.0.0.1:20009", 1)))
	acked(t, srv2, "v2", cds, eds, lds)
	last, _ := rec.last()
	if !mapsEqual(last.versions, map[string]string{cds: "v2", eds: "v2", lds: "v2"}) {
		t.Errorf("versions after reconnect = %v", last.versions)
	}
	// The new stream asked for everything again and kept the endpoints subscribed.
	var first = map[string]*discoveryv3.DiscoveryRequest{}
	for _, r := range srv2.Requests() {
		if _, ok := first[r.GetTypeUrl()]; !ok {
			first[r.GetTypeUrl()] = r
		}
	}
	for _, typ := range []string{cds, eds, lds} {
		r := first[typ]
		if r == nil || r.GetVersionInfo() != "" || r.GetResponseNonce() != "" {
			t.Errorf("first %s request on the new stream = %v, want empty version and nonce", xdsclient.ShortName(typ), r)
		}
	}
	if !slices.Equal(first[eds].GetResourceNames(), []string{"backend"}) {
		t.Errorf("first EDS request names = %v, want [backend]", first[eds].GetResourceNames())
	}
}

func TestFailsOverToNextServer(t *testing.T) {
	dead := xdstest.NewServer(t, "")
	dead.Stop()
	srv := xdstest.NewServer(t, "")
	srv.SetSnapshot(t, node, "v1",
		runtimetest.Listener("web", "127.0.0.1", 10001, "backend"),
		runtimetest.EDSCluster("backend"),
		runtimetest.LoadAssignment("backend", runtimetest.Endpoint("127.0.0.1:20001", 1)))
	c := runClient(t, &recorder{}, nil, dead.Addr(), srv.Addr())
	acked(t, srv, "v1", cds, eds, lds)
	if st := c.Status(); st.Server != srv.Addr() {
		t.Errorf("server = %q, want %q", st.Server, srv.Addr())
	}
}

func TestStatusNamesServerBeingTried(t *testing.T) {
	dead := xdstest.NewServer(t, "")
	dead.Stop()
	c := runClient(t, &recorder{}, nil, dead.Addr())
	xdstest.WaitFor(t, timeout, "an attempt", func() bool { return c.Status().Server == dead.Addr() })
	if c.Status().Connected {
		t.Error("connected to a stopped server")
	}
}

func TestSetRunningSubscribesAndOverlays(t *testing.T) {
	srv := xdstest.NewServer(t, "")
	seed := &runtime.Resources{}
	xdsclient.Put(seed, lds, map[string]proto.Message{"web": runtimetest.Listener("web", "127.0.0.1", 10001, "backend")})
	xdsclient.Put(seed, cds, map[string]proto.Message{"backend": runtimetest.EDSCluster("backend")})
	xdsclient.Put(seed, eds, map[string]proto.Message{"backend": runtimetest.LoadAssignment("backend", runtimetest.Endpoint("127.0.0.1:20001", 1))})
	rec := &recorder{}
	c, err := xdsclient.New(xdsclient.Options{Servers: []string{srv.Addr()}, NodeID: node, Applier: rec})
	if err != nil {
		t.Fatal(err)
	}
	c.SetRunning(seed, map[string]string{lds: "disk-1", cds: "disk-1", eds: "disk-1"})
	if st := c.Status(); st.Types[lds].Version != "disk-1" || st.Types[eds].Version != "disk-1" {
		t.Errorf("status after SetRunning = %+v", st.Types)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	// The endpoints the seed needs are asked for in the stream's first EDS
	// request, before any response, with an empty version.
	xdstest.WaitFor(t, timeout, "the first EDS request", func() bool {
		for _, r := range srv.Requests() {
			if r.GetTypeUrl() == eds {
				return true
			}
		}
		return false
	})
	for _, r := range srv.Requests() {
		if r.GetTypeUrl() == eds {
			if !slices.Equal(r.GetResourceNames(), []string{"backend"}) || r.GetResponseNonce() != "" || r.GetVersionInfo() != "" {
				t.Errorf("first EDS request = %v", r)
			}
			break
		}
	}

	srv.SetSnapshot(t, node, "cp-1",
		runtimetest.Listener("web", "127.0.0.1", 10001, "backend"),
		runtimetest.EDSCluster("backend"),
		runtimetest.LoadAssignment("backend", runtimetest.Endpoint("127.0.0.1:20002", 1)))
	acked(t, srv, "cp-1", cds, eds, lds)
	last, _ := rec.last()
	if got := last.set.Endpoints["backend"].GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress().GetPortValue(); got != 20002 {
		t.Errorf("endpoint port = %d, want the control plane's 20002", got)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	ok := xdsclient.Options{Servers: []string{"127.0.0.1:1"}, NodeID: "n", Applier: &recorder{}}
	for _, tc := range []struct {
		name   string
		modify func(*xdsclient.Options)
	}{
		{"no servers", func(o *xdsclient.Options) { o.Servers = nil }},
		{"empty server", func(o *xdsclient.Options) { o.Servers = []string{""} }},
		{"no node id", func(o *xdsclient.Options) { o.NodeID = "" }},
		{"no applier", func(o *xdsclient.Options) { o.Applier = nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := ok
			tc.modify(&o)
			if _, err := xdsclient.New(o); err == nil {
				t.Error("New succeeded")
			}
		})
	}
	if _, err := xdsclient.New(ok); err != nil {
		t.Errorf("New(valid) = %v", err)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

// metricValue returns the value of the series name{labels} in reg.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue series
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no series %s%v", name, labels)
	return 0
}
