// Package certtest makes X.509 certificates and keys for tests and demos: a
// CA, and server or client certificates it signs, as PEM. Keys are ECDSA
// P-256, which is quick to generate. Nothing here is fit for production.
package certtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// Pair is a certificate with its private key.
type Pair struct {
	// Cert is the parsed certificate.
	Cert *x509.Certificate
	// Key is its private key.
	Key *ecdsa.PrivateKey
	// CertPEM is Cert as a PEM CERTIFICATE block.
	CertPEM []byte
	// KeyPEM is Key as a PEM PRIVATE KEY (PKCS#8) block.
	KeyPEM []byte
}

// Options describe a certificate to make. The zero value is a server
// certificate named "test", valid from an hour ago for a day.
type Options struct {
	// CommonName is the subject's CN. Default "test".
	CommonName string
	// DNSNames are the DNS subject alternative names.
	DNSNames []string
	// NotBefore and NotAfter bound the validity; zero values mean an hour
	// ago and a day from now.
	NotBefore, NotAfter time.Time
	// Client makes a client certificate (extended key usage clientAuth)
	// instead of a server one.
	Client bool
	// CA makes a CA certificate.
	CA bool
}

// NewCA returns a self-signed CA.
func NewCA(o Options) (*Pair, error) {
	o.CA = true
	return newPair(o, nil)
}

// Issue returns a certificate signed by ca.
func (ca *Pair) Issue(o Options) (*Pair, error) { return newPair(o, ca) }

// WriteFiles writes p's certificate to dir/name.pem and its key to
// dir/name.key, and returns their paths.
func (p *Pair) WriteFiles(dir, name string) (certFile, keyFile string, err error) {
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, p.CertPEM, 0o644); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(keyFile, p.KeyPEM, 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

func newPair(o Options, parent *Pair) (*Pair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	if o.CommonName == "" {
		o.CommonName = "test"
	}
	if o.NotBefore.IsZero() {
		o.NotBefore = time.Now().Add(-time.Hour)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = time.Now().Add(24 * time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: o.CommonName},
		DNSNames:     o.DNSNames,
		NotBefore:    o.NotBefore,
		NotAfter:     o.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	switch {
	case o.CA:
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	case o.Client:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	default:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	signer, issuer := key, tmpl
	if parent != nil {
		signer, issuer = parent.Key, parent.Cert
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, &key.PublicKey, signer)
	if err != nil {
		return nil, fmt.Errorf("create certificate %q: %w", o.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &Pair{
		Cert:    cert,
		Key:     key,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk}),
	}, nil
}
