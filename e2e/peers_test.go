package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// requirePeer returns the path of a real program a test runs beside the agent
// (nginx, openssl, …). `make test-deps` installs them from Debian. When one is
// missing the test is skipped on a developer's machine, but fails in CI
// (CI=true): a peer that CI forgot to install must not turn into a silent skip.
func requirePeer(t *testing.T, name string) string {
	t.Helper()
	for _, dir := range []string{"", "/usr/sbin", "/usr/local/sbin", "/sbin"} {
		candidate := name
		if dir != "" {
			candidate = filepath.Join(dir, name)
		}
		if p, err := exec.LookPath(candidate); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not installed: `make test-deps` installs the test peers from Debian", name)
	}
	t.Skipf("%s is not installed (run `make test-deps` as root to install the test peers)", name)
	return ""
}

// testCA is a throwaway certificate authority for one test.
type testCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	pemPath string
	pool    *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "flotilla e2e CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{cert: cert, key: key, pool: x509.NewCertPool()}
	ca.pool.AddCert(cert)
	ca.pemPath = filepath.Join(t.TempDir(), "ca.pem")
	writePEM(t, ca.pemPath, "CERTIFICATE", der)
	return ca
}

// issue writes a server certificate for names, signed by the CA, and returns
// the paths of the certificate and its key.
func (ca *testCA) issue(t *testing.T, dir, base string, names ...string) (certPath, keyPath string) {
	t.Helper()
	return ca.issueFor(t, dir, base, x509.ExtKeyUsageServerAuth, names...)
}

// issueClient writes a client certificate for mTLS.
func (ca *testCA) issueClient(t *testing.T, dir, base string, names ...string) (certPath, keyPath string) {
	t.Helper()
	return ca.issueFor(t, dir, base, x509.ExtKeyUsageClientAuth, names...)
}

func (ca *testCA) issueFor(t *testing.T, dir, base string, usage x509.ExtKeyUsage, names ...string) (certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, base+".crt"), filepath.Join(dir, base+".key")
	writePEM(t, certPath, "CERTIFICATE", der)
	writePEM(t, keyPath, "EC PRIVATE KEY", keyDER)
	return certPath, keyPath
}

// clientConfig is a TLS client config that trusts only the CA.
func (ca *testCA) clientConfig(serverName string) *tls.Config {
	return &tls.Config{ServerName: serverName, RootCAs: ca.pool, MinVersion: tls.VersionTLS12}
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
