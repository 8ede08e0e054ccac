package runtime_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/flotilla-proxy/flotilla/agent/runtime"
	"github.com/flotilla-proxy/flotilla/agent/runtime/runtimetest"
)

// tlsFixture is a TLS listener (two certificates, mTLS) and a cluster originating TLS with a
// client certificate behind a PROXY v2 header, with their secrets.
type tlsFixture struct {
	ca                 *runtimetest.CA
	secA, secB, client *tlsv3.Secret
	listener           *listenerv3.Listener
	cluster            *clusterv3.Cluster
}

func newTLSFixture() *tlsFixture {
	f := &tlsFixture{ca: runtimetest.NewCA("runtime ca")}
	f.secA = runtimetest.CertSecret(f.ca.Issue("a.example", false, "a.example"))
	f.secB = runtimetest.CertSecret(f.ca.Issue("b.example", false, "b.example"))
	f.client = runtimetest.CertSecret(f.ca.Issue("proxy", true))
	f.listener = runtimetest.Listener("tls", "127.0.0.1", 5433, "db")
	f.listener.FilterChains[0].TransportSocket = runtimetest.TLSSocket(runtimetest.DownstreamTLSContext(f.ca.PEM, f.secB.GetName(), f.secA.GetName()))
	f.cluster = runtimetest.StaticCluster("db", runtimetest.Endpoint("127.0.0.1:5432", 1))
	f.cluster.TransportSocket = runtimetest.UpstreamProxyProtocolTLS(2, runtimetest.UpstreamTLSContext("db.internal", f.ca.PEM, "", f.client.GetName()))
	return f
}

func (f *tlsFixture) set(secrets ...*tlsv3.Secret) *runtime.Resources {
	r := set([]*listenerv3.Listener{f.listener}, []*clusterv3.Cluster{f.cluster}, nil)
	r.Secrets = map[string]*tlsv3.Secret{}
	for _, s := range secrets {
		r.Secrets[s.GetName()] = s
	}
	return r
}

func TestSDSNamesAndMissing(t *testing.T) {
	f := newTLSFixture()
	r := f.set()
	want := []string{f.secA.GetName(), f.secB.GetName(), f.client.GetName()}
	slices.Sort(want)
	if got := r.SDSNames(); !slices.Equal(got, want) {
		t.Errorf("SDSNames = %v, want %v", got, want)
	}
	err := r.Missing()
	if err == nil {
		t.Fatal("Missing = nil without the secrets")
	}
	for _, w := range []string{`no secret yet for listener "tls"`, `no secret yet for cluster "db": ` + f.client.GetName()} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("Missing = %q, want it to contain %q", err, w)
		}
	}
	if _, err := runtime.Build(r); err == nil {
		t.Error("Build succeeded without the secrets")
	}
	if err := f.set(f.secA, f.secB, f.client).Missing(); err != nil {
		t.Errorf("Missing with every secret = %v", err)
	}
	// A plain config needs no secret.
	if got := set([]*listenerv3.Listener{runtimetest.Listener("web", "127.0.0.1", 80, "db")}, nil, nil).SDSNames(); len(got) != 0 {
		t.Errorf("SDSNames of a plain listener = %v", got)
	}
}

func TestBuildTLS(t *testing.T) {
	f := newTLSFixture()
	f.listener.ListenerFiltersTimeout = durationpb.New(3 * time.Second)
	g, err := runtime.Build(f.set(f.secA, f.secB, f.client))
	if err != nil {
		t.Fatal(err)
	}
	l := g.Listener("tls")
	srv := l.Chains()[0].TLS
	if srv == nil {
		t.Fatal("chain has no TLS server")
	}
	if cfg := srv.Config(); cfg.ClientCAs == nil {
		t.Error("mTLS: no client CAs")
	}
	if l.HandshakeTimeout() != 3*time.Second {
		t.Errorf("HandshakeTimeout = %v, want listener_filters_timeout 3s", l.HandshakeTimeout())
	}
	c := g.Cluster("db")
	if c.TLS() == nil || c.TLS().SNI() != "db.internal" || c.ProxyProtocol() != 2 {
		t.Errorf("cluster TLS = %v (sni %q), PROXY v%d; want TLS to db.internal behind PROXY v2", c.TLS(), c.TLS().SNI(), c.ProxyProtocol())
	}
	if got := g.Resources().Secrets; len(got) != 3 {
		t.Errorf("Graph.Resources().Secrets = %d secrets, want 3", len(got))
	}

	// A plain listener without a timeout gets the default handshake timeout and no TLS.
	g, err = runtime.Build(set([]*listenerv3.Listener{runtimetest.Listener("web", "127.0.0.1", 80, "db")},
		[]*clusterv3.Cluster{runtimetest.StaticCluster("db", runtimetest.Endpoint("127.0.0.1:5432", 1))}, nil))
	if err != nil {
		t.Fatal(err)
	}
	if l := g.Listener("web"); l.Chains()[0].TLS != nil || l.HandshakeTimeout() != runtime.DefaultHandshakeTimeout || g.Cluster("db").TLS() != nil {
		t.Error("plain listener or cluster has TLS")
	}
}

func TestBuildTLSErrors(t *testing.T) {
	tests := []struct {
		name     string
		edit     func(f *tlsFixture) *runtime.Resources
		typeURL  string
		contains string
	}{
		{"secret delivered under another name", func(f *tlsFixture) *runtime.Resources {
			r := f.set(f.secA, f.secB, f.client)
			r.Secrets["other"] = f.secA
			return r
		}, resourcev3.SecretType, `secret "other": resource is named`},
		{"key of another certificate", func(f *tlsFixture) *runtime.Resources {
			_, otherKey := f.ca.Issue("x", false, "x.example")
			bad := runtimetest.CertSecret(f.secA.GetTlsCertificate().GetCertificateChain().GetInlineBytes(), otherKey)
			bad.Name = f.secA.GetName()
			return f.set(bad, f.secB, f.client)
		}, resourcev3.SecretType, `tls_certificate`},
		{"unsupported field in the downstream context", func(f *tlsFixture) *runtime.Resources {
			d := runtimetest.DownstreamTLSContext(nil, f.secA.GetName())
			d.OcspStaplePolicy = tlsv3.DownstreamTlsContext_STRICT_STAPLING
			f.listener.FilterChains[0].TransportSocket = runtimetest.TLSSocket(d)
			return f.set(f.secA, f.secB, f.client)
		}, resourcev3.ListenerType, `listener "tls": filter_chains[0].transport_socket.typed_config.ocsp_staple_policy`},
		{"client secret that is a validation context", func(f *tlsFixture) *runtime.Resources {
			vc := &tlsv3.Secret{Name: f.client.GetName(), Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: f.ca.PEM}},
			}}}
			return f.set(f.secA, f.secB, vc)
		}, resourcev3.ClusterType, `cluster "db": transport_socket.typed_config.transport_socket.typed_config.common_tls_context.tls_certificate_sds_secret_configs[0]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := runtime.Build(tt.edit(newTLSFixture()))
			var re *runtime.ResourceError
			if !errors.As(err, &re) || re.TypeURL != tt.typeURL {
				t.Fatalf("Build = %v, want a %s ResourceError", err, tt.typeURL)
			}
			if !strings.Contains(err.Error(), tt.contains) {
				t.Errorf("Build = %q, want it to contain %q", err, tt.contains)
			}
			if strings.Contains(err.Error(), "PRIVATE KEY") {
				t.Errorf("error carries key material: %q", err)
			}
		})
	}
}
