package admin

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/prototext"

	"github.com/flotilla-proxy/flotilla/controlplane/bundle"
	"github.com/flotilla-proxy/flotilla/controlplane/bundle/certtest"
	"github.com/flotilla-proxy/flotilla/controlplane/store"
	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
	configv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/config/v1"
)

// keyRecorder is a Publisher that keeps the files of the last version.
type keyRecorder struct {
	recorder
	files []*adminv1.ConfigFile
}

func (r *keyRecorder) SetVersion(n uint64, files []*adminv1.ConfigFile) error {
	r.files = files
	return r.recorder.SetVersion(n, files)
}

// tlsFiles is bundleFiles with TLS terminated with pair.
func tlsFiles(t *testing.T, pair *certtest.Pair, endpoint string) []*adminv1.ConfigFile {
	t.Helper()
	fs := bundleFiles(endpoint)
	fs[0].Bundle.Listeners[0].Tls = &configv1.ListenerTls{Certificates: []*configv1.TlsCertificate{{
		Cert: &configv1.PemSource{File: "db.pem", Pem: string(pair.CertPEM)},
		Key:  &configv1.PemSource{File: "db.key", Pem: string(pair.KeyPEM)},
	}}}
	if err := bundle.Validate(fs); err != nil {
		t.Fatal(err)
	}
	return fs
}

// TestKeysRedacted: GetVersion never returns a private key, the version's
// hash covers the real key, the publisher (the xDS server) gets the real key,
// and a rollback republishes the real key from the store. Nothing logged
// holds the key.
func TestKeysRedacted(t *testing.T) {
	ctx := context.Background()
	var logs bytes.Buffer
	st := open(t, filepath.Join(t.TempDir(), "flotilla.db"))
	pub := &keyRecorder{}
	svc, err := New(ctx, st, pub, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := certtest.NewCA(certtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pair, err := ca.Issue(certtest.Options{DNSNames: []string{"db.example"}})
	if err != nil {
		t.Fatal(err)
	}
	v1 := tlsFiles(t, pair, "192.0.2.1:1")
	if _, err := svc.Apply(ctx, &adminv1.ApplyRequest{Files: v1}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Apply(ctx, &adminv1.ApplyRequest{Files: tlsFiles(t, pair, "192.0.2.2:1")}); err != nil {
		t.Fatal(err)
	}
	keyBody := string(pair.KeyPEM[40:100])
	for _, n := range []uint64{0, 1, 2} {
		resp, err := svc.GetVersion(ctx, &adminv1.GetVersionRequest{Number: n})
		if err != nil {
			t.Fatal(err)
		}
		text := prototext.Format(resp)
		if strings.Contains(text, "PRIVATE KEY") || strings.Contains(text, keyBody) {
			t.Fatalf("GetVersion(%d) returns the private key", n)
		}
		if !strings.Contains(text, bundle.RedactedKey(string(pair.KeyPEM))) || !strings.Contains(text, "BEGIN CERTIFICATE") {
			t.Errorf("GetVersion(%d) lacks the redacted key or the certificate:\n%s", n, text)
		}
	}
	got, err := svc.GetVersion(ctx, &adminv1.GetVersionRequest{Number: 1})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetVersion().GetInfo().GetHash() != store.Hash(v1) || store.Hash(v1) == store.Hash(bundle.Redact(v1)) {
		t.Error("the version hash is not of the real key")
	}
	if _, err := svc.Rollback(ctx, &adminv1.RollbackRequest{Number: 1}); err != nil {
		t.Fatal(err)
	}
	if k := pub.files[0].GetBundle().GetListeners()[0].GetTls().GetCertificates()[0].GetKey().GetPem(); k != string(pair.KeyPEM) {
		t.Errorf("rollback published key %q, want the real one", k)
	}
	if strings.Contains(logs.String(), "PRIVATE KEY") || strings.Contains(logs.String(), keyBody) {
		t.Errorf("a private key reached the logs:\n%s", logs.String())
	}
}
