package tlsconf

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// serveTLS accepts on a loopback listener with the Server's config and reports each
// handshake's result. The server writes a greeting and closes.
func serveTLS(t *testing.T, srv *Server) (addr string, results <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan error, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				tc := tls.Server(c, srv.Config())
				err := tc.Handshake()
				if err == nil {
					_, err = tc.Write([]byte("hello from flotilla\n"))
				}
				ch <- err
			}()
		}
	}()
	return ln.Addr().String(), ch
}

// TestOpenSSLClient runs openssl s_client, a TLS stack that is not Go's, against a Server
// built from a DownstreamTlsContext.
func TestOpenSSLClient(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl is not installed")
	}
	ca := newCA(t, "server ca")
	clientCA := newCA(t, "client ca")
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caFile := write("ca.pem", ca.pem)
	clientCert, clientKey := clientCA.issue(t, leafOpts{cn: "agent-1", client: true})
	clientCertFile, clientKeyFile := write("client.pem", clientCert), write("client-key.pem", clientKey)

	secrets := SecretMap{
		"a":         ca.secret(t, "a", leafOpts{cn: "a.example", dns: []string{"a.example"}}),
		"b":         ca.secret(t, "b", leafOpts{cn: "b.example", dns: []string{"*.b.example"}}),
		"client-ca": validationSecretOf("client-ca", &tlsv3.CertificateValidationContext{TrustedCa: inline(clientCA.pem)}),
	}
	termination := sdsServer("a", "b")
	termination.CommonTlsContext.AlpnProtocols = []string{"h2", "http/1.1"}
	mtls := sdsServer("a")
	mtls.CommonTlsContext.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{ValidationContextSdsSecretConfig: ads("client-ca")}
	mtls.RequireClientCertificate = wrapperspb.Bool(true)
	tls13 := sdsServer("a")
	tls13.CommonTlsContext.TlsParams = &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_3}

	tests := []struct {
		name     string
		ctx      *tlsv3.DownstreamTlsContext
		args     []string
		ok       bool     // the server's handshake succeeds
		contains []string // regexps the s_client output must match when ok
	}{
		{"certificate for a.example", termination, []string{"-servername", "a.example", "-alpn", "h2"}, true,
			[]string{`subject=CN ?= ?a\.example`, `Verify return code: 0 \(ok\)`, `ALPN protocol: h2`, `hello from flotilla`}},
		{"wildcard certificate for x.b.example", termination, []string{"-servername", "x.b.example", "-alpn", "http/1.1"}, true,
			[]string{`subject=CN ?= ?b\.example`, `Verify return code: 0 \(ok\)`, `ALPN protocol: http/1\.1`}},
		{"TLS 1.2", termination, []string{"-servername", "a.example", "-tls1_2"}, true,
			[]string{`Protocol *: TLSv1\.2`, `Verify return code: 0 \(ok\)`}},
		{"mTLS with a client certificate", mtls, []string{"-servername", "a.example", "-cert", clientCertFile, "-key", clientKeyFile}, true,
			[]string{`Verify return code: 0 \(ok\)`, `hello from flotilla`}},
		{"mTLS without a client certificate", mtls, []string{"-servername", "a.example"}, false, nil},
		{"minimum TLS 1.3 refuses TLS 1.2", tls13, []string{"-servername", "a.example", "-tls1_2"}, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, results := serveTLS(t, mustServer(t, tt.ctx, secrets))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			args := append([]string{"s_client", "-connect", addr, "-CAfile", caFile, "-verify_return_error", "-ign_eof"}, tt.args...)
			cmd := exec.CommandContext(ctx, openssl, args...)
			cmd.Stdin = strings.NewReader("")
			out, cmdErr := cmd.CombinedOutput()
			var serverErr error
			select {
			case serverErr = <-results:
			case <-ctx.Done():
				t.Fatalf("server saw no handshake; openssl: %v\n%s", cmdErr, out)
			}
			if !tt.ok {
				if serverErr == nil {
					t.Fatalf("server accepted the handshake; openssl output:\n%s", out)
				}
				return
			}
			if serverErr != nil {
				t.Fatalf("server: %v; openssl: %v\n%s", serverErr, cmdErr, out)
			}
			for _, re := range tt.contains {
				if !regexp.MustCompile(re).Match(out) {
					t.Errorf("openssl output does not match %q:\n%s", re, out)
				}
			}
		})
	}
}
