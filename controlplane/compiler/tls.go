package compiler

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/flotilla-proxy/flotilla/controlplane/bundle"
	configv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/config/v1"
)

// SecretName is the SDS name of a certificate with its key: "cert-" and the
// first 16 hex digits of SHA-256(cert PEM ‖ key PEM). Equal material shares
// one secret, and a changed certificate is a new name, so agents never see a
// secret change under a context that uses it.
func SecretName(certPEM, keyPEM string) string {
	h := sha256.New()
	h.Write([]byte(certPEM))
	h.Write([]byte(keyPEM))
	return "cert-" + hex.EncodeToString(h.Sum(nil))[:16]
}

// secrets collects the SDS secrets of one group, by name.
type secrets map[string]*tlsv3.Secret

// add makes c a Secret, if it is not one already, and returns an SDS
// reference to it over ADS.
func (s secrets) add(c *configv1.TlsCertificate) (*tlsv3.SdsSecretConfig, error) {
	cert, key := c.GetCert().GetPem(), c.GetKey().GetPem()
	if cert == "" || key == "" {
		return nil, fmt.Errorf("certificate without PEM (the config was not loaded with its PEM files)")
	}
	name := SecretName(cert, key)
	if s[name] == nil {
		s[name] = &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inlineBytes(cert),
			PrivateKey:       inlineBytes(key),
		}}}
	}
	return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: adsConfig()}, nil
}

// sorted returns the secrets sorted by name.
func (s secrets) sorted() []*tlsv3.Secret {
	out := slices.Collect(maps.Values(s))
	slices.SortFunc(out, func(a, b *tlsv3.Secret) int { return cmp.Compare(a.GetName(), b.GetName()) })
	return out
}

func adsConfig() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}
}

func inlineBytes(pem string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: []byte(pem)}}
}

// tlsVersions maps ListenerTls.min_version to Envoy's protocol versions.
var tlsVersions = map[string]tlsv3.TlsParameters_TlsProtocol{
	"":                  tlsv3.TlsParameters_TLSv1_2,
	bundle.TLSVersion12: tlsv3.TlsParameters_TLSv1_2,
	bundle.TLSVersion13: tlsv3.TlsParameters_TLSv1_3,
}

// downstreamTLS is the transport socket terminating TLS on every filter
// chain of a listener with tls; its certificates go into s.
func downstreamTLS(t *configv1.ListenerTls, s secrets) (*corev3.TransportSocket, error) {
	if len(t.GetCertificates()) == 0 {
		return nil, fmt.Errorf("tls.certificates: none")
	}
	minVersion, ok := tlsVersions[t.GetMinVersion()]
	if !ok {
		return nil, fmt.Errorf("tls.min_version %q is not 1.2 or 1.3", t.GetMinVersion())
	}
	common := &tlsv3.CommonTlsContext{
		AlpnProtocols: slices.Clone(t.GetAlpn()),
		TlsParams:     &tlsv3.TlsParameters{TlsMinimumProtocolVersion: minVersion},
	}
	for i, c := range t.GetCertificates() {
		ref, err := s.add(c)
		if err != nil {
			return nil, fmt.Errorf("tls.certificates[%d]: %w", i, err)
		}
		common.TlsCertificateSdsSecretConfigs = append(common.TlsCertificateSdsSecretConfigs, ref)
	}
	ctx := &tlsv3.DownstreamTlsContext{CommonTlsContext: common}
	if ca := t.GetClientCa(); ca != nil {
		if ca.GetPem() == "" {
			return nil, fmt.Errorf("tls.client_ca: no PEM (the config was not loaded with its PEM files)")
		}
		common.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: inlineBytes(ca.GetPem()),
		}}
		ctx.RequireClientCertificate = wrapperspb.Bool(true)
	}
	return tlsTransportSocket(ctx)
}

// upstreamTLS is the transport socket originating TLS to a cluster's
// endpoints; its client certificate goes into s.
func upstreamTLS(t *configv1.ClusterTls, s secrets) (*corev3.TransportSocket, error) {
	common := &tlsv3.CommonTlsContext{
		TlsParams: &tlsv3.TlsParameters{TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3},
	}
	ctx := &tlsv3.UpstreamTlsContext{CommonTlsContext: common}
	if !t.GetPassClientSni() {
		ctx.Sni = t.GetSni()
	}
	switch ca := t.GetCa(); {
	case ca != nil && t.GetInsecureSkipVerify():
		return nil, fmt.Errorf("tls: ca with insecure_skip_verify")
	case ca != nil:
		if ca.GetPem() == "" {
			return nil, fmt.Errorf("tls.ca: no PEM (the config was not loaded with its PEM files)")
		}
		vc := &tlsv3.CertificateValidationContext{TrustedCa: inlineBytes(ca.GetPem())}
		name := cmp.Or(t.GetVerifyName(), t.GetSni())
		switch {
		case name != "":
			vc.MatchTypedSubjectAltNames = []*tlsv3.SubjectAltNameMatcher{{
				SanType: tlsv3.SubjectAltNameMatcher_DNS,
				Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: name}},
			}}
		case t.GetPassClientSni():
			ctx.AutoSniSanValidation = true
		}
		common.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: vc}
	case !t.GetInsecureSkipVerify():
		return nil, fmt.Errorf("tls: neither ca nor insecure_skip_verify")
	}
	if cc := t.GetClientCertificate(); cc != nil {
		ref, err := s.add(cc)
		if err != nil {
			return nil, fmt.Errorf("tls.client_certificate: %w", err)
		}
		common.TlsCertificateSdsSecretConfigs = []*tlsv3.SdsSecretConfig{ref}
	}
	return tlsTransportSocket(ctx)
}

func tlsTransportSocket(ctx proto.Message) (*corev3.TransportSocket, error) {
	a, err := anypb.New(ctx)
	if err != nil {
		return nil, err
	}
	return &corev3.TransportSocket{Name: wellknown.TransportSocketTLS, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a}}, nil
}
