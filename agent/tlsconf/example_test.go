package tlsconf_test

import (
	"errors"
	"fmt"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/flotilla-proxy/flotilla/agent/tlsconf"
)

// A filter chain's DownstreamTlsContext names its certificate by SDS. Until the secret
// arrives, NewServer says so with ErrMissingSecret, which the runtime can tell from a
// configuration error; the caller prefixes its own path to build a NACK message.
func ExampleNewServer() {
	ctx := &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{
			Name:      "edge-cert",
			SdsConfig: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}},
		}},
		AlpnProtocols: []string{"h2", "http/1.1"},
	}}
	fmt.Println("subscribe to:", tlsconf.SecretNames(ctx))
	_, err := tlsconf.NewServer(ctx, tlsconf.SecretMap{})
	fmt.Println("waiting for SDS:", errors.Is(err, tlsconf.ErrMissingSecret))
	fmt.Printf("listener %q: filter_chains[0].transport_socket.typed_config: %v\n", "edge-443", err)
	// Output:
	// subscribe to: [edge-cert]
	// waiting for SDS: true
	// listener "edge-443": filter_chains[0].transport_socket.typed_config: common_tls_context.tls_certificate_sds_secret_configs[0]: secret "edge-cert": not received over SDS
}

// With no sni in the UpstreamTlsContext, the agent passes the SNI it peeked from the
// client's ClientHello: Flotilla's TCP equivalent of Envoy's auto_sni.
func ExampleClient_Config() {
	c, err := tlsconf.NewClient(&tlsv3.UpstreamTlsContext{}, nil)
	if err != nil {
		panic(err)
	}
	downstreamSNI := "db.example" // from the listener's tls_inspector
	name := c.SNI()
	if name == "" {
		name = downstreamSNI
	}
	fmt.Println(c.Config(name).ServerName)
	// Output: db.example
}
