package flotctl

import (
	"strings"
	"testing"

	"github.com/flotilla-proxy/flotilla/controlplane/bundle"
	"github.com/flotilla-proxy/flotilla/controlplane/bundle/certtest"
)

// TestTLSKeysNeverShown: apply reads the PEM files next to the YAML, get and
// diff show private keys only as hashes, and diff compares keys by those
// hashes: unchanged files are no change, a new key is.
func TestTLSKeysNeverShown(t *testing.T) {
	server, _ := startAdmin(t)
	dir := t.TempDir()
	ca, err := certtest.NewCA(certtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	issue := func() *certtest.Pair {
		p, err := ca.Issue(certtest.Options{DNSNames: []string{"db.example"}})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	first, second := issue(), issue()
	writePair := func(p *certtest.Pair) {
		writeFile(t, dir, "certs/db.pem", string(p.CertPEM))
		writeFile(t, dir, "certs/db.key", string(p.KeyPEM))
	}
	writePair(first)
	conf := writeFile(t, dir, "tls.yaml", `
listeners:
  - name: db-tls
    address: "127.0.0.1:5433"
    tls: { certificates: [{ cert: certs/db.pem, key: certs/db.key }] }
    tcp: { cluster: db }
clusters:
  - { name: db, endpoints: ["127.0.0.1:5432"] }
`)
	noKey := func(what string, out string, keys ...*certtest.Pair) {
		t.Helper()
		for _, p := range keys {
			if strings.Contains(out, "PRIVATE KEY") || strings.Contains(out, string(p.KeyPEM[40:100])) {
				t.Fatalf("%s shows a private key:\n%s", what, out)
			}
		}
	}
	if r := flotctl(t, server, "apply", "-m", "tls", conf); r.code != 0 {
		t.Fatalf("apply: %d %s", r.code, r.stderr)
	}
	for _, format := range []string{"table", "yaml", "json"} {
		r := flotctl(t, server, "get", "-o", format)
		if r.code != 0 {
			t.Fatalf("get -o %s: %d %s", format, r.code, r.stderr)
		}
		noKey("get -o "+format, r.stdout, first)
		if !strings.Contains(r.stdout, bundle.RedactedKey(string(first.KeyPEM))) || !strings.Contains(r.stdout, "certs/db.pem") {
			t.Errorf("get -o %s shows neither the key's hash nor the certificate's file:\n%s", format, r.stdout)
		}
	}
	if r := flotctl(t, server, "diff", conf); r.code != 0 {
		t.Errorf("diff of the applied files: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	writePair(second)
	r := flotctl(t, server, "diff", conf)
	if r.code != 1 {
		t.Fatalf("diff after a new certificate: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	noKey("diff", r.stdout+r.stderr, first, second)
	t.Logf("diff:\n%s", r.stdout)
	for _, want := range []string{"-", bundle.RedactedKey(string(first.KeyPEM)), bundle.RedactedKey(string(second.KeyPEM))} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("diff lacks %q:\n%s", want, r.stdout)
		}
	}
}
