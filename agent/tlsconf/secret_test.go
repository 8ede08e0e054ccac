package tlsconf

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

func TestValidateSecret(t *testing.T) {
	ca := newCA(t, "ca")
	certPEM, keyPEM := ca.issue(t, leafOpts{dns: []string{"a.example"}})
	_, otherKey := ca.issue(t, leafOpts{dns: []string{"b.example"}})
	keyOnly := &tlsv3.TlsCertificate{CertificateChain: inline(certPEM)}

	tests := []struct {
		name   string
		secret *tlsv3.Secret
		want   string
	}{
		{"certificate", certSecret("web", certPEM, keyPEM), ""},
		{"certificate as inline strings", &tlsv3.Secret{Name: "web", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: string(certPEM)}},
			PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: string(keyPEM)}},
		}}}, ""},
		{"validation context", validationSecretOf("ca", &tlsv3.CertificateValidationContext{
			TrustedCa:                 inline(ca.pem),
			MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{sanMatch(tlsv3.SubjectAltNameMatcher_DNS, exact("a.example"))},
		}), ""},
		{"no name", certSecret("", certPEM, keyPEM), "secret: name is required"},
		{"no type", &tlsv3.Secret{Name: "web"}, `secret "web": one of tls_certificate or validation_context is required`},
		{"generic secret", &tlsv3.Secret{Name: "web", Type: &tlsv3.Secret_GenericSecret{GenericSecret: &tlsv3.GenericSecret{}}},
			`secret "web": generic_secret is not supported by flotilla-agent`},
		{"bad certificate PEM", certSecret("web", []byte("-----BEGIN CERTIFICATE-----\nnot base64\n"), keyPEM),
			`secret "web": tls_certificate.certificate_chain: no PEM certificate found`},
		{"garbage certificate", certSecret("web", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), keyPEM),
			`secret "web": tls_certificate.certificate_chain: certificate 1: x509: malformed certificate`},
		{"key in the chain", certSecret("web", keyPEM, keyPEM),
			`secret "web": tls_certificate.certificate_chain: PEM block 1 is "PRIVATE KEY", want "CERTIFICATE"`},
		{"no key PEM", certSecret("web", certPEM, []byte("secret")),
			`secret "web": tls_certificate.private_key: no PEM private key found`},
		{"missing key", &tlsv3.Secret{Name: "web", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: keyOnly}},
			`secret "web": tls_certificate.private_key is required`},
		{"key mismatch", certSecret("web", certPEM, otherKey),
			`secret "web": tls_certificate: tls: private key does not match public key`},
		{"encrypted key", certSecret("web", certPEM, []byte("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n")),
			`secret "web": tls_certificate.private_key: encrypted private keys are not supported by flotilla-agent`},
		{"legacy encrypted key", certSecret("web", certPEM, []byte("-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00000000000000000000000000000000\n\nAAAA\n-----END EC PRIVATE KEY-----\n")),
			`secret "web": tls_certificate.private_key: encrypted private keys are not supported by flotilla-agent`},
		{"filename", &tlsv3.Secret{Name: "web", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: "/etc/ssl/web.pem"}},
			PrivateKey:       inline(keyPEM),
		}}}, `secret "web": tls_certificate.certificate_chain.filename is not supported by flotilla-agent: the agent does not read its own disk for the control plane; send inline_bytes or inline_string`},
		{"environment variable", &tlsv3.Secret{Name: "web", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inline(certPEM),
			PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_EnvironmentVariable{EnvironmentVariable: "KEY"}},
		}}}, `secret "web": tls_certificate.private_key.environment_variable is not supported by flotilla-agent: send inline_bytes or inline_string`},
		{"password", &tlsv3.Secret{Name: "web", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inline(certPEM), PrivateKey: inline(keyPEM), Password: inline([]byte("x")),
		}}}, `secret "web": tls_certificate.password is not supported by flotilla-agent`},
		{"crl", validationSecretOf("ca", &tlsv3.CertificateValidationContext{TrustedCa: inline(ca.pem), Crl: inline([]byte("x"))}),
			`secret "ca": validation_context.crl is not supported by flotilla-agent yet (no revocation lists)`},
		{"bad trusted CA", validationSecretOf("ca", &tlsv3.CertificateValidationContext{TrustedCa: inline([]byte("nope"))}),
			`secret "ca": validation_context.trusted_ca: no PEM certificate found`},
		{"SAN matcher without a CA", validationSecretOf("ca", &tlsv3.CertificateValidationContext{
			MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{sanMatch(tlsv3.SubjectAltNameMatcher_DNS, exact("a.example"))},
		}), `secret "ca": validation_context: subject alt name matchers need trusted_ca or system_root_certs (a SAN on an untrusted certificate proves nothing)`},
		{"OTHER_NAME matcher", validationSecretOf("ca", &tlsv3.CertificateValidationContext{
			TrustedCa:                 inline(ca.pem),
			MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{sanMatch(tlsv3.SubjectAltNameMatcher_OTHER_NAME, exact("x"))},
		}), `secret "ca": validation_context.match_typed_subject_alt_names[0].san_type: OTHER_NAME is not supported by flotilla-agent (DNS, URI, IP_ADDRESS or EMAIL)`},
		{"bad regex", validationSecretOf("ca", &tlsv3.CertificateValidationContext{
			TrustedCa: inline(ca.pem),
			MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{sanMatch(tlsv3.SubjectAltNameMatcher_URI,
				&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "("}}})},
		}), "secret \"ca\": validation_context.match_typed_subject_alt_names[0].matcher.safe_regex.regex: error parsing regexp: missing closing ): `^(?:()$`"},
		{"bad hash", validationSecretOf("ca", &tlsv3.CertificateValidationContext{VerifyCertificateHash: []string{"abcd"}}),
			`secret "ca": validation_context.verify_certificate_hash[0]: want the hex SHA-256 of a certificate (64 hex digits, colons allowed)`},
		{"hash with colons", validationSecretOf("ca", &tlsv3.CertificateValidationContext{VerifyCertificateHash: []string{colonHex(sha256.Sum256(ca.cert.Raw))}}), ""},
		{"allow expired", validationSecretOf("ca", &tlsv3.CertificateValidationContext{TrustedCa: inline(ca.pem), AllowExpiredCertificate: true}),
			`secret "ca": validation_context.allow_expired_certificate is not supported by flotilla-agent`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateSecret(tt.secret)
			wantErr(t, err, tt.want)
			if err != nil && (strings.Contains(err.Error(), string(keyPEM)) || strings.Contains(err.Error(), "PRIVATE KEY-----")) {
				t.Fatalf("error quotes key material: %v", err)
			}
		})
	}
}

func colonHex(sum [32]byte) string {
	h := strings.ToUpper(hex.EncodeToString(sum[:]))
	var parts []string
	for i := 0; i < len(h); i += 2 {
		parts = append(parts, h[i:i+2])
	}
	return strings.Join(parts, ":")
}

func TestSecretNames(t *testing.T) {
	common := &tlsv3.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{ads("web-b"), ads("web-a"), ads("web-b")},
		ValidationContextType:          &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{ValidationContextSdsSecretConfig: ads("client-ca")},
	}
	for _, tc := range []struct {
		name string
		got  []string
		want string
	}{
		{"downstream", SecretNames(&tlsv3.DownstreamTlsContext{CommonTlsContext: common}), "client-ca,web-a,web-b"},
		{"upstream", SecretNames(&tlsv3.UpstreamTlsContext{CommonTlsContext: common}), "client-ca,web-a,web-b"},
		{"common", SecretNames(common), "client-ca,web-a,web-b"},
		{"inline only", SecretNames(&tlsv3.UpstreamTlsContext{Sni: "x"}), ""},
		{"nil", SecretNames(nil), ""},
		{"other message", SecretNames(&tlsv3.Secret{Name: "x"}), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := strings.Join(tc.got, ","); got != tc.want {
				t.Fatalf("SecretNames = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestMissingSecret(t *testing.T) {
	ctx := &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{ads("web")},
	}}
	_, err := NewServer(ctx, SecretMap{})
	if !errors.Is(err, ErrMissingSecret) {
		t.Fatalf("err = %v, want ErrMissingSecret", err)
	}
	wantErr(t, err, `common_tls_context.tls_certificate_sds_secret_configs[0]: secret "web": not received over SDS`)
	_, err = NewClient(&tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		ValidationContextType: &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{ValidationContextSdsSecretConfig: ads("ca")},
	}}, nil)
	if !errors.Is(err, ErrMissingSecret) {
		t.Fatalf("err = %v, want ErrMissingSecret", err)
	}
}
