package admin

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
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

// redactInlineKeys returns m, or a copy of it in which every private key of a
// TlsCertificate — inline in a listener's or cluster's TLS context, possibly
// inside Any typed configs — is replaced by its SHA-256. Flotilla's control
// plane only sends keys as SDS secrets, but another xDS server may inline them.
func redactInlineKeys(m proto.Message) (proto.Message, error) {
	c := proto.Clone(m)
	changed, err := redactMessage(c.ProtoReflect())
	if err != nil || !changed {
		return m, err
	}
	return c, nil
}

func redactMessage(rm protoreflect.Message) (bool, error) {
	if tc, ok := rm.Interface().(*tlsv3.TlsCertificate); ok {
		key := tc.GetPrivateKey()
		if key == nil {
			return false, nil
		}
		sum := sha256.Sum256([]byte(key.GetInlineString() + string(key.GetInlineBytes())))
		tc.PrivateKey = &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{
			InlineString: fmt.Sprintf("<private key sha256:%x>", sum)}}
		return true, nil
	}
	if a, ok := rm.Interface().(*anypb.Any); ok {
		inner, err := a.UnmarshalNew()
		if err != nil {
			return false, nil // not a type this build knows: nothing of ours inside
		}
		changed, err := redactMessage(inner.ProtoReflect())
		if err != nil || !changed {
			return false, err
		}
		return true, a.MarshalFrom(inner)
	}
	changed := false
	var err error
	rm.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Message() == nil {
			return true
		}
		visit := func(m protoreflect.Message) bool {
			c, e := redactMessage(m)
			changed = changed || c
			err = e
			return e == nil
		}
		switch {
		case fd.IsList():
			l := v.List()
			for i := range l.Len() {
				if !visit(l.Get(i).Message()) {
					return false
				}
			}
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool { return visit(mv.Message()) })
			}
		default:
			return visit(v.Message())
		}
		return err == nil
	})
	return changed, err
}
