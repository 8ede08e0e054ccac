package tlsconf

import (
	"crypto/tls"
	"errors"
	"fmt"

	"github.com/flotilla-proxy/flotilla/agent/fieldcheck"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// defaultSessionCache is the upstream session cache size when max_session_keys is unset.
// Envoy keeps one session per cluster; with the client's SNI passed through, one cluster
// talks to many names, so the agent keeps more.
const defaultSessionCache = 64

// Client is the TLS origination of one cluster, built from its UpstreamTlsContext. It is
// immutable and safe for concurrent use.
type Client struct {
	sni    string
	config *tls.Config // ServerName = sni
}

// NewClient builds the Client of a cluster from its UpstreamTlsContext, taking the SDS
// secrets it names from s. Errors name the offending field relative to the context; an
// SDS secret that s does not hold gives an error wrapping ErrMissingSecret.
func NewClient(u *tlsv3.UpstreamTlsContext, s Secrets) (*Client, error) {
	if u == nil {
		return nil, errors.New("upstream TLS context is nil")
	}
	if u.GetAutoHostSni() {
		return nil, errors.New("auto_host_sni is not supported by flotilla-agent: it takes the HTTP Host header; for TCP leave sni empty and the agent passes the client's SNI through")
	}
	if err := fieldcheck.Only(u, "", "common_tls_context", "sni", "auto_sni_san_validation", "allow_renegotiation", "max_session_keys"); err != nil {
		return nil, err
	}
	if len(u.GetSni()) > 255 {
		return nil, errors.New("sni: longer than 255 bytes")
	}
	common, err := parseCommon(u.GetCommonTlsContext(), s, "common_tls_context", true)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		ServerName: u.GetSni(),
		NextProtos: common.alpn,
		// Verification follows Envoy's rules, not crypto/tls's: VerifyConnection below.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection
	}
	common.params.apply(cfg)
	for _, c := range common.certs {
		cfg.Certificates = append(cfg.Certificates, *c)
	}
	if u.GetAllowRenegotiation() {
		cfg.Renegotiation = tls.RenegotiateFreelyAsClient
	}
	switch n := u.GetMaxSessionKeys(); {
	case n == nil:
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(defaultSessionCache)
	case n.GetValue() > 0:
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(int(n.GetValue()))
	}
	checkName := u.GetAutoSniSanValidation()
	if v := common.validator; v != nil || checkName {
		if v == nil {
			v = &validator{}
		}
		if checkName && !v.verifiesChain() {
			return nil, fmt.Errorf("auto_sni_san_validation: needs common_tls_context.validation_context with trusted_ca or system_root_certs")
		}
		cfg.VerifyConnection = func(cs tls.ConnectionState) error { return v.verifyServer(cs, checkName) }
	}
	// Envoy's own constraints (protoc-gen-validate), behind the precise checks above.
	if err := u.Validate(); err != nil {
		return nil, err
	}
	return &Client{sni: u.GetSni(), config: cfg}, nil
}

// SNI returns the context's fixed sni, "" when it has none. When it has none and the
// listener peeked the client's ClientHello, the agent passes the client's SNI to Config:
// Flotilla's TCP equivalent of Envoy's auto_sni.
func (c *Client) SNI() string { return c.sni }

// Config returns the configuration to hand to tls.Client for one upstream connection.
// serverName is the SNI to send (and, with auto_sni_san_validation, to verify); "" means
// the context's sni. The result may be shared: callers must not modify it.
func (c *Client) Config(serverName string) *tls.Config {
	if serverName == "" || serverName == c.sni {
		return c.config
	}
	cfg := c.config.Clone()
	cfg.ServerName = serverName
	return cfg
}
