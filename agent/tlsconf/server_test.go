package tlsconf

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// sdsServer builds a DownstreamTlsContext whose certificates come over SDS.
func sdsServer(names ...string) *tlsv3.DownstreamTlsContext {
	cc := &tlsv3.CommonTlsContext{}
	for _, n := range names {
		cc.TlsCertificateSdsSecretConfigs = append(cc.TlsCertificateSdsSecretConfigs, ads(n))
	}
	return &tlsv3.DownstreamTlsContext{CommonTlsContext: cc}
}

func mustServer(t testing.TB, ctx *tlsv3.DownstreamTlsContext, s Secrets) *Server {
	t.Helper()
	srv, err := NewServer(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

func TestServerCertificateBySNI(t *testing.T) {
	ca := newCA(t, "ca")
	secrets := SecretMap{}
	for name, dns := range map[string][]string{
		"a":  {"a.example", "www.a.example"},
		"b":  {"*.b.example"},
		"b2": {"exact.b.example"},
	} {
		secrets[name] = ca.secret(t, name, leafOpts{dns: dns})
	}
	srv := mustServer(t, sdsServer("a", "b", "b2"), secrets)

	tests := []struct {
		sni, want string // want: first DNS SAN of the certificate served
	}{
		{"a.example", "a.example"},
		{"WWW.A.Example", "a.example"},
		{"a.example.", "a.example"},
		{"x.b.example", "*.b.example"},
		{"exact.b.example", "exact.b.example"}, // exact beats wildcard
		{"y.x.b.example", "a.example"},         // a wildcard covers one label: fall back to the first
		{"b.example", "a.example"},
		{"", "a.example"},
	}
	for _, tt := range tests {
		t.Run("sni="+tt.sni, func(t *testing.T) {
			// Verify the chain, not the name: the fallbacks serve a certificate for another name.
			r := handshake(t, srv.Config(), &tls.Config{ServerName: tt.sni, InsecureSkipVerify: true})
			if r.serverErr != nil || r.clientErr != nil {
				t.Fatalf("handshake: server %v, client %v", r.serverErr, r.clientErr)
			}
			if got := r.client.PeerCertificates[0].DNSNames[0]; got != tt.want {
				t.Fatalf("served %q, want %q", got, tt.want)
			}
			if _, err := r.client.PeerCertificates[0].Verify(x509Opts(ca)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestServerCertificateByKeyType(t *testing.T) {
	ca := newCA(t, "ca")
	secrets := SecretMap{
		"ec":  ca.secret(t, "ec", leafOpts{dns: []string{"k.example"}}),
		"rsa": ca.secret(t, "rsa", leafOpts{dns: []string{"k.example"}, rsa: true}),
	}
	srv := mustServer(t, sdsServer("ec", "rsa"), secrets)
	tests := []struct {
		name   string
		client *tls.Config
		rsa    bool
	}{
		{"any client gets the first", &tls.Config{}, false},
		{"RSA-only client gets the RSA certificate", &tls.Config{
			MaxVersion:   tls.VersionTLS12,
			CipherSuites: []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256},
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.client.ServerName, tt.client.RootCAs = "k.example", ca.pool()
			r := handshake(t, srv.Config(), tt.client)
			if r.serverErr != nil || r.clientErr != nil {
				t.Fatalf("handshake: server %v, client %v", r.serverErr, r.clientErr)
			}
			_, isRSA := r.client.PeerCertificates[0].PublicKey.(*rsa.PublicKey)
			_, isEC := r.client.PeerCertificates[0].PublicKey.(*ecdsa.PublicKey)
			if isRSA != tt.rsa || isEC == tt.rsa {
				t.Fatalf("served RSA=%v, want RSA=%v", isRSA, tt.rsa)
			}
		})
	}
}

func TestServerRequireSNI(t *testing.T) {
	ca := newCA(t, "ca")
	ctx := &tlsv3.DownstreamTlsContext{
		CommonTlsContext: &tlsv3.CommonTlsContext{TlsCertificates: []*tlsv3.TlsCertificate{ca.inlineCert(t, leafOpts{dns: []string{"a.example"}})}},
		RequireSni:       wrapperspb.Bool(true),
	}
	srv := mustServer(t, ctx, nil)
	for _, tt := range []struct {
		sni string
		ok  bool
	}{{"a.example", true}, {"", false}} {
		t.Run("sni="+tt.sni, func(t *testing.T) {
			r := handshake(t, srv.Config(), &tls.Config{ServerName: tt.sni, InsecureSkipVerify: true})
			if ok := r.serverErr == nil && r.clientErr == nil; ok != tt.ok {
				t.Fatalf("handshake ok=%v (server %v, client %v), want %v", ok, r.serverErr, r.clientErr, tt.ok)
			}
		})
	}
}

func TestServerMTLS(t *testing.T) {
	ca := newCA(t, "server ca")
	clientCA := newCA(t, "client ca")
	otherCA := newCA(t, "other ca")
	secrets := SecretMap{
		"web": ca.secret(t, "web", leafOpts{dns: []string{"web.example"}}),
		"client-ca": validationSecretOf("client-ca", &tlsv3.CertificateValidationContext{
			TrustedCa: inline(clientCA.pem),
		}),
		"client-ca-spiffe": validationSecretOf("client-ca-spiffe", &tlsv3.CertificateValidationContext{
			TrustedCa: inline(clientCA.pem),
			MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{
				sanMatch(tlsv3.SubjectAltNameMatcher_URI, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "spiffe://flotilla/agent/"}}),
			},
		}),
	}
	good := clientCA.keyPair(t, leafOpts{cn: "agent-1", uris: []string{"spiffe://flotilla/agent/1"}, client: true})
	otherURI := clientCA.keyPair(t, leafOpts{cn: "intruder", uris: []string{"spiffe://flotilla/admin"}, client: true})
	wrongCA := otherCA.keyPair(t, leafOpts{cn: "agent-1", uris: []string{"spiffe://flotilla/agent/1"}, client: true})
	serverOnly := clientCA.keyPair(t, leafOpts{cn: "agent-1", uris: []string{"spiffe://flotilla/agent/1"}}) // serverAuth EKU
	spki := sha256.Sum256(wrongCA.Leaf.RawSubjectPublicKeyInfo)
	secrets["client-pin"] = validationSecretOf("client-pin", &tlsv3.CertificateValidationContext{
		VerifyCertificateSpki: []string{base64.StdEncoding.EncodeToString(spki[:])},
	})

	ctxFor := func(validation string, require bool) *tlsv3.DownstreamTlsContext {
		ctx := sdsServer("web")
		ctx.CommonTlsContext.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{ValidationContextSdsSecretConfig: ads(validation)}
		ctx.RequireClientCertificate = wrapperspb.Bool(require)
		return ctx
	}
	tests := []struct {
		name       string
		validation string
		require    bool
		cert       *tls.Certificate
		refused    string // part of the server's error; "" for accepted
	}{
		{"required, cert from the CA", "client-ca", true, &good, ""},
		{"required, no cert", "client-ca", true, nil, "client didn't provide a certificate"},
		{"required, cert from another CA", "client-ca", true, &wrongCA, "certificate signed by unknown authority"},
		{"required, cert without clientAuth", "client-ca", true, &serverOnly, "incompatible key usage"},
		{"required, SAN matches", "client-ca-spiffe", true, &good, ""},
		{"required, SAN does not match", "client-ca-spiffe", true, &otherURI, "tlsconf: client certificate matches no subject alt name matcher"},
		{"required, pinned SPKI, any issuer", "client-pin", true, &wrongCA, ""},
		{"required, SPKI not pinned", "client-pin", true, &good, "tlsconf: client certificate matches no verify_certificate_hash or verify_certificate_spki"},
		{"required, pinned SPKI, no cert", "client-pin", true, nil, "client didn't provide a certificate"},
		{"optional, no cert", "client-ca", false, nil, ""},
		{"optional, cert from the CA", "client-ca", false, &good, ""},
		{"optional, cert from another CA", "client-ca", false, &wrongCA, "certificate signed by unknown authority"},
		{"optional, SAN does not match", "client-ca-spiffe", false, &otherURI, "tlsconf: client certificate matches no subject alt name matcher"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := mustServer(t, ctxFor(tt.validation, tt.require), secrets)
			ccfg := &tls.Config{ServerName: "web.example", RootCAs: ca.pool()}
			if tt.cert != nil {
				// Send the certificate even when it is not from a CA the server names:
				// crypto/tls would otherwise quietly send none.
				cert := tt.cert
				ccfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
			}
			r := handshake(t, srv.Config(), ccfg)
			if tt.refused == "" {
				if r.serverErr != nil || r.clientErr != nil {
					t.Fatalf("handshake: server %v, client %v", r.serverErr, r.clientErr)
				}
				if tt.cert != nil && len(r.server.PeerCertificates) == 0 {
					t.Fatal("server did not see the client certificate")
				}
				return
			}
			if r.serverErr == nil || r.clientErr == nil {
				t.Fatalf("handshake accepted: server %v, client %v", r.serverErr, r.clientErr)
			}
			if !strings.Contains(r.serverErr.Error(), tt.refused) {
				t.Fatalf("refused with %q, want %q", r.serverErr, tt.refused)
			}
		})
	}
}

func TestServerALPN(t *testing.T) {
	ca := newCA(t, "ca")
	ctx := sdsServer("web")
	ctx.CommonTlsContext.AlpnProtocols = []string{"h2", "http/1.1"}
	srv := mustServer(t, ctx, SecretMap{"web": ca.secret(t, "web", leafOpts{dns: []string{"web.example"}})})
	tests := []struct {
		name   string
		offers []string
		want   string
	}{
		{"h2", []string{"h2"}, "h2"},
		{"client order is not server order", []string{"http/1.1", "h2"}, "h2"},
		{"http/1.1", []string{"http/1.1"}, "http/1.1"},
		{"no overlap carries on without ALPN, as Envoy does", []string{"imap"}, ""},
		{"no ALPN", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := handshake(t, srv.Config(), &tls.Config{ServerName: "web.example", RootCAs: ca.pool(), NextProtos: tt.offers})
			if r.serverErr != nil || r.clientErr != nil {
				t.Fatalf("handshake: server %v, client %v", r.serverErr, r.clientErr)
			}
			if r.client.NegotiatedProtocol != tt.want || r.server.NegotiatedProtocol != tt.want {
				t.Fatalf("ALPN client %q server %q, want %q", r.client.NegotiatedProtocol, r.server.NegotiatedProtocol, tt.want)
			}
		})
	}
}

func TestServerVersionsAndCiphers(t *testing.T) {
	ca := newCA(t, "ca")
	secrets := SecretMap{"web": ca.secret(t, "web", leafOpts{dns: []string{"web.example"}})}
	withParams := func(p *tlsv3.TlsParameters) *tlsv3.DownstreamTlsContext {
		ctx := sdsServer("web")
		ctx.CommonTlsContext.TlsParams = p
		return ctx
	}
	tests := []struct {
		name        string
		params      *tlsv3.TlsParameters
		client      *tls.Config
		wantVersion uint16 // 0: handshake must fail
		wantCipher  uint16 // 0: any
	}{
		{"defaults negotiate TLS 1.3", nil, &tls.Config{}, tls.VersionTLS13, 0},
		{"defaults refuse TLS 1.1", nil, &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}, 0, 0},
		{"minimum TLS 1.3 refuses a TLS 1.2 client",
			&tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_3},
			&tls.Config{MaxVersion: tls.VersionTLS12}, 0, 0},
		{"minimum TLS 1.3 accepts a TLS 1.3 client",
			&tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_3},
			&tls.Config{}, tls.VersionTLS13, 0},
		{"maximum TLS 1.2",
			&tlsv3.TlsParameters{TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_2},
			&tls.Config{}, tls.VersionTLS12, 0},
		{"OpenSSL cipher names",
			&tlsv3.TlsParameters{TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_2, CipherSuites: []string{"ECDHE-ECDSA-AES256-GCM-SHA384"}},
			&tls.Config{}, tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384},
		{"BoringSSL equal-preference group",
			&tlsv3.TlsParameters{TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_2, CipherSuites: []string{"[ECDHE-ECDSA-CHACHA20-POLY1305|ECDHE-RSA-CHACHA20-POLY1305]"}},
			&tls.Config{}, tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256},
		{"cipher list refuses other suites",
			&tlsv3.TlsParameters{TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_2, CipherSuites: []string{"ECDHE-ECDSA-AES256-GCM-SHA384"}},
			&tls.Config{CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}}, 0, 0},
		{"all TLS 1.3 suites listed",
			&tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_3, CipherSuites: []string{"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}},
			&tls.Config{}, tls.VersionTLS13, 0},
		{"curves",
			&tlsv3.TlsParameters{EcdhCurves: []string{"P-256"}},
			&tls.Config{CurvePreferences: []tls.CurveID{tls.CurveP256}}, tls.VersionTLS13, 0},
		{"curves refuse a client without them",
			&tlsv3.TlsParameters{EcdhCurves: []string{"P-384"}},
			&tls.Config{CurvePreferences: []tls.CurveID{tls.X25519}}, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := mustServer(t, withParams(tt.params), secrets)
			tt.client.ServerName, tt.client.RootCAs = "web.example", ca.pool()
			r := handshake(t, srv.Config(), tt.client)
			if tt.wantVersion == 0 {
				if r.serverErr == nil {
					t.Fatalf("handshake accepted with %s", tls.VersionName(r.server.Version))
				}
				return
			}
			if r.serverErr != nil || r.clientErr != nil {
				t.Fatalf("handshake: server %v, client %v", r.serverErr, r.clientErr)
			}
			if r.server.Version != tt.wantVersion {
				t.Fatalf("version %s, want %s", tls.VersionName(r.server.Version), tls.VersionName(tt.wantVersion))
			}
			if tt.wantCipher != 0 && r.server.CipherSuite != tt.wantCipher {
				t.Fatalf("cipher %s, want %s", tls.CipherSuiteName(r.server.CipherSuite), tls.CipherSuiteName(tt.wantCipher))
			}
		})
	}
}

func TestNewServerErrors(t *testing.T) {
	ca := newCA(t, "ca")
	certPEM, keyPEM := ca.issue(t, leafOpts{dns: []string{"web.example"}})
	secrets := SecretMap{
		"web": certSecret("web", certPEM, keyPEM),
		"ca":  validationSecretOf("ca", &tlsv3.CertificateValidationContext{TrustedCa: inline(ca.pem)}),
	}
	withCommon := func(f func(*tlsv3.CommonTlsContext)) *tlsv3.DownstreamTlsContext {
		ctx := sdsServer("web")
		f(ctx.CommonTlsContext)
		return ctx
	}
	tests := []struct {
		name string
		ctx  *tlsv3.DownstreamTlsContext
		want string
	}{
		{"nil", nil, "downstream TLS context is nil"},
		{"no certificate", &tlsv3.DownstreamTlsContext{},
			"common_tls_context: a server needs a certificate: set tls_certificates or tls_certificate_sds_secret_configs"},
		{"inline and SDS certificates", withCommon(func(c *tlsv3.CommonTlsContext) {
			c.TlsCertificates = []*tlsv3.TlsCertificate{tlsCert(certPEM, keyPEM)}
		}), "common_tls_context: tls_certificates and tls_certificate_sds_secret_configs are mutually exclusive"},
		{"inline certificate from a file", &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificates: []*tlsv3.TlsCertificate{{
				CertificateChain: inline(certPEM),
				PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: "/etc/key.pem"}},
			}},
		}}, "common_tls_context.tls_certificates[0].private_key.filename is not supported by flotilla-agent: the agent does not read its own disk for the control plane; send inline_bytes or inline_string"},
		{"secret of the wrong type", sdsServer("ca"),
			`common_tls_context.tls_certificate_sds_secret_configs[0]: secret "ca" holds no tls_certificate`},
		{"validation secret of the wrong type", withCommon(func(c *tlsv3.CommonTlsContext) {
			c.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{ValidationContextSdsSecretConfig: ads("web")}
		}), `common_tls_context.validation_context_sds_secret_config: secret "web" holds no validation_context`},
		{"SDS without a config source", &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "web"}},
		}}, "common_tls_context.tls_certificate_sds_secret_configs[0].sds_config is required: flotilla-agent has no static bootstrap secrets; use ads: {}"},
		{"SDS from a path", &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "web", SdsConfig: &corev3.ConfigSource{
				ConfigSourceSpecifier: &corev3.ConfigSource_Path{Path: "/etc/sds.yaml"},
			}}},
		}}, "common_tls_context.tls_certificate_sds_secret_configs[0].sds_config.path is not supported by flotilla-agent"},
		{"require client certificate without validation", &tlsv3.DownstreamTlsContext{
			CommonTlsContext:         sdsServer("web").CommonTlsContext,
			RequireClientCertificate: wrapperspb.Bool(true),
		}, "require_client_certificate: needs a validation context with trusted_ca (or certificate hashes) to verify client certificates with"},
		{"system roots for clients", withCommon(func(c *tlsv3.CommonTlsContext) {
			c.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				SystemRootCerts: &tlsv3.CertificateValidationContext_SystemRootCerts{},
			}}
		}), "common_tls_context.validation_context.system_root_certs is not supported by flotilla-agent for client certificates; send trusted_ca"},
		{"session ticket keys", &tlsv3.DownstreamTlsContext{
			CommonTlsContext:      sdsServer("web").CommonTlsContext,
			SessionTicketKeysType: &tlsv3.DownstreamTlsContext_SessionTicketKeys{SessionTicketKeys: &tlsv3.TlsSessionTicketKeys{}},
		}, "session_ticket_keys is not supported by flotilla-agent"},
		{"strict OCSP stapling", &tlsv3.DownstreamTlsContext{
			CommonTlsContext: sdsServer("web").CommonTlsContext,
			OcspStaplePolicy: tlsv3.DownstreamTlsContext_STRICT_STAPLING,
		}, "ocsp_staple_policy is not supported by flotilla-agent"},
		{"key log", withCommon(func(c *tlsv3.CommonTlsContext) { c.KeyLog = &tlsv3.TlsKeyLog{Path: "/tmp/keys"} }),
			"common_tls_context.key_log is not supported by flotilla-agent"},
		{"empty ALPN protocol", withCommon(func(c *tlsv3.CommonTlsContext) { c.AlpnProtocols = []string{"h2", ""} }),
			"common_tls_context.alpn_protocols[1]: a protocol name is 1 to 255 bytes"},
		{"unknown cipher", withCommon(func(c *tlsv3.CommonTlsContext) {
			c.TlsParams = &tlsv3.TlsParameters{CipherSuites: []string{"ECDHE-RSA-AES128-GCM-SHA256", "DES-CBC3-SHA"}}
		}), `common_tls_context.tls_params.cipher_suites[1]: "DES-CBC3-SHA" is not a cipher suite flotilla-agent supports (TLS 1.2: AES128-GCM-SHA256, AES128-SHA, AES256-GCM-SHA384, AES256-SHA, ECDHE-ECDSA-AES128-GCM-SHA256, ECDHE-ECDSA-AES128-SHA, ECDHE-ECDSA-AES256-GCM-SHA384, ECDHE-ECDSA-AES256-SHA, ECDHE-ECDSA-CHACHA20-POLY1305, ECDHE-RSA-AES128-GCM-SHA256, ECDHE-RSA-AES128-SHA, ECDHE-RSA-AES256-GCM-SHA384, ECDHE-RSA-AES256-SHA, ECDHE-RSA-CHACHA20-POLY1305)`},
		{"part of the TLS 1.3 suites", withCommon(func(c *tlsv3.CommonTlsContext) {
			c.TlsParams = &tlsv3.TlsParameters{CipherSuites: []string{"ECDHE-RSA-AES128-GCM-SHA256", "TLS_AES_256_GCM_SHA384"}}
		}), "common_tls_context.tls_params.cipher_suites: Go always enables all three TLS 1.3 suites (TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256); list all of them or none"},
		{"only TLS 1.3 suites with TLS 1.2 allowed", withCommon(func(c *tlsv3.CommonTlsContext) {
			c.TlsParams = &tlsv3.TlsParameters{CipherSuites: []string{"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}}
		}), "common_tls_context.tls_params.cipher_suites lists only TLS 1.3 suites, but tls_minimum_protocol_version allows older versions, for which Go would use its default suites; set tls_minimum_protocol_version to TLSv1_3"},
		{"minimum above maximum", withCommon(func(c *tlsv3.CommonTlsContext) {
			c.TlsParams = &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_3, TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_2}
		}), "common_tls_context.tls_params: tls_minimum_protocol_version TLS 1.3 is above tls_maximum_protocol_version TLS 1.2"},
		{"unknown curve", withCommon(func(c *tlsv3.CommonTlsContext) {
			c.TlsParams = &tlsv3.TlsParameters{EcdhCurves: []string{"X448"}}
		}), `common_tls_context.tls_params.ecdh_curves[0]: "X448" is not a group flotilla-agent supports (P-256, P-384, P-521, SecP256r1MLKEM768, SecP384r1MLKEM1024, X25519, X25519MLKEM768, prime256v1, secp384r1, secp521r1)`},
		{"signature algorithms", withCommon(func(c *tlsv3.CommonTlsContext) {
			c.TlsParams = &tlsv3.TlsParameters{SignatureAlgorithms: []string{"ecdsa_secp256r1_sha256"}}
		}), "common_tls_context.tls_params.signature_algorithms is not supported by flotilla-agent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewServer(tt.ctx, secrets)
			wantErr(t, err, tt.want)
		})
	}
}
