package xds

import (
	"bytes"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/flotilla-proxy/flotilla/controlplane/bundle/certtest"
	"github.com/flotilla-proxy/flotilla/controlplane/compiler"
	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
	configv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/config/v1"
)

// resourceStatus is an agent's status for one type, by short name.
func resourceStatus(a *adminv1.Agent, short string) *adminv1.ResourceStatus {
	for _, r := range a.GetResources() {
		if r.GetShort() == short {
			return r
		}
	}
	return nil
}

// tlsFiles is files(port, nil, ep) with TLS terminated on the listener with
// pair's certificate and key.
func tlsFiles(port int, pair *certtest.Pair, ep string) []*adminv1.ConfigFile {
	fs := files(port, nil, ep)
	fs[0].Bundle.Listeners[0].Tls = &configv1.ListenerTls{Certificates: []*configv1.TlsCertificate{{
		Cert: &configv1.PemSource{File: "db.pem", Pem: string(pair.CertPEM)},
		Key:  &configv1.PemSource{File: "db.key", Pem: string(pair.KeyPEM)},
	}}}
	return fs
}

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestSecrets: SDS is part of every snapshot, versioned like the other types (unchanged secrets keep their
// version), held back after a NACK, and private keys never reach the logs,
// even at debug level.
func TestSecrets(t *testing.T) {
	var logs syncBuffer
	s, conn := startServer(t, Options{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	ca, err := certtest.NewCA(certtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pair1, err := ca.Issue(certtest.Options{DNSNames: []string{"db.example"}})
	if err != nil {
		t.Fatal(err)
	}
	pair2, err := ca.Issue(certtest.Options{DNSNames: []string{"db.example"}})
	if err != nil {
		t.Fatal(err)
	}
	name1 := compiler.SecretName(string(pair1.CertPEM), string(pair1.KeyPEM))
	name2 := compiler.SecretName(string(pair2.CertPEM), string(pair2.KeyPEM))

	if err := s.SetVersion(1, tlsFiles(7001, pair1, "127.0.0.1:9001")); err != nil {
		t.Fatal(err)
	}
	a := newADS(t, conn, node("a1", nil))
	a.send(resource.ListenerType, "", "", nil, "")
	a.send(resource.SecretType, "", "", []string{name1}, "")
	a.send(resource.EndpointType, "", "", []string{"c"}, "")
	a.send(resource.ClusterType, "", "", nil, "")
	var lds, sds = a.next(resource.ListenerType, "1"), a.next(resource.SecretType, "1")
	eds, cds := a.next(resource.EndpointType, "1"), a.next(resource.ClusterType, "1")
	if n := len(sds.GetResources()); n != 1 {
		t.Fatalf("SDS carried %d secrets, want 1", n)
	}
	got := &tlsv3.Secret{}
	if err := sds.GetResources()[0].UnmarshalTo(got); err != nil {
		t.Fatal(err)
	}
	if got.GetName() != name1 || string(got.GetTlsCertificate().GetPrivateKey().GetInlineBytes()) != string(pair1.KeyPEM) {
		t.Fatalf("secret %q does not carry the key", got.GetName())
	}
	a.send(resource.ListenerType, "1", lds.GetNonce(), nil, "")
	a.send(resource.SecretType, "1", sds.GetNonce(), []string{name1}, "")
	a.send(resource.EndpointType, "1", eds.GetNonce(), []string{"c"}, "")
	a.send(resource.ClusterType, "1", cds.GetNonce(), nil, "")
	waitFor(t, "SDS synced", func() bool { st, _ := state(s, "a1", "SDS"); return st == adminv1.SyncState_SYNC_STATE_SYNCED })
	if got := s.Agents(nil)[0].GetResources(); !slices.EqualFunc(got, []string{"CDS", "EDS", "SDS", "LDS", "RDS"}, func(r *adminv1.ResourceStatus, s string) bool { return r.GetShort() == s }) {
		t.Errorf("agent resources %v", got)
	}

	// Endpoints only: SDS keeps version 1.
	if err := s.SetVersion(2, tlsFiles(7001, pair1, "127.0.0.1:9002")); err != nil {
		t.Fatal(err)
	}
	eds = a.next(resource.EndpointType, "2")
	a.send(resource.EndpointType, "2", eds.GetNonce(), []string{"c"}, "")

	// A new certificate: a new secret name, in new LDS and SDS versions.
	// go-control-plane's ordered ADS sends SDS after LDS; agents wait for the
	// secrets a listener names as they wait for EDS.
	if err := s.SetVersion(3, tlsFiles(7001, pair2, "127.0.0.1:9002")); err != nil {
		t.Fatal(err)
	}
	lds = a.next(resource.ListenerType, "3")
	sds = a.next(resource.SecretType, "3")
	if len(sds.GetResources()) != 1 || !strings.Contains(sds.GetResources()[0].String(), name2) {
		t.Errorf("SDS 3 does not carry only %s", name2)
	}
	a.send(resource.SecretType, "1", sds.GetNonce(), []string{name1, name2}, "secret cert-…: bad key")
	waitFor(t, "SDS nacked", func() bool { st, _ := state(s, "a1", "SDS"); return st == adminv1.SyncState_SYNC_STATE_NACKED })
	a.send(resource.ListenerType, "3", lds.GetNonce(), nil, "")

	// The rejected secrets are not pushed again with the next endpoints.
	if err := s.SetVersion(4, tlsFiles(7001, pair2, "127.0.0.1:9004")); err != nil {
		t.Fatal(err)
	}
	eds = a.next(resource.EndpointType, "4")
	a.send(resource.EndpointType, "4", eds.GetNonce(), []string{"c"}, "")
	if st, _ := state(s, "a1", "SDS"); st != adminv1.SyncState_SYNC_STATE_NACKED {
		t.Errorf("SDS state %v, want NACKED", st)
	}

	for _, p := range []*certtest.Pair{pair1, pair2} {
		if out := logs.String(); strings.Contains(out, "PRIVATE KEY") || strings.Contains(out, string(p.KeyPEM[40:80])) {
			t.Fatalf("a private key reached the logs:\n%s", out)
		}
	}
	if !strings.Contains(logs.String(), "type=SDS") {
		t.Errorf("no SDS line in the logs:\n%s", logs.String())
	}
}
