package bundle

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/flotilla-proxy/flotilla/controlplane/bundle/certtest"
	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
)

// tlsFixture is a directory of PEM files for TLS tests: a CA, certificates
// it signed, an expired one, and files that are not what they claim.
type tlsFixture struct {
	dir string
	ca  *certtest.Pair
}

func newTLSFixture(t *testing.T) *tlsFixture {
	t.Helper()
	dir := t.TempDir()
	must := func(p *certtest.Pair, err error) *certtest.Pair {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	ca := must(certtest.NewCA(certtest.Options{CommonName: "test ca"}))
	write := func(p *certtest.Pair, name string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(dir, "certs"), 0o755); err != nil {
			t.Fatal(err)
		}
		if _, _, err := p.WriteFiles(filepath.Join(dir, "certs"), name); err != nil {
			t.Fatal(err)
		}
	}
	write(ca, "ca")
	write(must(ca.Issue(certtest.Options{CommonName: "db", DNSNames: []string{"db.example"}})), "db")
	write(must(ca.Issue(certtest.Options{CommonName: "alt", DNSNames: []string{"alt.example"}})), "alt")
	write(must(ca.Issue(certtest.Options{CommonName: "proxy", Client: true})), "proxy")
	expired := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	write(must(ca.Issue(certtest.Options{CommonName: "old", NotBefore: expired.Add(-time.Hour), NotAfter: expired})), "old")
	files := map[string]string{
		"certs/garbage.pem":        "not PEM at all\n",
		"certs/ca-key-as-cert.pem": string(ca.KeyPEM),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return &tlsFixture{dir: dir, ca: ca}
}

// load writes yaml as dir/conf/tls.yaml (so certificate paths are
// ../certs/…) and loads it.
func (f *tlsFixture) load(t *testing.T, yaml string) ([]*adminv1.ConfigFile, error) {
	t.Helper()
	conf := filepath.Join(f.dir, "conf")
	if err := os.MkdirAll(conf, 0o755); err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(conf, "tls.yaml")
	if err := os.WriteFile(name, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return Load(name)
}

const tlsCluster = "  - { name: db, endpoints: ['192.0.2.3:5432'] }\n"

func TestTLSValidate(t *testing.T) {
	fx := newTLSFixture(t)
	tests := []struct {
		name string
		yaml string
		want []string // error lines with the YAML path removed
	}{
		{name: "termination with mTLS", yaml: `
listeners:
  - name: db-tls
    address: ":5433"
    tls:
      certificates:
        - { cert: ../certs/db.pem, key: ../certs/db.key }
        - { cert: ../certs/alt.pem, key: ../certs/alt.key }
      client_ca: ../certs/ca.pem
      alpn: [postgresql]
      min_version: "1.3"
    sni: [{ names: [db.example], cluster: db }]
    tcp: { cluster: db }
clusters:
` + tlsCluster},
		{name: "origination", yaml: `
listeners: [{ name: l, address: ":1", tcp: { cluster: a } }, { name: m, address: ":2", tcp: { cluster: b } }, { name: o, address: ":3", tcp: { cluster: c } }]
clusters:
  - { name: a, tls: { sni: db.example, ca: ../certs/ca.pem, client_certificate: { cert: ../certs/proxy.pem, key: ../certs/proxy.key } }, endpoints: ['192.0.2.3:1'] }
  - { name: b, tls: { pass_client_sni: true, ca: ../certs/ca.pem, verify_name: db.example }, endpoints: ['192.0.2.3:1'] }
  - { name: c, proxy_protocol: v2, tls: { insecure_skip_verify: true }, endpoints: ['192.0.2.3:1'] }
`},
		{name: "listener errors", yaml: `
listeners:
  - name: l
    address: ":1"
    tls:
      certificates:
        - { cert: ../certs/old.pem, key: ../certs/old.key }
        - { cert: ../certs/db.pem, key: ../certs/alt.key }
        - { cert: ../certs/garbage.pem, key: ../certs/garbage.pem }
        - { cert: ../certs/ca-key-as-cert.pem }
      client_ca: ../certs/db.pem
      alpn: [""]
      min_version: "1.1"
    tcp: { cluster: db }
  - { name: u, address: ":2", udp: { cluster: db }, tls: { certificates: [{ cert: ../certs/db.pem, key: ../certs/db.key }] } }
  - { name: e, address: ":3", tcp: { cluster: db }, tls: {} }
clusters:
` + tlsCluster, want: []string{
			`listeners[0].tls.alpn[0]: an ALPN protocol is 1 to 255 bytes, such as "h2" or "postgresql"`,
			`listeners[0].tls.certificates[0].cert: ../certs/old.pem: certificate "CN=old" expired at 2020-01-02T03:04:05Z`,
			`listeners[0].tls.certificates[1].key: ../certs/alt.key: does not match the certificate in ../certs/db.pem`,
			`listeners[0].tls.certificates[2].cert: ../certs/garbage.pem: no PEM certificate found`,
			`listeners[0].tls.certificates[2].key: ../certs/garbage.pem: no PEM private key found`,
			`listeners[0].tls.certificates[3].cert: ../certs/ca-key-as-cert.pem: PEM block 1 is a "PRIVATE KEY", not a CERTIFICATE`,
			`listeners[0].tls.certificates[3].key: required: the path of a PEM file`,
			`listeners[0].tls.client_ca: ../certs/db.pem: certificate 1 ("CN=db") is not a CA certificate (basic constraints CA:TRUE)`,
			`listeners[0].tls.min_version: "1.1" is not a TLS version: use "1.2" (the default) or "1.3"`,
			`listeners[1].tls: only with tcp: TLS is not terminated on UDP`,
			`listeners[2].tls.certificates: required: at least one certificate with its key ({cert: server.pem, key: server.key})`,
		}},
		{name: "cluster errors", yaml: `
listeners: [{ name: l, address: ":1", tcp: { cluster: a } }, { name: u, address: ":2", udp: { cluster: d } }]
clusters:
  - { name: a, tls: { sni: a.example, pass_client_sni: true, ca: ../certs/ca.pem, insecure_skip_verify: true }, endpoints: ['192.0.2.3:1'] }
  - { name: b, tls: { sni: "*.example", verify_name: "x y" }, endpoints: ['192.0.2.3:1'] }
  - { name: c, tls: { insecure_skip_verify: true, verify_name: c.example, client_certificate: { cert: ../certs/proxy.pem, key: ../certs/db.key } }, endpoints: ['192.0.2.3:1'] }
  - { name: d, tls: { ca: ../certs/db.pem }, endpoints: ['192.0.2.3:1'] }
`, want: []string{
			`clusters[0].tls.insecure_skip_verify: cannot be combined with ca: either verify the endpoints against ca or do not verify them`,
			`clusters[0].tls.pass_client_sni: cannot be combined with sni: send a fixed sni or the client's, not both`,
			`clusters[1].tls.ca: required: the CA certificates to verify the endpoints against (or insecure_skip_verify: true to not verify them)`,
			`clusters[1].tls.sni: "*.example" is a wildcard: give the exact DNS name`,
			`clusters[1].tls.verify_name: "x y" is not a server name: ` + ServerNameRule,
			`clusters[2].tls.client_certificate.key: ../certs/db.key: does not match the certificate in ../certs/proxy.pem`,
			`clusters[2].tls.verify_name: has no effect with insecure_skip_verify: nothing is verified`,
			`clusters[3].tls.ca: ../certs/db.pem: certificate 1 ("CN=db") is not a CA certificate (basic constraints CA:TRUE)`,
			`listeners[1].udp.cluster: cluster "d" originates TLS (tls), which a UDP listener cannot: use a cluster without it`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files, err := fx.load(t, tt.yaml)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			if err := Validate(files); err != nil {
				prefix := files[0].GetPath() + ": "
				for _, line := range strings.Split(err.Error(), "\n") {
					got = append(got, strings.TrimPrefix(line, prefix))
				}
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("Validate:\n got: %s\nwant: %s", strings.Join(got, "\n      "), strings.Join(tt.want, "\n      "))
			}
		})
	}
}

func TestTLSLoad(t *testing.T) {
	fx := newTLSFixture(t)
	files, err := fx.load(t, "listeners: [{name: l, address: ':1', tcp: {cluster: db}, tls: {certificates: [{cert: ../certs/db.pem, key: ../certs/db.key}], client_ca: ../certs/ca.pem}}]\nclusters:\n"+tlsCluster)
	if err != nil {
		t.Fatal(err)
	}
	tls := files[0].GetBundle().GetListeners()[0].GetTls()
	read := func(name string) string {
		data, err := os.ReadFile(filepath.Join(fx.dir, "certs", name))
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	for _, c := range []struct{ file, pem, want string }{
		{tls.GetCertificates()[0].GetCert().GetFile(), tls.GetCertificates()[0].GetCert().GetPem(), "db.pem"},
		{tls.GetCertificates()[0].GetKey().GetFile(), tls.GetCertificates()[0].GetKey().GetPem(), "db.key"},
		{tls.GetClientCa().GetFile(), tls.GetClientCa().GetPem(), "ca.pem"},
	} {
		if c.file != "../certs/"+c.want || c.pem != read(c.want) {
			t.Errorf("%s: file %q, pem read: %v", c.want, c.file, c.pem == read(c.want))
		}
	}

	_, err = fx.load(t, "listeners: [{name: l, address: ':1', tcp: {cluster: db}, tls: {certificates: [{cert: ../certs/db.pem, key: ../certs/missing.key}]}}]\nclusters:\n"+tlsCluster)
	want := filepath.Join(fx.dir, "conf", "tls.yaml") + ": listeners[0].tls.certificates[0].key: cannot read PEM file ../certs/missing.key: no such file or directory"
	if err == nil || err.Error() != want {
		t.Errorf("missing file: got %v, want %s", err, want)
	}
}

func TestParsePemShorthand(t *testing.T) {
	f := mustParse(t, "a.yaml", "clusters: [{name: c, tls: {ca: ca.pem, client_certificate: {cert: {pem: inline}, key: k.key}}, endpoints: ['192.0.2.1:1']}]")
	tls := f.GetBundle().GetClusters()[0].GetTls()
	if tls.GetCa().GetFile() != "ca.pem" || tls.GetClientCertificate().GetKey().GetFile() != "k.key" || tls.GetClientCertificate().GetCert().GetPem() != "inline" {
		t.Errorf("got %v", tls)
	}
}

func TestRedact(t *testing.T) {
	fx := newTLSFixture(t)
	files, err := fx.load(t, `
listeners: [{name: l, address: ':1', tcp: {cluster: db}, tls: {certificates: [{cert: ../certs/db.pem, key: ../certs/db.key}, {cert: ../certs/alt.pem, key: ../certs/alt.key}]}}]
clusters: [{name: db, tls: {ca: ../certs/ca.pem, client_certificate: {cert: ../certs/proxy.pem, key: ../certs/proxy.key}}, endpoints: ['192.0.2.3:1']}]
`)
	if err != nil {
		t.Fatal(err)
	}
	before := proto.CloneOf(files[0])
	red := Redact(files)
	if !proto.Equal(files[0], before) {
		t.Error("Redact changed its input")
	}
	keys := 0
	for _, ref := range PemRefs(red[0].GetBundle()) {
		got := ref.Source.GetPem()
		switch {
		case ref.PrivateKey:
			keys++
			if strings.Contains(got, "PRIVATE KEY") || !strings.HasPrefix(got, "<private key sha256:") || len(got) != len("<private key sha256:>")+64 {
				t.Errorf("%s: %q", ref.Field, got)
			}
		case !strings.Contains(got, "BEGIN CERTIFICATE"):
			t.Errorf("%s: certificate redacted: %q", ref.Field, got)
		}
	}
	if keys != 3 {
		t.Errorf("%d keys, want 3", keys)
	}
	if !proto.Equal(Redact(red)[0], red[0]) {
		t.Error("redacting twice changes the result")
	}
	if a, b := RedactedKey("x"), RedactedKey("y"); a == b {
		t.Error("different keys redact the same")
	}
}
