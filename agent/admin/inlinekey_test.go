package admin

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// TestInlineKeyRedactedInDump: tlsconf accepts common_tls_context.tls_certificates with an
// inline private key inside a Listener (any xDS server may send one); /config_dump redacts
// only Secret resources, so the key is printed verbatim.
func TestInlineKeyRedactedInDump(t *testing.T) {
	const key = "-----BEGIN PRIVATE KEY-----\nSECRETKEYMATERIAL\n-----END PRIVATE KEY-----\n"
	dtc, _ := anypb.New(&tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificates: []*tlsv3.TlsCertificate{{
			CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "cert"}},
			PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: key}},
		}},
	}})
	l := &listenerv3.Listener{Name: "l", FilterChains: []*listenerv3.FilterChain{{
		TransportSocket: &corev3.TransportSocket{Name: "envoy.transport_sockets.tls",
			ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: dtc}},
	}}}
	b, err := marshalDump(ConfigDump{Types: []TypeDump{{TypeURL: "type.googleapis.com/envoy.config.listener.v3.Listener", Resources: []proto.Message{l}}}})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "SECRETKEYMATERIAL") {
		t.Fatalf("private key in /config_dump:\n%s", b)
	}
}
