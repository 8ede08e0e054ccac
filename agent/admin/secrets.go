package admin

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// A Secret never appears in /config_dump as it came over SDS: its private key must not leave
// the agent. It is shown by name, with what an operator checks when rotating certificates
// (subject, SANs, expiry of each certificate) and a SHA-256 of the key, which identifies it
// without revealing it.

// jsonSecret is the redacted form of an SDS Secret.
type jsonSecret struct {
	Name string `json:"name"`
	// Type is "tls_certificate" or "validation_context".
	Type string `json:"type"`
	// Certificates are the certificate chain of a tls_certificate, leaf first, or the
	// trusted CAs of a validation_context.
	Certificates []jsonCert `json:"certificates,omitempty"`
	// PrivateKeySHA256 is the hex SHA-256 of the private key's PEM (tls_certificate only).
	PrivateKeySHA256 string `json:"private_key_sha256,omitempty"`
}

type jsonCert struct {
	Subject  string    `json:"subject"`
	Issuer   string    `json:"issuer"`
	DNSNames []string  `json:"dns_names,omitempty"`
	IPs      []string  `json:"ip_addresses,omitempty"`
	NotAfter time.Time `json:"not_after"`
	Serial   string    `json:"serial"`
}

// redactSecret returns the JSON shown for s: never its key.
func redactSecret(s *tlsv3.Secret) ([]byte, error) {
	out := jsonSecret{Name: s.GetName()}
	switch {
	case s.GetTlsCertificate() != nil:
		tc := s.GetTlsCertificate()
		out.Type = "tls_certificate"
		out.Certificates = certSummaries(tc.GetCertificateChain().GetInlineBytes(), tc.GetCertificateChain().GetInlineString())
		key := tc.GetPrivateKey().GetInlineBytes()
		if key == nil {
			key = []byte(tc.GetPrivateKey().GetInlineString())
		}
		if len(key) > 0 {
			sum := sha256.Sum256(key)
			out.PrivateKeySHA256 = hex.EncodeToString(sum[:])
		}
	case s.GetValidationContext() != nil:
		ca := s.GetValidationContext().GetTrustedCa()
		out.Type = "validation_context"
		out.Certificates = certSummaries(ca.GetInlineBytes(), ca.GetInlineString())
	}
	return json.Marshal(out)
}

// certSummaries describes the PEM certificates in b (or s), skipping anything else.
func certSummaries(b []byte, s string) []jsonCert {
	if b == nil {
		b = []byte(s)
	}
	var out []jsonCert
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return out
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			continue
		}
		jc := jsonCert{Subject: c.Subject.String(), Issuer: c.Issuer.String(), DNSNames: c.DNSNames,
			NotAfter: c.NotAfter.UTC(), Serial: c.SerialNumber.Text(16)}
		for _, ip := range c.IPAddresses {
			jc.IPs = append(jc.IPs, ip.String())
		}
		out = append(out, jc)
	}
}
