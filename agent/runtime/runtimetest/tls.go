package runtimetest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"net"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

var serial atomic.Int64

// CA is a certificate authority generated for a test (ECDSA P-256, valid one hour either
// side of now).
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// PEM is the CA certificate in PEM, for trusted_ca.
	PEM []byte
}

// NewCA generates a CA named cn.
func NewCA(cn string) *CA {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
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
		panic(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		panic(err)
	}
	return &CA{Cert: cert, Key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// Pool returns a pool holding only the CA, for Go peers in tests.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Issue returns the PEM certificate and PEM PKCS#8 key of a new leaf signed by the CA, for
// the DNS names (and IP addresses) in names, with Subject CN cn. client makes it a client
// certificate (clientAuth), else a server certificate (serverAuth).
func (ca *CA) Issue(cn string, client bool, names ...string) (certPEM, keyPEM []byte) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	eku := x509.ExtKeyUsageServerAuth
	if client {
		eku = x509.ExtKeyUsageClientAuth
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{eku},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		panic(err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk})
}

// KeyPair is Issue as a tls.Certificate, for Go peers in tests.
func (ca *CA) KeyPair(cn string, client bool, names ...string) tls.Certificate {
	c, k := ca.Issue(cn, client, names...)
	kp, err := tls.X509KeyPair(c, k)
	if err != nil {
		panic(err)
	}
	return kp
}

// SecretName is the name the control plane gives a certificate's SDS secret:
// "cert-" and the first 16 hex digits of sha256(certificate PEM ‖ key PEM).
func SecretName(certPEM, keyPEM []byte) string {
	h := sha256.New()
	h.Write(certPEM)
	h.Write(keyPEM)
	return "cert-" + hex.EncodeToString(h.Sum(nil))[:16]
}

// CertSecret returns the SDS secret of a certificate and its key, named SecretName, as the
// control plane sends it.
func CertSecret(certPEM, keyPEM []byte) *tlsv3.Secret {
	return &tlsv3.Secret{
		Name: SecretName(certPEM, keyPEM),
		Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: certPEM}},
			PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: keyPEM}},
		}},
	}
}

// sdsConfig refers to a secret delivered over ADS.
func sdsConfig(name string) *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}}
}

// DownstreamTLSContext returns the DownstreamTlsContext the control plane emits for a
// listener with tls: the certificates as SDS secrets by name, and with clientCA (PEM, may be
// nil) a validation context and require_client_certificate (mTLS).
func DownstreamTLSContext(clientCA []byte, secrets ...string) *tlsv3.DownstreamTlsContext {
	cc := &tlsv3.CommonTlsContext{
		TlsParams: &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2},
	}
	for _, s := range secrets {
		cc.TlsCertificateSdsSecretConfigs = append(cc.TlsCertificateSdsSecretConfigs, sdsConfig(s))
	}
	d := &tlsv3.DownstreamTlsContext{CommonTlsContext: cc}
	if clientCA != nil {
		cc.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: clientCA}},
		}}
		d.RequireClientCertificate = wrapperspb.Bool(true)
	}
	return d
}

// UpstreamTLSContext returns the UpstreamTlsContext the control plane emits for a cluster
// with tls: sni ("" passes the client's SNI through), the CA that verifies the upstream and
// the DNS name its certificate must carry (verifyName; "" with an sni means the sni, "" with
// no sni means auto_sni_san_validation), and optionally a client certificate secret.
func UpstreamTLSContext(sni string, ca []byte, verifyName, clientSecret string) *tlsv3.UpstreamTlsContext {
	cc := &tlsv3.CommonTlsContext{
		TlsParams: &tlsv3.TlsParameters{TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3},
	}
	u := &tlsv3.UpstreamTlsContext{Sni: sni, CommonTlsContext: cc}
	if verifyName == "" {
		verifyName = sni
	}
	if ca != nil {
		vc := &tlsv3.CertificateValidationContext{
			TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: ca}},
		}
		if verifyName != "" {
			vc.MatchTypedSubjectAltNames = []*tlsv3.SubjectAltNameMatcher{{
				SanType: tlsv3.SubjectAltNameMatcher_DNS,
				Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: verifyName}},
			}}
		} else {
			u.AutoSniSanValidation = true
		}
		cc.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: vc}
	}
	if clientSecret != "" {
		cc.TlsCertificateSdsSecretConfigs = []*tlsv3.SdsSecretConfig{sdsConfig(clientSecret)}
	}
	return u
}

// TLSSocket returns the envoy.transport_sockets.tls transport socket carrying ctx (a
// DownstreamTlsContext or an UpstreamTlsContext).
func TLSSocket(ctx proto.Message) *corev3.TransportSocket {
	return &corev3.TransportSocket{
		Name:       "envoy.transport_sockets.tls",
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(ctx)},
	}
}

// UpstreamProxyProtocolTLS returns upstream_proxy_protocol (version 1 or 2) wrapping the tls
// transport socket with u: the PROXY header goes first, in the clear, then the handshake.
func UpstreamProxyProtocolTLS(version int, u *tlsv3.UpstreamTlsContext) *corev3.TransportSocket {
	return upstreamProxyProtocol(version, TLSSocket(u))
}
