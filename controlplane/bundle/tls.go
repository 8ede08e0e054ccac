package bundle

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
	configv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/config/v1"
)

// TLS versions Listener.tls.min_version accepts.
const (
	// TLSVersion12 is min_version for TLS 1.2, the default.
	TLSVersion12 = "1.2"
	// TLSVersion13 is min_version for TLS 1.3.
	TLSVersion13 = "1.3"
)

// redactedPrefix starts what Redact puts in place of a private key's PEM.
const redactedPrefix = "<private key sha256:"

// PemRef is one PEM a bundle holds: where it is and what it is for.
type PemRef struct {
	// Field is its path in the file, like listeners[0].tls.certificates[1].key.
	Field string
	// Source is the PEM itself, as held by the bundle (not a copy).
	Source *configv1.PemSource
	// PrivateKey is true for a private key, false for certificates.
	PrivateKey bool
}

// PemRefs lists every PEM b holds (set or not), in file order: each
// listener's certificates, keys and client_ca, then each cluster's ca and
// client certificate.
func PemRefs(b *configv1.Bundle) []PemRef {
	var out []PemRef
	add := func(field string, src *configv1.PemSource, key bool) {
		if src != nil {
			out = append(out, PemRef{Field: field, Source: src, PrivateKey: key})
		}
	}
	pair := func(field string, c *configv1.TlsCertificate) {
		add(field+".cert", c.GetCert(), false)
		add(field+".key", c.GetKey(), true)
	}
	for i, l := range b.GetListeners() {
		f := fmt.Sprintf("listeners[%d].tls", i)
		for j, c := range l.GetTls().GetCertificates() {
			pair(fmt.Sprintf("%s.certificates[%d]", f, j), c)
		}
		add(f+".client_ca", l.GetTls().GetClientCa(), false)
	}
	for i, c := range b.GetClusters() {
		f := fmt.Sprintf("clusters[%d].tls", i)
		add(f+".ca", c.GetTls().GetCa(), false)
		if cc := c.GetTls().GetClientCertificate(); cc != nil {
			pair(f+".client_certificate", cc)
		}
	}
	return out
}

// resolvePEM reads the PEM files a parsed file names, relative to the
// directory of the file, into their pem fields. Sources that already hold
// PEM are left alone.
func resolvePEM(f *adminv1.ConfigFile) error {
	dir := filepath.Dir(f.GetPath())
	for _, ref := range PemRefs(f.GetBundle()) {
		src := ref.Source
		if src.GetPem() != "" || src.GetFile() == "" {
			continue
		}
		name := src.GetFile()
		if !filepath.IsAbs(name) {
			name = filepath.Join(dir, name)
		}
		data, err := os.ReadFile(name)
		if err != nil {
			return &FieldError{File: f.GetPath(), Field: ref.Field, Reason: fmt.Sprintf("cannot read PEM file %s: %v", src.GetFile(), unwrapPath(err))}
		}
		src.Pem = string(data)
	}
	return nil
}

// unwrapPath drops the path os errors repeat, since the message names it.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// RedactedKey is what Redact shows instead of a private key's PEM:
// `<private key sha256:…>` with the SHA-256 of the PEM in hex. A value that is
// already redacted is returned as is.
func RedactedKey(pemData string) string {
	if strings.HasPrefix(pemData, redactedPrefix) {
		return pemData
	}
	sum := sha256.Sum256([]byte(pemData))
	return redactedPrefix + hex.EncodeToString(sum[:]) + ">"
}

// Redact returns copies of files with the PEM of every private key replaced
// by RedactedKey: what may be shown, logged or compared outside the control
// plane's store and its xDS stream to agents. Redacting twice changes
// nothing, so a redacted version from the server and a local file redacted
// here compare equal when their keys are.
func Redact(files []*adminv1.ConfigFile) []*adminv1.ConfigFile {
	out := make([]*adminv1.ConfigFile, len(files))
	for i, f := range files {
		c := proto.CloneOf(f)
		for _, ref := range PemRefs(c.GetBundle()) {
			if ref.PrivateKey && ref.Source.GetPem() != "" {
				ref.Source.Pem = RedactedKey(ref.Source.GetPem())
			}
		}
		out[i] = c
	}
	return out
}

// tlsListener validates a listener's tls block.
func (v *validator) tlsListener(at site, l *configv1.Listener) {
	t := l.GetTls()
	if t == nil {
		return
	}
	if len(t.GetCertificates()) == 0 {
		v.add(at, "tls.certificates", "required: at least one certificate with its key ({cert: server.pem, key: server.key})")
	}
	for i, c := range t.GetCertificates() {
		v.certificate(at, fmt.Sprintf("tls.certificates[%d]", i), c)
	}
	if t.GetClientCa() != nil {
		v.caCerts(at, "tls.client_ca", t.GetClientCa())
	}
	for i, p := range t.GetAlpn() {
		if p == "" || len(p) > 255 {
			v.add(at, fmt.Sprintf("tls.alpn[%d]", i), "an ALPN protocol is 1 to 255 bytes, such as \"h2\" or \"postgresql\"")
		}
	}
	switch mv := t.GetMinVersion(); mv {
	case "", TLSVersion12, TLSVersion13:
	default:
		v.add(at, "tls.min_version", "%q is not a TLS version: use %q (the default) or %q", mv, TLSVersion12, TLSVersion13)
	}
}

// tlsCluster validates a cluster's tls block.
func (v *validator) tlsCluster(at site, c *configv1.Cluster) {
	t := c.GetTls()
	if t == nil {
		return
	}
	if t.GetSni() != "" && t.GetPassClientSni() {
		v.add(at, "tls.pass_client_sni", "cannot be combined with sni: send a fixed sni or the client's, not both")
	}
	if t.GetSni() != "" {
		v.dnsName(at, "tls.sni", t.GetSni())
	}
	if t.GetVerifyName() != "" {
		v.dnsName(at, "tls.verify_name", t.GetVerifyName())
	}
	switch {
	case t.GetCa() != nil && t.GetInsecureSkipVerify():
		v.add(at, "tls.insecure_skip_verify", "cannot be combined with ca: either verify the endpoints against ca or do not verify them")
	case t.GetCa() == nil && !t.GetInsecureSkipVerify():
		v.add(at, "tls.ca", "required: the CA certificates to verify the endpoints against (or insecure_skip_verify: true to not verify them)")
	case t.GetCa() != nil:
		v.caCerts(at, "tls.ca", t.GetCa())
	case t.GetVerifyName() != "":
		v.add(at, "tls.verify_name", "has no effect with insecure_skip_verify: nothing is verified")
	}
	if cc := t.GetClientCertificate(); cc != nil {
		v.certificate(at, "tls.client_certificate", cc)
	}
}

// dnsName checks a name sent as SNI or verified against a certificate: a
// DNS name, not a wildcard.
func (v *validator) dnsName(at site, field, name string) {
	if strings.HasPrefix(name, "*.") {
		v.add(at, field, "%q is a wildcard: give the exact DNS name", name)
		return
	}
	if _, err := ServerName(name); err != nil {
		v.add(at, field, "%v", err)
	}
}

// pemName names a PEM's origin in messages: its file, or "inline PEM".
func pemName(src *configv1.PemSource) string {
	if src.GetFile() != "" {
		return src.GetFile()
	}
	return "inline PEM"
}

// pemData returns a source's PEM, or reports why there is none.
func (v *validator) pemData(at site, field string, src *configv1.PemSource) ([]byte, bool) {
	switch {
	case src.GetPem() != "":
		return []byte(src.GetPem()), true
	case src.GetFile() != "":
		v.add(at, field, "PEM file %s was not read: load the config with flotctl, which reads it", src.GetFile())
	default:
		v.add(at, field, "required: the path of a PEM file")
	}
	return nil, false
}

// certificate checks a certificate with its key: both parse, the key is the
// leaf's, and the leaf has not expired.
func (v *validator) certificate(at site, field string, c *configv1.TlsCertificate) {
	certPEM, okCert := v.pemData(at, field+".cert", c.GetCert())
	keyPEM, okKey := v.pemData(at, field+".key", c.GetKey())
	var leaf *x509.Certificate
	if okCert {
		certs, err := parseCerts(certPEM)
		if err != nil {
			v.add(at, field+".cert", "%s: %v", pemName(c.GetCert()), err)
			okCert = false
		} else {
			leaf = certs[0]
			v.notExpired(at, field+".cert", c.GetCert(), leaf)
		}
	}
	if !okKey {
		return
	}
	if err := checkKeyPEM(keyPEM); err != nil {
		v.add(at, field+".key", "%s: %v", pemName(c.GetKey()), err)
		return
	}
	if !okCert {
		return
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		reason := err.Error() // crypto/tls never quotes key material
		if strings.Contains(reason, "does not match") {
			reason = fmt.Sprintf("does not match the certificate in %s", pemName(c.GetCert()))
		}
		v.add(at, field+".key", "%s: %s", pemName(c.GetKey()), strings.TrimPrefix(reason, "tls: "))
	}
}

// caCerts checks CA certificates: they parse, are CA certificates, and have
// not expired.
func (v *validator) caCerts(at site, field string, src *configv1.PemSource) {
	data, ok := v.pemData(at, field, src)
	if !ok {
		return
	}
	certs, err := parseCerts(data)
	if err != nil {
		v.add(at, field, "%s: %v", pemName(src), err)
		return
	}
	for i, c := range certs {
		if !c.BasicConstraintsValid || !c.IsCA {
			v.add(at, field, "%s: certificate %d (%q) is not a CA certificate (basic constraints CA:TRUE)", pemName(src), i+1, c.Subject.String())
			continue
		}
		v.notExpired(at, field, src, c)
	}
}

func (v *validator) notExpired(at site, field string, src *configv1.PemSource, c *x509.Certificate) {
	if now := time.Now(); now.After(c.NotAfter) {
		v.add(at, field, "%s: certificate %q expired at %s", pemName(src), c.Subject.String(), c.NotAfter.UTC().Format(time.RFC3339))
	}
}

// parseCerts parses PEM holding only CERTIFICATE blocks, at least one.
func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for n := 1; ; n++ {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %d is a %q, not a CERTIFICATE", n, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", n, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return out, nil
}

// checkKeyPEM checks that data holds one PEM private key that parses,
// without ever quoting it.
func checkKeyPEM(data []byte) error {
	var block *pem.Block
	for {
		block, data = pem.Decode(data)
		if block == nil {
			return errors.New("no PEM private key found")
		}
		if strings.HasSuffix(block.Type, "PRIVATE KEY") {
			break
		}
	}
	if _, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		return nil
	}
	if _, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return nil
	}
	if _, err := x509.ParseECPrivateKey(block.Bytes); err == nil {
		return nil
	}
	return fmt.Errorf("the %s block does not parse as a PKCS#8, PKCS#1 or EC private key", block.Type)
}
