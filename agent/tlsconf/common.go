package tlsconf

import (
	"crypto/tls"
	"fmt"
	"slices"

	"github.com/flotilla-proxy/flotilla/agent/fieldcheck"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
)

// common is a parsed CommonTlsContext with its SDS secrets resolved.
type common struct {
	certs     []*tls.Certificate
	validator *validator // nil: no validation context
	alpn      []string
	params    params
}

// parseCommon parses a CommonTlsContext (nil is an empty one). upstream selects the
// client side's defaults and options.
func parseCommon(cc *tlsv3.CommonTlsContext, s Secrets, path string, upstream bool) (common, error) {
	var out common
	defaultMax := uint16(tls.VersionTLS13)
	if upstream {
		defaultMax = tls.VersionTLS12 // Envoy's default for clients
	}
	var err error
	if out.params, err = parseParams(cc.GetTlsParams(), path+".tls_params", defaultMax); err != nil {
		return out, err
	}
	if cc == nil {
		return out, nil
	}
	if err := fieldcheck.Only(cc, path, "tls_params", "tls_certificates", "tls_certificate_sds_secret_configs",
		"validation_context", "validation_context_sds_secret_config", "alpn_protocols"); err != nil {
		return out, err
	}
	if len(cc.GetTlsCertificates()) > 0 && len(cc.GetTlsCertificateSdsSecretConfigs()) > 0 {
		return out, fmt.Errorf("%s: tls_certificates and tls_certificate_sds_secret_configs are mutually exclusive", path)
	}
	for i, tc := range cc.GetTlsCertificates() {
		c, err := parseCertificate(tc, fmt.Sprintf("%s.tls_certificates[%d]", path, i))
		if err != nil {
			return out, err
		}
		out.certs = append(out.certs, c)
	}
	for i, sc := range cc.GetTlsCertificateSdsSecretConfigs() {
		c, err := certificateSecret(sc, s, fmt.Sprintf("%s.tls_certificate_sds_secret_configs[%d]", path, i))
		if err != nil {
			return out, err
		}
		out.certs = append(out.certs, c)
	}
	switch vt := cc.GetValidationContextType().(type) {
	case nil:
	case *tlsv3.CommonTlsContext_ValidationContext:
		out.validator, err = parseValidation(vt.ValidationContext, path+".validation_context", upstream)
	case *tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig:
		out.validator, err = validationSecret(vt.ValidationContextSdsSecretConfig, s, path+".validation_context_sds_secret_config", upstream)
	}
	if err != nil {
		return out, err
	}
	for i, p := range cc.GetAlpnProtocols() {
		if p == "" || len(p) > 255 {
			return out, fmt.Errorf("%s.alpn_protocols[%d]: a protocol name is 1 to 255 bytes", path, i)
		}
	}
	out.alpn = cc.GetAlpnProtocols()
	return out, nil
}

// SecretNames returns the names of the SDS secrets a DownstreamTlsContext,
// UpstreamTlsContext or CommonTlsContext refers to, sorted and without duplicates, for the
// agent's SDS subscription. Any other message, or nil, has none.
func SecretNames(m proto.Message) []string {
	var cc *tlsv3.CommonTlsContext
	switch t := m.(type) {
	case *tlsv3.DownstreamTlsContext:
		cc = t.GetCommonTlsContext()
	case *tlsv3.UpstreamTlsContext:
		cc = t.GetCommonTlsContext()
	case *tlsv3.CommonTlsContext:
		cc = t
	}
	var names []string
	for _, sc := range cc.GetTlsCertificateSdsSecretConfigs() {
		names = append(names, sc.GetName())
	}
	if sc := cc.GetValidationContextSdsSecretConfig(); sc != nil {
		names = append(names, sc.GetName())
	}
	slices.Sort(names)
	return slices.Compact(names)
}
