package compiler

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	upstreamproxyprotocolv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/proxy_protocol/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/flotilla-proxy/flotilla/agent/tlsconf"
	"github.com/flotilla-proxy/flotilla/controlplane/bundle"
	"github.com/flotilla-proxy/flotilla/controlplane/bundle/certtest"
	configv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/config/v1"
)

// certsDir holds the test certificates the TLS golden cases name. They are
// generated once, valid for a century, so the goldens (which carry the PEM)
// stay stable: go test -update creates them when they are missing.
const certsDir = "testdata/certs"

// writeTestCerts creates certsDir: a CA, server certificates db (db.example,
// *.db.example), alt (alt.example) and upstream (db.internal,
// upstream.internal), and a client certificate proxy, all signed by the CA.
func writeTestCerts(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(certsDir, "ca.pem")); err == nil {
		return
	}
	if err := os.MkdirAll(certsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	from := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	valid := func(o certtest.Options) certtest.Options {
		o.NotBefore, o.NotAfter = from, from.AddDate(100, 0, 0)
		return o
	}
	ca, err := certtest.NewCA(valid(certtest.Options{CommonName: "Flotilla test CA"}))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(certsDir, "ca.pem"), ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	for name, o := range map[string]certtest.Options{
		"db":       {CommonName: "db.example", DNSNames: []string{"db.example", "*.db.example"}},
		"alt":      {CommonName: "alt.example", DNSNames: []string{"alt.example"}},
		"upstream": {CommonName: "db.internal", DNSNames: []string{"db.internal", "upstream.internal"}},
		"proxy":    {CommonName: "flotilla-proxy", Client: true},
	} {
		p, err := ca.Issue(valid(o))
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := p.WriteFiles(certsDir, name); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("wrote new test certificates to %s", certsDir)
}

// tlsCases are the golden cases with TLS.
var tlsCases = []string{"tls-termination", "tls-origination", "tls-example"}

func goldenCaseNamed(t *testing.T, name string) goldenCase {
	t.Helper()
	for _, tc := range goldenCases {
		if tc.name == name {
			return tc
		}
	}
	t.Fatalf("no golden case %q", name)
	return goldenCase{}
}

// downstreamContexts returns the DownstreamTlsContext of every filter chain
// of r's listeners, by listener/chain.
func downstreamContexts(t *testing.T, r *Resources) map[string]*tlsv3.DownstreamTlsContext {
	t.Helper()
	out := map[string]*tlsv3.DownstreamTlsContext{}
	for _, l := range r.Listeners {
		chains := slices.Clone(l.GetFilterChains())
		if d := l.GetDefaultFilterChain(); d != nil {
			chains = append(chains, d)
		}
		for _, c := range chains {
			ts := c.GetTransportSocket()
			if ts == nil {
				continue
			}
			ctx := &tlsv3.DownstreamTlsContext{}
			if ts.GetName() != tlsconf.TransportSocketName {
				t.Fatalf("%s/%s: transport socket %q", l.GetName(), c.GetName(), ts.GetName())
			}
			if err := ts.GetTypedConfig().UnmarshalTo(ctx); err != nil {
				t.Fatal(err)
			}
			out[l.GetName()+"/"+c.GetName()] = ctx
		}
	}
	return out
}

// upstreamContexts returns the UpstreamTlsContext of every cluster with
// one, by cluster name, looking inside upstream_proxy_protocol.
func upstreamContexts(t *testing.T, r *Resources) map[string]*tlsv3.UpstreamTlsContext {
	t.Helper()
	out := map[string]*tlsv3.UpstreamTlsContext{}
	for _, c := range r.Clusters {
		ts := c.GetTransportSocket()
		if ts.GetName() == UpstreamProxyProtocol {
			pp := &upstreamproxyprotocolv3.ProxyProtocolUpstreamTransport{}
			if err := ts.GetTypedConfig().UnmarshalTo(pp); err != nil {
				t.Fatal(err)
			}
			ts = pp.GetTransportSocket()
		}
		if ts.GetName() != tlsconf.TransportSocketName {
			continue
		}
		ctx := &tlsv3.UpstreamTlsContext{}
		if err := ts.GetTypedConfig().UnmarshalTo(ctx); err != nil {
			t.Fatal(err)
		}
		out[c.GetName()] = ctx
	}
	return out
}

// TestTLSAgentAccepts feeds what the compiler emits for the TLS cases to the
// agent's tlsconf, the way the agent does: every secret passes
// ValidateSecret, every context builds with exactly the group's secrets, and
// the group holds no secret that nothing refers to.
func TestTLSAgentAccepts(t *testing.T) {
	for _, name := range tlsCases {
		tc := goldenCaseNamed(t, name)
		for _, labels := range tc.labels {
			t.Run(name, func(t *testing.T) {
				r, err := Compile(load(t, tc.inputs...), labels)
				if err != nil {
					t.Fatal(err)
				}
				secrets := tlsconf.SecretMap{}
				for _, s := range r.Secrets {
					if err := tlsconf.ValidateSecret(s); err != nil {
						t.Errorf("secret %q: %v", s.GetName(), err)
					}
					secrets[s.GetName()] = s
				}
				referenced := map[string]bool{}
				servers, clients := downstreamContexts(t, r), upstreamContexts(t, r)
				if len(servers)+len(clients) == 0 {
					t.Fatal("no TLS contexts")
				}
				for where, ctx := range servers {
					if _, err := tlsconf.NewServer(ctx, secrets); err != nil {
						t.Errorf("%s: the agent refuses it: %v", where, err)
					}
					for _, n := range tlsconf.SecretNames(ctx) {
						referenced[n] = true
					}
				}
				for where, ctx := range clients {
					if _, err := tlsconf.NewClient(ctx, secrets); err != nil {
						t.Errorf("cluster %s: the agent refuses it: %v", where, err)
					}
					for _, n := range tlsconf.SecretNames(ctx) {
						referenced[n] = true
					}
				}
				for name := range secrets {
					if !referenced[name] {
						t.Errorf("secret %q is in the snapshot but nothing refers to it", name)
					}
				}
			})
		}
	}
}

// readCert reads a test certificate and key.
func readCert(t *testing.T, name string) tls.Certificate {
	t.Helper()
	c, err := tls.LoadX509KeyPair(filepath.Join(certsDir, name+".pem"), filepath.Join(certsDir, name+".key"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func testCA(t *testing.T) *x509.CertPool {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(certsDir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		t.Fatal("no CA")
	}
	return pool
}

// handshake runs a TLS handshake over loopback between server and client
// configs and returns the client's view of it, or the first error.
func handshake(t *testing.T, server, client *tls.Config) (tls.ConnectionState, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	serverErr := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			serverErr <- err
			return
		}
		defer c.Close()
		tc := tls.Server(c, server)
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		err = tc.Handshake()
		if err == nil {
			_, err = tc.Write([]byte("ok"))
		}
		serverErr <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	raw, err := (&net.Dialer{}).DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	tc := tls.Client(raw, client)
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tc.HandshakeContext(ctx); err != nil {
		return tls.ConnectionState{}, errors.Join(err, <-serverErr)
	}
	// With TLS 1.3 a refused client certificate shows on the first read.
	if _, err := io.ReadFull(tc, make([]byte, 2)); err != nil {
		return tls.ConnectionState{}, errors.Join(err, <-serverErr)
	}
	return tc.ConnectionState(), <-serverErr
}

// TestTLSHandshakes runs real handshakes with the TLS configs the agent
// builds from the golden cases: termination picks the certificate by SNI and
// requires a client certificate; origination sends the fixed SNI, verifies
// the upstream and presents the client certificate.
func TestTLSHandshakes(t *testing.T) {
	term, err := Compile(load(t, "testdata/tls-termination.yaml"), map[string]string{"role": "edge"})
	if err != nil {
		t.Fatal(err)
	}
	orig, err := Compile(load(t, "testdata/tls-origination.yaml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	secrets := tlsconf.SecretMap{}
	for _, s := range append(term.Secrets, orig.Secrets...) {
		secrets[s.GetName()] = s
	}
	server, err := tlsconf.NewServer(downstreamContexts(t, term)["db-tls/default"], secrets)
	if err != nil {
		t.Fatal(err)
	}
	client := func(sni string, cert bool) *tls.Config {
		c := &tls.Config{RootCAs: testCA(t), ServerName: sni, NextProtos: []string{"postgresql"}}
		if cert {
			c.Certificates = []tls.Certificate{readCert(t, "proxy")}
		}
		return c
	}
	t.Run("termination", func(t *testing.T) {
		for _, tt := range []struct {
			sni      string
			cert     bool
			wantName string // the DNS name of the certificate served; "" for a refused handshake
		}{
			{"db.example", true, "db.example"},
			{"alt.example", true, "alt.example"},
			{"x.db.example", true, "db.example"},
			{"db.example", false, ""},
		} {
			st, err := handshake(t, server.Config(), client(tt.sni, tt.cert))
			switch {
			case tt.wantName == "" && err == nil:
				t.Errorf("%s without a client certificate: handshake succeeded", tt.sni)
			case tt.wantName == "":
			case err != nil:
				t.Errorf("%s: %v", tt.sni, err)
			case st.PeerCertificates[0].DNSNames[0] != tt.wantName || st.Version != tls.VersionTLS13 || st.NegotiatedProtocol != "postgresql":
				t.Errorf("%s: served %v, version %x, ALPN %q", tt.sni, st.PeerCertificates[0].DNSNames, st.Version, st.NegotiatedProtocol)
			}
		}
	})
	t.Run("origination", func(t *testing.T) {
		upstream := &tls.Config{Certificates: []tls.Certificate{readCert(t, "upstream")}, ClientCAs: testCA(t), ClientAuth: tls.RequireAndVerifyClientCert}
		ctxs := upstreamContexts(t, orig)
		c, err := tlsconf.NewClient(ctxs["mtls"], secrets)
		if err != nil {
			t.Fatal(err)
		}
		if c.SNI() != "db.internal" {
			t.Errorf("SNI %q", c.SNI())
		}
		var sawSNI string
		upstream.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) { sawSNI = h.ServerName; return nil, nil }
		if _, err := handshake(t, upstream, c.Config("")); err != nil {
			t.Fatalf("mtls: %v", err)
		}
		if sawSNI != "db.internal" {
			t.Errorf("upstream saw SNI %q", sawSNI)
		}
		// verify-name checks upstream.internal, which the upstream carries;
		// a name it does not carry fails.
		ok, err := tlsconf.NewClient(ctxs["verify-name"], secrets)
		if err != nil {
			t.Fatal(err)
		}
		upstream.ClientAuth = tls.NoClientCert
		if _, err := handshake(t, upstream, ok.Config("")); err != nil {
			t.Errorf("verify-name: %v", err)
		}
		named, err := tlsconf.NewClient(ctxs["client-sni"], secrets)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := handshake(t, upstream, named.Config("other.example")); err == nil {
			t.Error("client-sni with an SNI the upstream certificate lacks: handshake succeeded")
		}
	})
}

// TestSecretsPerGroup checks that a group gets exactly the secrets its
// listeners and clusters use, named by content and shared between users.
func TestSecretsPerGroup(t *testing.T) {
	b := load(t, "testdata/tls-termination.yaml")
	read := func(name string) string {
		data, err := os.ReadFile(filepath.Join(certsDir, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	db, alt := SecretName(read("db.pem"), read("db.key")), SecretName(read("alt.pem"), read("alt.key"))
	for _, tt := range []struct {
		labels map[string]string
		want   []string
	}{
		{nil, []string{db}},
		{map[string]string{"role": "edge"}, sortedStrings(db, alt)},
	} {
		r, err := Compile(b, tt.labels)
		if err != nil {
			t.Fatal(err)
		}
		if got := names(r.Secrets); !slices.Equal(got, tt.want) {
			t.Errorf("%v: secrets %v, want %v", tt.labels, got, tt.want)
		}
	}
	if len(db) != len("cert-")+16 {
		t.Errorf("secret name %q", db)
	}
}

func sortedStrings(s ...string) []string { slices.Sort(s); return s }

// TestCompileTLSWithoutPEM: a bundle that was parsed but not loaded (no
// PEM read) does not compile into empty certificates.
func TestCompileTLSWithoutPEM(t *testing.T) {
	b := &configv1.Bundle{
		Listeners: []*configv1.Listener{{Name: "l", Address: ":1", Tcp: &configv1.TcpProxy{Cluster: "c"},
			Tls: &configv1.ListenerTls{Certificates: []*configv1.TlsCertificate{{Cert: &configv1.PemSource{File: "a.pem"}, Key: &configv1.PemSource{File: "a.key"}}}}}},
		Clusters: []*configv1.Cluster{{Name: "c", Endpoints: []*configv1.Endpoint{{Address: "192.0.2.1:1"}}}},
	}
	_, err := Compile(b, nil)
	if want := `listener "l": tls.certificates[0]: certificate without PEM (the config was not loaded with its PEM files)`; err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
}

// tlsFuzzSeeds are the TLS golden inputs with their PEM inline (JSON is
// YAML), since FuzzCompile parses without reading files.
func tlsFuzzSeeds(f *testing.F) [][]byte {
	var out [][]byte
	for _, in := range []string{"testdata/tls-termination.yaml", "testdata/tls-origination.yaml"} {
		files, err := bundle.Load(in)
		if err != nil {
			f.Fatal(err)
		}
		js, err := protojson.Marshal(bundle.Merge(files))
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, js)
	}
	return out
}
