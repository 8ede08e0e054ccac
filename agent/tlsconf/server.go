package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/flotilla-proxy/flotilla/agent/fieldcheck"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// Server is the TLS termination of one filter chain, built from its DownstreamTlsContext.
// It is immutable and safe for concurrent use.
type Server struct {
	config *tls.Config
}

// NewServer builds the Server of a filter chain from its DownstreamTlsContext, taking the
// SDS secrets it names from s. Errors name the offending field relative to the context;
// an SDS secret that s does not hold gives an error wrapping ErrMissingSecret.
func NewServer(ctx *tlsv3.DownstreamTlsContext, s Secrets) (*Server, error) {
	if ctx == nil {
		return nil, errors.New("downstream TLS context is nil")
	}
	if err := fieldcheck.Only(ctx, "", "common_tls_context", "require_client_certificate", "require_sni",
		"disable_stateless_session_resumption", "disable_stateful_session_resumption",
		"full_scan_certs_on_sni_mismatch"); err != nil {
		return nil, err
	}
	const cp = "common_tls_context"
	common, err := parseCommon(ctx.GetCommonTlsContext(), s, cp, false)
	if err != nil {
		return nil, err
	}
	if len(common.certs) == 0 {
		return nil, fmt.Errorf("%s: a server needs a certificate: set tls_certificates or tls_certificate_sds_secret_configs", cp)
	}
	set := newCertSet(common.certs, ctx.GetRequireSni().GetValue())
	cfg := &tls.Config{
		GetCertificate:         set.get,
		NextProtos:             common.alpn,
		SessionTicketsDisabled: ctx.GetDisableStatelessSessionResumption(),
	}
	common.params.apply(cfg)

	v := common.validator
	require := ctx.GetRequireClientCertificate().GetValue()
	switch {
	case v == nil || !v.verifiesChain() && len(v.hashes) == 0 && len(v.spkis) == 0:
		if require {
			return nil, errors.New("require_client_certificate: needs a validation context with trusted_ca (or certificate hashes) to verify client certificates with")
		}
	case v.roots != nil:
		cfg.ClientCAs = v.roots
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		if require {
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
		}
	default: // pinned by hash or SPKI only: crypto/tls checks no chain, VerifyConnection pins
		cfg.ClientAuth = tls.RequestClientCert
		if require {
			cfg.ClientAuth = tls.RequireAnyClientCert
		}
	}
	if v != nil && (len(v.sans) > 0 || len(v.hashes) > 0 || len(v.spkis) > 0) {
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return nil // no certificate given, and none required (ClientAuth enforces that)
			}
			if err := v.checkIdentity(cs.PeerCertificates[0]); err != nil {
				return fmt.Errorf("tlsconf: client %w", err)
			}
			return nil
		}
	}
	if len(cfg.NextProtos) > 0 {
		// Envoy carries on without ALPN when the client offers none of our protocols;
		// crypto/tls would abort the handshake. Hand such clients a copy without ALPN.
		noALPN := cfg.Clone()
		noALPN.NextProtos = nil
		protos := cfg.NextProtos
		cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			if len(hello.SupportedProtos) == 0 {
				return nil, nil
			}
			for _, p := range hello.SupportedProtos {
				if slices.Contains(protos, p) {
					return nil, nil
				}
			}
			return noALPN, nil
		}
	}
	// Envoy's own constraints (protoc-gen-validate), behind the precise checks above.
	if err := ctx.Validate(); err != nil {
		return nil, err
	}
	return &Server{config: cfg}, nil
}

// Config returns the configuration to hand to tls.Server for a connection on this filter
// chain. It is shared by all connections: callers must not modify it.
func (s *Server) Config() *tls.Config { return s.config }

// certSet picks a certificate per ClientHello by SNI, among the certificates of one
// DownstreamTlsContext.
type certSet struct {
	all        []*tls.Certificate
	exact      map[string][]*tls.Certificate // by lower-case DNS name
	wildcard   map[string][]*tls.Certificate // "*.example.com" under "example.com"
	requireSNI bool
}

func newCertSet(certs []*tls.Certificate, requireSNI bool) *certSet {
	s := &certSet{all: certs, exact: map[string][]*tls.Certificate{}, wildcard: map[string][]*tls.Certificate{}, requireSNI: requireSNI}
	for _, c := range certs {
		for _, n := range certNames(c.Leaf) {
			n = strings.ToLower(n)
			if rest, ok := strings.CutPrefix(n, "*."); ok {
				s.wildcard[rest] = appendOnce(s.wildcard[rest], c)
			} else {
				s.exact[n] = appendOnce(s.exact[n], c)
			}
		}
	}
	return s
}

// certNames are the names a certificate serves: its DNS SANs, else its Subject CN.
func certNames(leaf *x509.Certificate) []string {
	if len(leaf.DNSNames) > 0 {
		return leaf.DNSNames
	}
	if leaf.Subject.CommonName != "" {
		return []string{leaf.Subject.CommonName}
	}
	return nil
}

func appendOnce(list []*tls.Certificate, c *tls.Certificate) []*tls.Certificate {
	if slices.Contains(list, c) {
		return list
	}
	return append(list, c)
}

// get is the GetCertificate hook: exact SNI, then one-label wildcard, then every
// certificate; within the group the first the client supports, else the group's first.
func (s *certSet) get(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := hello.ServerName
	if name == "" && s.requireSNI {
		return nil, errors.New("tlsconf: client sent no SNI and require_sni is set")
	}
	if len(s.all) == 1 {
		return s.all[0], nil
	}
	if name != "" {
		name = strings.ToLower(strings.TrimSuffix(name, "."))
		if group := s.exact[name]; len(group) > 0 {
			return pick(group, hello), nil
		}
		if _, parent, ok := strings.Cut(name, "."); ok {
			if group := s.wildcard[parent]; len(group) > 0 {
				return pick(group, hello), nil
			}
		}
	}
	// No certificate is for this name: ask only whether the client can use each one
	// (SupportsCertificate also checks the name, which would rule them all out).
	anyName := *hello
	anyName.ServerName = ""
	return pick(s.all, &anyName), nil
}

// pick returns the first certificate of the group the client supports, else the first.
func pick(group []*tls.Certificate, hello *tls.ClientHelloInfo) *tls.Certificate {
	if len(group) > 1 {
		for _, c := range group {
			if hello.SupportsCertificate(c) == nil {
				return c
			}
		}
	}
	return group[0]
}
