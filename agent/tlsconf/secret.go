package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/flotilla-proxy/flotilla/agent/fieldcheck"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// TransportSocketName is the name of Envoy's TLS transport socket, whose typed_config is
// a DownstreamTlsContext on a listener's filter chain and an UpstreamTlsContext on a
// cluster.
const TransportSocketName = "envoy.transport_sockets.tls"

// Secrets is the agent's current set of SDS Secrets, by name. Implementations must be
// safe for concurrent reads; NewServer and NewClient read it only while they run.
type Secrets interface {
	// Secret returns the secret with this name, or false when the agent has not received it.
	Secret(name string) (*tlsv3.Secret, bool)
}

// SecretMap is a Secrets backed by a map from name to Secret.
type SecretMap map[string]*tlsv3.Secret

var _ Secrets = SecretMap(nil)

// Secret returns m[name].
func (m SecretMap) Secret(name string) (*tlsv3.Secret, bool) {
	s, ok := m[name]
	return s, ok
}

// ErrMissingSecret is wrapped by the errors of NewServer and NewClient when a context
// names an SDS secret the Secrets do not hold. Envoy keeps such a listener or cluster
// warming until the secret arrives; the runtime can tell this case apart with errors.Is.
var ErrMissingSecret = errors.New("not received over SDS")

// ValidateSecret checks a Secret on receipt, before any context uses it: a tls_certificate
// must be a PEM certificate chain with the PEM private key of its leaf, a
// validation_context must parse (trusted CAs, SAN matchers, hashes). Errors name the
// secret and the field, never the key material.
func ValidateSecret(s *tlsv3.Secret) error {
	if s == nil {
		return errors.New("secret is nil")
	}
	if s.GetName() == "" {
		return errors.New("secret: name is required")
	}
	if err := validateSecret(s); err != nil {
		return fmt.Errorf("secret %q: %w", s.GetName(), err)
	}
	// Envoy's own constraints (protoc-gen-validate), behind the precise checks above.
	if err := s.Validate(); err != nil {
		return fmt.Errorf("secret %q: %w", s.GetName(), err)
	}
	return nil
}

func validateSecret(s *tlsv3.Secret) error {
	if err := fieldcheck.Only(s, "", "name", "tls_certificate", "validation_context"); err != nil {
		return err
	}
	switch t := s.GetType().(type) {
	case *tlsv3.Secret_TlsCertificate:
		_, err := parseCertificate(t.TlsCertificate, "tls_certificate")
		return err
	case *tlsv3.Secret_ValidationContext:
		// Whether system_root_certs is allowed depends on the side that uses the secret:
		// check it there, accept it here.
		_, err := parseValidation(t.ValidationContext, "validation_context", true)
		return err
	default:
		return errors.New("one of tls_certificate or validation_context is required")
	}
}

// certificateSecret looks up the SDS secret named by sc and parses its tls_certificate.
func certificateSecret(sc *tlsv3.SdsSecretConfig, s Secrets, path string) (*tls.Certificate, error) {
	sec, err := lookupSecret(sc, s, path)
	if err != nil {
		return nil, err
	}
	tc := sec.GetTlsCertificate()
	if tc == nil {
		return nil, fmt.Errorf("%s: secret %q holds no tls_certificate", path, sec.GetName())
	}
	c, err := parseCertificate(tc, "tls_certificate")
	if err != nil {
		return nil, fmt.Errorf("%s: secret %q: %w", path, sec.GetName(), err)
	}
	return c, nil
}

// validationSecret looks up the SDS secret named by sc and parses its validation_context.
func validationSecret(sc *tlsv3.SdsSecretConfig, s Secrets, path string, upstream bool) (*validator, error) {
	sec, err := lookupSecret(sc, s, path)
	if err != nil {
		return nil, err
	}
	vc := sec.GetValidationContext()
	if vc == nil {
		return nil, fmt.Errorf("%s: secret %q holds no validation_context", path, sec.GetName())
	}
	v, err := parseValidation(vc, "validation_context", upstream)
	if err != nil {
		return nil, fmt.Errorf("%s: secret %q: %w", path, sec.GetName(), err)
	}
	return v, nil
}

// lookupSecret checks an SdsSecretConfig and finds its secret.
func lookupSecret(sc *tlsv3.SdsSecretConfig, s Secrets, path string) (*tlsv3.Secret, error) {
	if err := checkSdsConfig(sc, path); err != nil {
		return nil, err
	}
	var sec *tlsv3.Secret
	ok := false
	if s != nil {
		sec, ok = s.Secret(sc.GetName())
	}
	if !ok || sec == nil {
		return nil, fmt.Errorf("%s: secret %q: %w", path, sc.GetName(), ErrMissingSecret)
	}
	return sec, nil
}

// checkSdsConfig accepts a named secret fetched over ADS (ads{} or self{}), the only way
// the agent receives secrets.
func checkSdsConfig(sc *tlsv3.SdsSecretConfig, path string) error {
	if err := fieldcheck.Only(sc, path, "name", "sds_config"); err != nil {
		return err
	}
	if sc.GetName() == "" {
		return fmt.Errorf("%s.name is required", path)
	}
	cs := sc.GetSdsConfig()
	if cs == nil {
		return fmt.Errorf("%s.sds_config is required: flotilla-agent has no static bootstrap secrets; use ads: {}", path)
	}
	p := path + ".sds_config"
	if err := fieldcheck.Only(cs, p, "ads", "self", "initial_fetch_timeout", "resource_api_version"); err != nil {
		return err
	}
	if cs.GetAds() == nil && cs.GetSelf() == nil {
		return fmt.Errorf("%s: one of ads or self is required (flotilla-agent fetches secrets over ADS)", p)
	}
	if cs.GetResourceApiVersion() == corev3.ApiVersion_V2 {
		return fmt.Errorf("%s.resource_api_version: V2 is not supported by flotilla-agent (V3)", p)
	}
	return nil
}

// parseCertificate turns a TlsCertificate with inline PEM data into a tls.Certificate with
// its Leaf parsed.
func parseCertificate(tc *tlsv3.TlsCertificate, path string) (*tls.Certificate, error) {
	if err := fieldcheck.Only(tc, path, "certificate_chain", "private_key", "ocsp_staple", "signed_certificate_timestamp"); err != nil {
		return nil, err
	}
	chainPEM, err := dataSource(tc.GetCertificateChain(), path+".certificate_chain")
	if err != nil {
		return nil, err
	}
	keyPEM, err := dataSource(tc.GetPrivateKey(), path+".private_key")
	if err != nil {
		return nil, err
	}
	if _, err := parseCertsPEM(chainPEM, path+".certificate_chain"); err != nil {
		return nil, err
	}
	if err := checkKeyPEM(keyPEM, path+".private_key"); err != nil {
		return nil, err
	}
	c, err := tls.X509KeyPair(chainPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if tc.GetOcspStaple() != nil {
		if c.OCSPStaple, err = dataSource(tc.GetOcspStaple(), path+".ocsp_staple"); err != nil {
			return nil, err
		}
	}
	for i, ds := range tc.GetSignedCertificateTimestamp() {
		sct, err := dataSource(ds, fmt.Sprintf("%s.signed_certificate_timestamp[%d]", path, i))
		if err != nil {
			return nil, err
		}
		c.SignedCertificateTimestamps = append(c.SignedCertificateTimestamps, sct)
	}
	return &c, nil
}

// parseCertsPEM parses every block of a PEM bundle, which must hold only certificates
// and at least one.
func parseCertsPEM(data []byte, path string) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%s: PEM block %d is %q, want \"CERTIFICATE\"", path, len(certs)+1, b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: certificate %d: %w", path, len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s: no PEM certificate found", path)
	}
	return certs, nil
}

// checkKeyPEM gives a precise error for the usual private key mistakes before
// tls.X509KeyPair gives a vague one. It never quotes the key.
func checkKeyPEM(data []byte, path string) error {
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return fmt.Errorf("%s: no PEM private key found", path)
		}
		switch b.Type {
		case "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY":
			if _, legacy := b.Headers["Proc-Type"]; legacy { // RFC 1423 encryption
				return fmt.Errorf("%s: encrypted private keys are not supported by flotilla-agent", path)
			}
			return nil
		case "ENCRYPTED PRIVATE KEY":
			return fmt.Errorf("%s: encrypted private keys are not supported by flotilla-agent", path)
		}
	}
}

// dataSource returns the bytes of an inline DataSource. The agent never reads its own
// disk or environment on behalf of the control plane.
func dataSource(ds *corev3.DataSource, path string) ([]byte, error) {
	if ds == nil {
		return nil, fmt.Errorf("%s is required", path)
	}
	switch s := ds.GetSpecifier().(type) {
	case *corev3.DataSource_InlineBytes:
		if err := fieldcheck.Only(ds, path, "inline_bytes"); err != nil {
			return nil, err
		}
		return s.InlineBytes, nil
	case *corev3.DataSource_InlineString:
		if err := fieldcheck.Only(ds, path, "inline_string"); err != nil {
			return nil, err
		}
		return []byte(s.InlineString), nil
	case *corev3.DataSource_Filename:
		return nil, fmt.Errorf("%s.filename is not supported by flotilla-agent: the agent does not read its own disk for the control plane; send inline_bytes or inline_string", path)
	case *corev3.DataSource_EnvironmentVariable:
		return nil, fmt.Errorf("%s.environment_variable is not supported by flotilla-agent: send inline_bytes or inline_string", path)
	default:
		if err := fieldcheck.Only(ds, path); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%s: one of inline_bytes or inline_string is required", path)
	}
}
