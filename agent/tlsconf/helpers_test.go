package tlsconf

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

var serial atomic.Int64

// testCA is a certificate authority generated for a test.
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
	pem  []byte
}

func newCA(t testing.TB, cn string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial.Add(1)),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// leafOpts describes a certificate to issue.
type leafOpts struct {
	cn     string
	dns    []string
	uris   []string
	ips    []string
	client bool // clientAuth instead of serverAuth
	rsa    bool // RSA key instead of ECDSA P-256
}

// issue returns the PEM certificate and PEM PKCS#8 key of a new leaf.
func (ca *testCA) issue(t testing.TB, o leafOpts) (certPEM, keyPEM []byte) {
	t.Helper()
	var key crypto.Signer
	var err error
	if o.rsa {
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	} else {
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		t.Fatal(err)
	}
	eku := x509.ExtKeyUsageServerAuth
	if o.client {
		eku = x509.ExtKeyUsageClientAuth
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)),
		Subject:      pkix.Name{CommonName: o.cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		DNSNames:     o.dns,
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{eku},
	}
	for _, u := range o.uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	for _, ip := range o.ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk})
}

// keyPair is issue as a tls.Certificate, for Go peers in tests.
func (ca *testCA) keyPair(t testing.TB, o leafOpts) tls.Certificate {
	t.Helper()
	c, err := tls.X509KeyPair(ca.issue(t, o))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// pool is a CertPool holding the CA.
func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

func inline(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}

func tlsCert(certPEM, keyPEM []byte) *tlsv3.TlsCertificate {
	return &tlsv3.TlsCertificate{CertificateChain: inline(certPEM), PrivateKey: inline(keyPEM)}
}

func certSecret(name string, certPEM, keyPEM []byte) *tlsv3.Secret {
	return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: tlsCert(certPEM, keyPEM)}}
}

func validationSecretOf(name string, vc *tlsv3.CertificateValidationContext) *tlsv3.Secret {
	return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_ValidationContext{ValidationContext: vc}}
}

func ads(name string) *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}}
}

func sanMatch(typ tlsv3.SubjectAltNameMatcher_SanType, m *matcherv3.StringMatcher) *tlsv3.SubjectAltNameMatcher {
	return &tlsv3.SubjectAltNameMatcher{SanType: typ, Matcher: m}
}

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

// hsResult is what both ends of a handshake saw.
type hsResult struct {
	server, client       tls.ConnectionState
	serverErr, clientErr error
}

// handshake runs one TLS handshake over a loopback TCP connection. The server writes a
// byte after its handshake so that the client also sees failures the server only detects
// after the client's Finished (a refused client certificate in TLS 1.3).
func handshake(t testing.TB, scfg, ccfg *tls.Config) hsResult {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close() // the server goroutine is done when handshake returns
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	type side struct {
		cs  tls.ConnectionState
		err error
	}
	srvc := make(chan side, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srvc <- side{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		sc := tls.Server(c, scfg)
		if err := sc.HandshakeContext(ctx); err != nil {
			srvc <- side{err: err}
			return
		}
		_, err = sc.Write([]byte{1})
		srvc <- side{cs: sc.ConnectionState(), err: err}
	}()

	var r hsResult
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	cc := tls.Client(c, ccfg)
	if r.clientErr = cc.HandshakeContext(ctx); r.clientErr == nil {
		if _, err := cc.Read(make([]byte, 1)); err != nil {
			r.clientErr = err
		}
		r.client = cc.ConnectionState()
	}
	c.Close()
	s := <-srvc
	r.server, r.serverErr = s.cs, s.err
	return r
}

// wantErr fails unless err is nil when want is "" or its text is exactly want.
func wantErr(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Fatalf("unexpected error: %v", err)
	case want != "" && err == nil:
		t.Fatalf("no error, want %q", want)
	case want != "" && err.Error() != want:
		t.Fatalf("error:\n got %q\nwant %q", err.Error(), want)
	}
}

// x509Opts verifies a chain against the CA, whatever the name.
func x509Opts(ca *testCA) x509.VerifyOptions {
	return x509.VerifyOptions{Roots: ca.pool()}
}

// secret issues a certificate and wraps it in an SDS Secret.
func (ca *testCA) secret(t testing.TB, name string, o leafOpts) *tlsv3.Secret {
	t.Helper()
	certPEM, keyPEM := ca.issue(t, o)
	return certSecret(name, certPEM, keyPEM)
}

// inlineCert issues a certificate as an inline TlsCertificate.
func (ca *testCA) inlineCert(t testing.TB, o leafOpts) *tlsv3.TlsCertificate {
	t.Helper()
	certPEM, keyPEM := ca.issue(t, o)
	return tlsCert(certPEM, keyPEM)
}
