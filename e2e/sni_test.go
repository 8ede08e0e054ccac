package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSNIRoutingToNginxWithProxyProtocol is the setup our seeds' users could
// not get right with Traefik and HAProxy: an agent listener routes TLS by SNI
// without terminating it (nginx ssl_preread) and sends the PROXY protocol v2
// to real nginx backends that `listen … ssl proxy_protocol`. nginx must see the
// original client address in $proxy_protocol_addr, and each client must reach
// the backend whose certificate matches its SNI.
func TestSNIRoutingToNginxWithProxyProtocol(t *testing.T) {
	t.Parallel()
	nginx := requirePeer(t, "nginx")
	openssl := requirePeer(t, "openssl")

	ca := newTestCA(t)
	dir := t.TempDir()
	aCert, aKey := ca.issue(t, dir, "a", "a.example")
	bCert, bKey := ca.issue(t, dir, "b", "b.example", "*.b.example")
	aAddr, bAddr := freeAddr(t), freeAddr(t)
	startNginx(t, nginx, dir, fmt.Sprintf(`
    server {
        listen %s ssl proxy_protocol;
        server_name a.example;
        ssl_certificate %s;
        ssl_certificate_key %s;
        location / { default_type text/plain; return 200 "backend=a client=$proxy_protocol_addr peer=$remote_addr\n"; }
    }
    server {
        listen %s ssl proxy_protocol;
        server_name b.example *.b.example;
        ssl_certificate %s;
        ssl_certificate_key %s;
        location / { default_type text/plain; return 200 "backend=b client=$proxy_protocol_addr peer=$remote_addr\n"; }
    }`, aAddr, aCert, aKey, bAddr, bCert, bKey), aAddr, bAddr)

	cp := startControlPlane(t)
	ag := startAgent(t, cp, "edge-1", "role=edge")
	edge := freeAddr(t)
	cfg := filepath.Join(t.TempDir(), "edge.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`
listeners:
  - name: edge-443
    address: %q
    sni:
      - names: [a.example]
        cluster: a
      - names: [b.example, "*.b.example"]
        cluster: b
clusters:
  - name: a
    proxy_protocol: v2
    endpoints: [%q]
  - name: b
    proxy_protocol: v2
    endpoints: [%q]
`, edge, aAddr, bAddr)), 0o600); err != nil {
		t.Fatal(err)
	}
	cp.apply(t, cfg, "SNI routing with PROXY v2 to nginx")
	ag.waitReady(t)
	cp.waitSynced(t, 1, "edge-1")

	// Clients come from 127.0.0.7 so the address nginx reports can only have
	// come through the PROXY header: the agent itself dials from 127.0.0.1.
	tests := []struct {
		sni, want string
	}{
		{"a.example", "backend=a client=127.0.0.7 peer=127.0.0.1"},
		{"b.example", "backend=b client=127.0.0.7 peer=127.0.0.1"},
		{"www.b.example", "backend=b client=127.0.0.7 peer=127.0.0.1"},
	}
	for _, tt := range tests {
		t.Run("go/"+tt.sni, func(t *testing.T) {
			waitFor(t, convergeTimeout, "a response for "+tt.sni, func() error {
				got, err := httpsGet(edge, "127.0.0.7", ca.clientConfig(tt.sni))
				if err != nil {
					return err
				}
				if strings.TrimSpace(got) != tt.want {
					return fmt.Errorf("got %q, want %q", got, tt.want)
				}
				return nil
			})
		})
	}

	// openssl s_client, a client that is not Go's, verifying b's certificate.
	t.Run("openssl/www.b.example", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, openssl, "s_client", "-connect", edge, "-servername", "www.b.example",
			"-CAfile", ca.pemPath, "-verify_return_error", "-quiet")
		cmd.Stdin = strings.NewReader("GET / HTTP/1.0\r\nHost: www.b.example\r\n\r\n")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("openssl s_client: %v\n%s", err, out)
		}
		if !strings.Contains(string(out), "backend=b client=127.0.0.1 peer=127.0.0.1") {
			t.Fatalf("openssl s_client did not reach backend b through the agent:\n%s", out)
		}
	})

	// A name no route claims: the agent closes the connection (no default route).
	if _, err := httpsGet(edge, "127.0.0.7", ca.clientConfig("c.example")); err == nil {
		t.Fatal("a ClientHello for c.example was proxied; want the connection closed")
	}
}

// httpsGet sends GET / over TLS to addr from the local address from, and
// returns the body.
func httpsGet(addr, from string, cfg *tls.Config) (string, error) {
	d := &net.Dialer{Timeout: 3 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	tr := &http.Transport{
		DialContext:       func(ctx context.Context, _, _ string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) },
		TLSClientConfig:   cfg,
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	resp, err := c.Get("https://" + cfg.ServerName + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return string(body), err
}

// startNginx runs a real nginx in the foreground with its own prefix
// directory, serving the given http{} server blocks, and waits for addrs.
func startNginx(t *testing.T, bin, dir, servers string, addrs ...string) {
	t.Helper()
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;" // workers read the test's 0600 files
	}
	conf := fmt.Sprintf(`%s
worker_processes 1;
daemon off;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log info;
events { worker_connections 256; }
http {
    access_log %[2]s/access.log;
    client_body_temp_path %[2]s/body;
    proxy_temp_path %[2]s/proxy;
    fastcgi_temp_path %[2]s/fastcgi;
    uwsgi_temp_path %[2]s/uwsgi;
    scgi_temp_path %[2]s/scgi;
%[3]s
}
`, user, dir, servers)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProcess(t, "nginx", bin, "-p", dir, "-c", path, "-e", filepath.Join(dir, "error.log"))
	waitFor(t, startTimeout, "nginx to listen", func() error {
		if p.exited() {
			data, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("nginx exited: %v\n%s\n%s", p.waitErr, p.tail(20), data)
		}
		for _, a := range addrs {
			if err := dialable(a); err != nil {
				return err
			}
		}
		return nil
	})
}
