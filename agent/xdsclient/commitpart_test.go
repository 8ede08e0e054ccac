package xdsclient_test

import (
	"context"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/flotilla-proxy/flotilla/agent/runtime/runtimetest"
	"github.com/flotilla-proxy/flotilla/agent/xdsclient"
	"github.com/flotilla-proxy/flotilla/agent/xdsclient/xdstest"
)

// perType sets a snapshot with one version per type, as controlplane/xds does (a type whose
// content did not change keeps its version, so the cache does not resend it).
func perType(t *testing.T, srv *xdstest.Server, v map[string]string, r map[string][]types.Resource) {
	t.Helper()
	snap := &cache.Snapshot{}
	for _, typ := range []string{resource.ListenerType, resource.ClusterType, resource.EndpointType, resource.SecretType} {
		snap.Resources[cache.GetResponseType(typ)] = cache.NewResources(v[typ], r[typ])
	}
	if err := srv.Cache.SetSnapshot(context.Background(), node, snap); err != nil {
		t.Fatal(err)
	}
}

// TestCommitPartKeepsWhatTheHeldListenerNeeds: a new TLS listener on a new EDS cluster is
// held (no endpoints yet); its secret arrives; commitPart applies {SDS} on its own, which
// prunes the secret (no *running* listener needs it) yet ACKs SDS. When the endpoints arrive,
// the listener is still missing its secret, which the server never resends (SDS version and
// names unchanged): the listener is held until HoldTimeout and then NACKed.
func TestCommitPartKeepsWhatTheHeldListenerNeeds(t *testing.T) {
	ca := runtimetest.NewCA("ca")
	sec := runtimetest.CertSecret(ca.Issue("db", false, "db.example"))
	web := runtimetest.StaticCluster("web", runtimetest.Endpoint("127.0.0.1:20001", 1))
	webL := runtimetest.Listener("web", "127.0.0.1", 10002, "web")
	dbL := tlsListener("db-tls", 10001, "db", sec.GetName())
	db := runtimetest.EDSCluster("db")

	srv := xdstest.NewServer(t, "")
	perType(t, srv, map[string]string{lds: "1", cds: "1", eds: "1", sds: "1"},
		map[string][]types.Resource{lds: {webL}, cds: {web}})
	rec := &recorder{}
	runClient(t, rec, func(o *xdsclient.Options) { o.HoldTimeout = 3 * time.Second }, srv.Addr())
	acked(t, srv, "1", lds, cds)

	// v2: the new listener and its EDS cluster, the secret, no endpoints for db yet.
	perType(t, srv, map[string]string{lds: "2", cds: "2", eds: "2", sds: "2"},
		map[string][]types.Resource{lds: {webL, dbL}, cds: {web, db}, sds: {sec}})
	xdstest.WaitFor(t, timeout, "SDS 2 answered", func() bool { _, ok := srv.Answered(sds, "2", "2"); return ok })
	// v3: endpoints for db; listeners, clusters and secrets unchanged (same versions).
	perType(t, srv, map[string]string{lds: "2", cds: "2", eds: "3", sds: "2"},
		map[string][]types.Resource{lds: {webL, dbL}, cds: {web, db}, sds: {sec},
			eds: {runtimetest.LoadAssignment("db", runtimetest.Endpoint("127.0.0.1:20003", 1))}})
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if last, ok := rec.last(); ok {
			if _, has := last.set.Listeners["db-tls"]; has {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	nack := nacked(t, srv, lds, "2", "1")
	t.Fatalf("db-tls never applied; after HoldTimeout LDS 2 is NACKed: %s", nack.GetErrorDetail().GetMessage())
}
