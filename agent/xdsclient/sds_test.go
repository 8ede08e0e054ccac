package xdsclient_test

import (
	"slices"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/flotilla-proxy/flotilla/agent/runtime"
	"github.com/flotilla-proxy/flotilla/agent/runtime/runtimetest"
	"github.com/flotilla-proxy/flotilla/agent/xdsclient/xdstest"
)

// tlsListener is a listener on port whose chain terminates TLS with the named secrets.
func tlsListener(name string, port uint32, cluster string, secrets ...string) *listenerv3.Listener {
	l := runtimetest.Listener(name, "127.0.0.1", port, cluster)
	l.FilterChains[0].TransportSocket = runtimetest.TLSSocket(runtimetest.DownstreamTLSContext(nil, secrets...))
	return l
}

// sdsRequested reports whether the client asked for exactly names over SDS.
func sdsRequested(srv *xdstest.Server, names ...string) bool {
	for _, r := range slices.Backward(srv.Requests()) {
		if r.GetTypeUrl() == sds {
			return slices.Equal(r.GetResourceNames(), names)
		}
	}
	return false
}

// TestSecretArrivesLater: a listener whose chain names a secret the control plane does not
// have yet is held (the SDS subscription asks for it); once the secret is published, the
// listener and the secret are applied together and ACKed. A rotation to a new secret name
// moves the subscription, and the old secret is dropped.
func TestSecretArrivesLater(t *testing.T) {
	ca := runtimetest.NewCA("ca")
	sec1 := runtimetest.CertSecret(ca.Issue("db", false, "db.example"))
	sec2 := runtimetest.CertSecret(ca.Issue("db", false, "db.example"))
	cluster := runtimetest.StaticCluster("db", runtimetest.Endpoint("127.0.0.1:20001", 1))

	srv := xdstest.NewServer(t, "")
	srv.SetSnapshot(t, node, "v1", tlsListener("db-tls", 10001, "db", sec1.GetName()), cluster)
	rec := &recorder{}
	runClient(t, rec, nil, srv.Addr())

	acked(t, srv, "v1", cds)
	xdstest.WaitFor(t, timeout, "SDS request for "+sec1.GetName(), func() bool { return sdsRequested(srv, sec1.GetName()) })
	for _, c := range rec.calls() {
		if len(c.set.Listeners) != 0 {
			t.Fatalf("listener applied before its secret arrived: %v", keys(c.set.Listeners))
		}
	}
	if _, ok := srv.Answered(lds, "v1", "v1"); ok {
		t.Fatal("LDS v1 ACKed before its secret arrived")
	}

	srv.SetSnapshot(t, node, "v2", tlsListener("db-tls", 10001, "db", sec1.GetName()), cluster, sec1)
	acked(t, srv, "v2", sds, lds)
	last, _ := rec.last()
	if _, ok := last.set.Listeners["db-tls"]; !ok {
		t.Fatalf("listeners = %v, want db-tls", keys(last.set.Listeners))
	}
	if got := keys(last.set.Secrets); !slices.Equal(got, []string{sec1.GetName()}) {
		t.Fatalf("secrets = %v, want %s", got, sec1.GetName())
	}
	if _, err := runtime.Build(last.set); err != nil {
		t.Fatalf("applied set does not build: %v", err)
	}
	if last.versions[sds] != "v2" {
		t.Errorf("versions = %v", last.versions)
	}

	// Rotation: a new secret name in a new LDS.
	srv.SetSnapshot(t, node, "v3", tlsListener("db-tls", 10001, "db", sec2.GetName()), cluster, sec2)
	acked(t, srv, "v3", lds, sds)
	xdstest.WaitFor(t, timeout, "SDS subscription moved", func() bool { return sdsRequested(srv, sec2.GetName()) })
	xdstest.WaitFor(t, timeout, "rotation applied", func() bool {
		last, _ := rec.last()
		return slices.Equal(keys(last.set.Secrets), []string{sec2.GetName()})
	})
	for _, c := range rec.calls() {
		if err := c.set.Missing(); err != nil {
			t.Errorf("applier got an inconsistent set: %v", err)
		}
	}
}

// TestBadSecretNACKed: a secret whose key does not match its certificate is NACKed on SDS
// with a message naming it, never its bytes.
func TestBadSecretNACKed(t *testing.T) {
	ca := runtimetest.NewCA("ca")
	cert, _ := ca.Issue("db", false, "db.example")
	_, otherKey := ca.Issue("other", false, "other.example")
	bad := runtimetest.CertSecret(cert, otherKey)
	srv := xdstest.NewServer(t, "")
	srv.SetSnapshot(t, node, "v1", tlsListener("db-tls", 10001, "db", bad.GetName()),
		runtimetest.StaticCluster("db", runtimetest.Endpoint("127.0.0.1:20001", 1)), bad)
	runClient(t, &recorder{}, nil, srv.Addr())
	nack := nacked(t, srv, sds, "v1", "")
	msg := nack.GetErrorDetail().GetMessage()
	if !strings.Contains(msg, bad.GetName()) {
		t.Errorf("NACK %q does not name the secret", msg)
	}
	key := bad.GetTlsCertificate().GetPrivateKey().GetInlineBytes()
	if strings.Contains(msg, "PRIVATE KEY") || strings.Contains(msg, string(key[30:60])) {
		t.Errorf("NACK carries key material: %q", msg)
	}
}
