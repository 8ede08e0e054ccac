package tlsconf

import (
	"crypto/tls"
	"fmt"
	"testing"
)

// BenchmarkCertificateLookup measures the per-handshake work the Server adds to crypto/tls:
// choosing a certificate by SNI among many in one context, and the ALPN check.
func BenchmarkCertificateLookup(b *testing.B) {
	ca := newCA(b, "ca")
	secrets := SecretMap{}
	var names []string
	for i := range 64 {
		name := fmt.Sprintf("cert-%d", i)
		dns := []string{fmt.Sprintf("host%d.example", i), fmt.Sprintf("*.zone%d.example", i)}
		secrets[name] = ca.secret(b, name, leafOpts{dns: dns})
		names = append(names, name)
	}
	ctx := sdsServer(names...)
	ctx.CommonTlsContext.AlpnProtocols = []string{"h2", "http/1.1"}
	srv, err := NewServer(ctx, secrets)
	if err != nil {
		b.Fatal(err)
	}
	single, err := NewServer(sdsServer("cert-0"), secrets)
	if err != nil {
		b.Fatal(err)
	}
	hello := func(sni string) *tls.ClientHelloInfo {
		// What a current Go or browser client offers, as far as certificate choice goes.
		return &tls.ClientHelloInfo{
			ServerName:        sni,
			SupportedProtos:   []string{"h2"},
			SupportedVersions: []uint16{tls.VersionTLS13, tls.VersionTLS12},
			CipherSuites:      []uint16{tls.TLS_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
			SupportedCurves:   []tls.CurveID{tls.X25519, tls.CurveP256},
			SignatureSchemes:  []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256, tls.PSSWithSHA256, tls.PKCS1WithSHA256},
		}
	}
	for _, bc := range []struct {
		name  string
		srv   *Server
		hello *tls.ClientHelloInfo
	}{
		{"exact/64 certs", srv, hello("host42.example")},
		{"wildcard/64 certs", srv, hello("db.zone42.example")},
		{"fallback/64 certs", srv, hello("unknown.example")},
		{"single cert", single, hello("host0.example")},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cfg := bc.srv.Config()
			b.ReportAllocs()
			for b.Loop() {
				if cfg.GetConfigForClient != nil {
					if _, err := cfg.GetConfigForClient(bc.hello); err != nil {
						b.Fatal(err)
					}
				}
				if _, err := cfg.GetCertificate(bc.hello); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkHandshake is a full TLS 1.3 handshake over loopback with a Server's config, for
// scale: the lookup above is a tiny part of it.
func BenchmarkHandshake(b *testing.B) {
	ca := newCA(b, "ca")
	srv, err := NewServer(sdsServer("web"), SecretMap{"web": ca.secret(b, "web", leafOpts{dns: []string{"web.example"}})})
	if err != nil {
		b.Fatal(err)
	}
	client := &tls.Config{ServerName: "web.example", RootCAs: ca.pool()}
	b.ReportAllocs()
	for b.Loop() {
		if r := handshake(b, srv.Config(), client); r.serverErr != nil || r.clientErr != nil {
			b.Fatalf("handshake: server %v, client %v", r.serverErr, r.clientErr)
		}
	}
}
