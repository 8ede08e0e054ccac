package tlsconf

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"strings"
	"sync"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// upstream is a Go TLS server standing in for a backend; it records the SNI it was sent.
type upstream struct {
	config *tls.Config
	mu     sync.Mutex
	sni    []string
}

func newUpstream(cert tls.Certificate) *upstream {
	u := &upstream{}
	u.config = &tls.Config{
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{"h2", "http/1.1"},
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			u.mu.Lock()
			u.sni = append(u.sni, hello.ServerName)
			u.mu.Unlock()
			return nil, nil
		},
	}
	return u
}

func (u *upstream) lastSNI() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.sni) == 0 {
		return "<no handshake>"
	}
	return u.sni[len(u.sni)-1]
}

func mustClient(t testing.TB, u *tlsv3.UpstreamTlsContext, s Secrets) *Client {
	t.Helper()
	c, err := NewClient(u, s)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func withValidation(vc *tlsv3.CertificateValidationContext) *tlsv3.CommonTlsContext {
	return &tlsv3.CommonTlsContext{ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: vc}}
}

func TestClientVerification(t *testing.T) {
	ca := newCA(t, "upstream ca")
	otherCA := newCA(t, "other ca")
	cert := ca.keyPair(t, leafOpts{dns: []string{"up.example"}, ips: []string{"127.0.0.1"}, uris: []string{"spiffe://flotilla/pacs"}})
	up := newUpstream(cert)
	leafHash := sha256.Sum256(cert.Leaf.Raw)
	secrets := SecretMap{"upstream-ca": validationSecretOf("upstream-ca", &tlsv3.CertificateValidationContext{
		TrustedCa:                 inline(ca.pem),
		MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{sanMatch(tlsv3.SubjectAltNameMatcher_DNS, exact("up.example"))},
	})}
	ctxWith := func(sni string, vc *tlsv3.CertificateValidationContext) *tlsv3.UpstreamTlsContext {
		u := &tlsv3.UpstreamTlsContext{Sni: sni}
		if vc != nil {
			u.CommonTlsContext = withValidation(vc)
		}
		return u
	}
	san := func(typ tlsv3.SubjectAltNameMatcher_SanType, m *matcherv3.StringMatcher) []*tlsv3.SubjectAltNameMatcher {
		return []*tlsv3.SubjectAltNameMatcher{sanMatch(typ, m)}
	}
	tests := []struct {
		name       string
		ctx        *tlsv3.UpstreamTlsContext
		serverName string
		refused    string // part of the client's error; "" for accepted
	}{
		{"CA and DNS SAN", ctxWith("up.example", &tlsv3.CertificateValidationContext{
			TrustedCa: inline(ca.pem), MatchTypedSubjectAltNames: san(tlsv3.SubjectAltNameMatcher_DNS, exact("up.example"))}), "", ""},
		{"CA and DNS SAN ignoring case", ctxWith("up.example", &tlsv3.CertificateValidationContext{
			TrustedCa: inline(ca.pem), MatchTypedSubjectAltNames: san(tlsv3.SubjectAltNameMatcher_DNS, exact("UP.example"))}), "", ""},
		{"CA and DNS suffix", ctxWith("", &tlsv3.CertificateValidationContext{
			TrustedCa: inline(ca.pem), MatchTypedSubjectAltNames: san(tlsv3.SubjectAltNameMatcher_DNS,
				&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: ".example"}})}), "", ""},
		{"CA and IP SAN", ctxWith("", &tlsv3.CertificateValidationContext{
			TrustedCa: inline(ca.pem), MatchTypedSubjectAltNames: san(tlsv3.SubjectAltNameMatcher_IP_ADDRESS, exact("127.0.0.1"))}), "", ""},
		{"CA and URI regex", ctxWith("", &tlsv3.CertificateValidationContext{
			TrustedCa: inline(ca.pem), MatchTypedSubjectAltNames: san(tlsv3.SubjectAltNameMatcher_URI,
				&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: `spiffe://flotilla/[a-z]+`}}})}), "", ""},
		{"CA and untyped SAN matcher", ctxWith("", &tlsv3.CertificateValidationContext{
			TrustedCa: inline(ca.pem), MatchSubjectAltNames: []*matcherv3.StringMatcher{exact("spiffe://flotilla/pacs")}}), "", ""},
		{"CA over SDS", &tlsv3.UpstreamTlsContext{Sni: "up.example", CommonTlsContext: &tlsv3.CommonTlsContext{
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{ValidationContextSdsSecretConfig: ads("upstream-ca")},
		}}, "", ""},
		{"wrong CA", ctxWith("up.example", &tlsv3.CertificateValidationContext{
			TrustedCa: inline(otherCA.pem), MatchTypedSubjectAltNames: san(tlsv3.SubjectAltNameMatcher_DNS, exact("up.example"))}),
			"", "tlsconf: upstream certificate: x509: certificate signed by unknown authority"},
		{"wrong DNS SAN", ctxWith("up.example", &tlsv3.CertificateValidationContext{
			TrustedCa: inline(ca.pem), MatchTypedSubjectAltNames: san(tlsv3.SubjectAltNameMatcher_DNS, exact("down.example"))}),
			"", "tlsconf: upstream certificate matches no subject alt name matcher"},
		{"wrong SAN type", ctxWith("up.example", &tlsv3.CertificateValidationContext{
			TrustedCa: inline(ca.pem), MatchTypedSubjectAltNames: san(tlsv3.SubjectAltNameMatcher_URI, exact("up.example"))}),
			"", "tlsconf: upstream certificate matches no subject alt name matcher"},
		{"wrong IP SAN", ctxWith("", &tlsv3.CertificateValidationContext{
			TrustedCa: inline(ca.pem), MatchTypedSubjectAltNames: san(tlsv3.SubjectAltNameMatcher_IP_ADDRESS, exact("127.0.0.2"))}),
			"", "tlsconf: upstream certificate matches no subject alt name matcher"},
		{"CA alone checks the chain, not the name, as Envoy does", ctxWith("elsewhere.example", &tlsv3.CertificateValidationContext{
			TrustedCa: inline(ca.pem)}), "", ""},
		{"auto_sni_san_validation with the right name", &tlsv3.UpstreamTlsContext{AutoSniSanValidation: true,
			CommonTlsContext: withValidation(&tlsv3.CertificateValidationContext{TrustedCa: inline(ca.pem)})}, "up.example", ""},
		{"auto_sni_san_validation with a wrong name", &tlsv3.UpstreamTlsContext{AutoSniSanValidation: true,
			CommonTlsContext: withValidation(&tlsv3.CertificateValidationContext{TrustedCa: inline(ca.pem)})}, "down.example",
			"tlsconf: upstream certificate: x509: certificate is valid for up.example, not down.example"},
		{"auto_sni_san_validation without a name", &tlsv3.UpstreamTlsContext{AutoSniSanValidation: true,
			CommonTlsContext: withValidation(&tlsv3.CertificateValidationContext{TrustedCa: inline(ca.pem)})}, "",
			"tlsconf: auto_sni_san_validation: no server name to validate the certificate against"},
		{"pinned hash", ctxWith("", &tlsv3.CertificateValidationContext{VerifyCertificateHash: []string{hex.EncodeToString(leafHash[:])}}), "", ""},
		{"wrong pinned hash", ctxWith("", &tlsv3.CertificateValidationContext{VerifyCertificateHash: []string{strings.Repeat("ab", 32)}}),
			"", "tlsconf: upstream certificate matches no verify_certificate_hash or verify_certificate_spki"},
		{"no validation context verifies nothing, as in Envoy", ctxWith("", nil), "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustClient(t, tt.ctx, secrets)
			r := handshake(t, up.config, c.Config(tt.serverName))
			if tt.refused == "" {
				if r.serverErr != nil || r.clientErr != nil {
					t.Fatalf("handshake: server %v, client %v", r.serverErr, r.clientErr)
				}
				return
			}
			if r.clientErr == nil || !strings.Contains(r.clientErr.Error(), tt.refused) {
				t.Fatalf("client error %v, want %q", r.clientErr, tt.refused)
			}
		})
	}
}

func TestClientSNI(t *testing.T) {
	ca := newCA(t, "ca")
	up := newUpstream(ca.keyPair(t, leafOpts{dns: []string{"up.example"}}))
	tests := []struct {
		name, sni, serverName, want string
	}{
		{"fixed sni", "fixed.example", "", "fixed.example"},
		{"client's SNI passed through", "", "client.example", "client.example"},
		{"no SNI at all", "", "", ""},
		{"explicit server name overrides sni", "fixed.example", "other.example", "other.example"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustClient(t, &tlsv3.UpstreamTlsContext{Sni: tt.sni}, nil)
			if c.SNI() != tt.sni {
				t.Fatalf("SNI() = %q, want %q", c.SNI(), tt.sni)
			}
			r := handshake(t, up.config, c.Config(tt.serverName))
			if r.serverErr != nil || r.clientErr != nil {
				t.Fatalf("handshake: server %v, client %v", r.serverErr, r.clientErr)
			}
			if got := up.lastSNI(); got != tt.want {
				t.Fatalf("upstream saw SNI %q, want %q", got, tt.want)
			}
		})
	}
	t.Run("config for the fixed sni is shared", func(t *testing.T) {
		c := mustClient(t, &tlsv3.UpstreamTlsContext{Sni: "fixed.example"}, nil)
		if c.Config("") != c.Config("fixed.example") {
			t.Fatal("Config allocates for the fixed sni")
		}
	})
}

func TestClientOptions(t *testing.T) {
	ca := newCA(t, "ca")
	clientCA := newCA(t, "client ca")
	up := newUpstream(ca.keyPair(t, leafOpts{dns: []string{"up.example"}}))
	mtlsUp := newUpstream(ca.keyPair(t, leafOpts{dns: []string{"up.example"}}))
	mtlsUp.config.ClientAuth, mtlsUp.config.ClientCAs = tls.RequireAndVerifyClientCert, clientCA.pool()
	secrets := SecretMap{"client-cert": clientCA.secret(t, "client-cert", leafOpts{cn: "agent", client: true})}
	verify := func() *tlsv3.CommonTlsContext {
		return withValidation(&tlsv3.CertificateValidationContext{TrustedCa: inline(ca.pem)})
	}
	tests := []struct {
		name     string
		ctx      *tlsv3.UpstreamTlsContext
		upstream *upstream
		check    func(t *testing.T, r hsResult)
	}{
		{"default maximum is TLS 1.2, as in Envoy", &tlsv3.UpstreamTlsContext{CommonTlsContext: verify()}, up, func(t *testing.T, r hsResult) {
			if r.client.Version != tls.VersionTLS12 {
				t.Fatalf("version %s", tls.VersionName(r.client.Version))
			}
		}},
		{"TLS 1.3 when allowed", &tlsv3.UpstreamTlsContext{CommonTlsContext: func() *tlsv3.CommonTlsContext {
			cc := verify()
			cc.TlsParams = &tlsv3.TlsParameters{TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3}
			return cc
		}()}, up, func(t *testing.T, r hsResult) {
			if r.client.Version != tls.VersionTLS13 {
				t.Fatalf("version %s", tls.VersionName(r.client.Version))
			}
		}},
		{"ALPN", &tlsv3.UpstreamTlsContext{CommonTlsContext: func() *tlsv3.CommonTlsContext {
			cc := verify()
			cc.AlpnProtocols = []string{"http/1.1"}
			return cc
		}()}, up, func(t *testing.T, r hsResult) {
			if r.client.NegotiatedProtocol != "http/1.1" {
				t.Fatalf("ALPN %q", r.client.NegotiatedProtocol)
			}
		}},
		{"client certificate over SDS", &tlsv3.UpstreamTlsContext{CommonTlsContext: func() *tlsv3.CommonTlsContext {
			cc := verify()
			cc.TlsCertificateSdsSecretConfigs = []*tlsv3.SdsSecretConfig{ads("client-cert")}
			return cc
		}()}, mtlsUp, func(t *testing.T, r hsResult) {
			if r.serverErr != nil || len(r.server.PeerCertificates) == 0 {
				t.Fatalf("upstream saw no client certificate (%v)", r.serverErr)
			}
		}},
		{"no client certificate", &tlsv3.UpstreamTlsContext{CommonTlsContext: verify()}, mtlsUp, func(t *testing.T, r hsResult) {
			if r.serverErr == nil {
				t.Fatal("upstream accepted a client without a certificate")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustClient(t, tt.ctx, secrets)
			tt.check(t, handshake(t, tt.upstream.config, c.Config("up.example")))
		})
	}
}

func TestClientSessionResumption(t *testing.T) {
	ca := newCA(t, "ca")
	up := newUpstream(ca.keyPair(t, leafOpts{dns: []string{"up.example"}}))
	tests := []struct {
		name   string
		keys   *wrapperspb.UInt32Value
		resume bool
	}{
		{"default cache", nil, true},
		{"max_session_keys 0 disables resumption", wrapperspb.UInt32(0), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustClient(t, &tlsv3.UpstreamTlsContext{
				CommonTlsContext: withValidation(&tlsv3.CertificateValidationContext{TrustedCa: inline(ca.pem)}),
				MaxSessionKeys:   tt.keys,
			}, nil)
			for i := range 2 {
				r := handshake(t, up.config, c.Config("up.example"))
				if r.serverErr != nil || r.clientErr != nil {
					t.Fatalf("handshake %d: server %v, client %v", i, r.serverErr, r.clientErr)
				}
				if want := i == 1 && tt.resume; r.client.DidResume != want {
					t.Fatalf("handshake %d: resumed %v, want %v", i, r.client.DidResume, want)
				}
			}
		})
	}
}

func TestNewClientErrors(t *testing.T) {
	ca := newCA(t, "ca")
	tests := []struct {
		name string
		ctx  *tlsv3.UpstreamTlsContext
		want string
	}{
		{"nil", nil, "upstream TLS context is nil"},
		{"auto_host_sni", &tlsv3.UpstreamTlsContext{AutoHostSni: true},
			"auto_host_sni is not supported by flotilla-agent: it takes the HTTP Host header; for TCP leave sni empty and the agent passes the client's SNI through"},
		{"auto_sni_san_validation without a CA", &tlsv3.UpstreamTlsContext{AutoSniSanValidation: true},
			"auto_sni_san_validation: needs common_tls_context.validation_context with trusted_ca or system_root_certs"},
		{"enforce_rsa_key_usage", &tlsv3.UpstreamTlsContext{EnforceRsaKeyUsage: wrapperspb.Bool(true)},
			"enforce_rsa_key_usage is not supported by flotilla-agent"},
		{"CA from a file", &tlsv3.UpstreamTlsContext{CommonTlsContext: withValidation(&tlsv3.CertificateValidationContext{
			TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: "/etc/ssl/ca.pem"}},
		})}, "common_tls_context.validation_context.trusted_ca.filename is not supported by flotilla-agent: the agent does not read its own disk for the control plane; send inline_bytes or inline_string"},
		{"trusted_ca and system roots", &tlsv3.UpstreamTlsContext{CommonTlsContext: withValidation(&tlsv3.CertificateValidationContext{
			TrustedCa: inline(ca.pem), SystemRootCerts: &tlsv3.CertificateValidationContext_SystemRootCerts{},
		})}, "common_tls_context.validation_context: trusted_ca and system_root_certs are mutually exclusive"},
		{"untrusted chains", &tlsv3.UpstreamTlsContext{CommonTlsContext: withValidation(&tlsv3.CertificateValidationContext{
			TrustedCa: inline(ca.pem), TrustChainVerification: tlsv3.CertificateValidationContext_ACCEPT_UNTRUSTED,
		})}, "common_tls_context.validation_context.trust_chain_verification is not supported by flotilla-agent"},
		{"regex with ignore_case", &tlsv3.UpstreamTlsContext{CommonTlsContext: withValidation(&tlsv3.CertificateValidationContext{
			TrustedCa: inline(ca.pem), MatchSubjectAltNames: []*matcherv3.StringMatcher{{
				MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "a"}}, IgnoreCase: true}},
		})}, "common_tls_context.validation_context.match_subject_alt_names[0].ignore_case has no effect on safe_regex; use (?i) in the regex"},
		{"system roots", &tlsv3.UpstreamTlsContext{Sni: "x.example", CommonTlsContext: withValidation(&tlsv3.CertificateValidationContext{
			SystemRootCerts: &tlsv3.CertificateValidationContext_SystemRootCerts{},
		})}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewClient(tt.ctx, nil)
			wantErr(t, err, tt.want)
		})
	}
}
