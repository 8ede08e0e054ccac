package e2e

import (
	"bufio"
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

// TestTLSTerminationAndMTLS: the agent terminates TLS with a certificate per
// SNI and requires client certificates from a CA (nginx stream `listen … ssl`
// + `ssl_verify_client on`), with Go and openssl s_client as clients. The
// certificates travel as SDS secrets; the key never shows in flotctl get.
func TestTLSTerminationAndMTLS(t *testing.T) {
	t.Parallel()
	openssl := requirePeer(t, "openssl")
	ca := newTestCA(t)
	clientCA := newTestCA(t)
	dir := t.TempDir()
	_, aKey := ca.issue(t, dir, "a", "a.example")
	ca.issue(t, dir, "b", "b.example")
	clientCert, clientKey := clientCA.issueClient(t, dir, "client", "ops@example")
	backend := startBackend(t, "b1")

	cp := startControlPlane(t)
	ag := startAgent(t, cp, "a1", "dc=ams")
	listen := freeAddr(t)
	cfg := filepath.Join(dir, "tls.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`
listeners:
  - name: tls
    address: %q
    tls:
      certificates:
        - { cert: a.crt, key: a.key }
        - { cert: b.crt, key: b.key }
      client_ca: %q
    tcp: { cluster: echo }
clusters:
  - name: echo
    endpoints: [%q]
`, listen, clientCA.pemPath, backend.addr)), 0o600); err != nil {
		t.Fatal(err)
	}
	cp.apply(t, cfg, "TLS termination with mTLS")
	ag.waitReady(t)

	keyPEM, err := os.ReadFile(aKey)
	if err != nil {
		t.Fatal(err)
	}
	if r := cp.flotctl(t, "get", "-o", "yaml"); strings.Contains(r.stdout, strings.TrimSpace(string(keyPEM))) || !strings.Contains(r.stdout, "<private key sha256:") {
		t.Fatalf("flotctl get does not redact the private key:\n%s", r.stdout)
	}

	pair, err := tls.LoadX509KeyPair(clientCert, clientKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, sni := range []string{"a.example", "b.example"} {
		t.Run("go/"+sni, func(t *testing.T) {
			cfg := ca.clientConfig(sni)
			cfg.Certificates = []tls.Certificate{pair}
			waitFor(t, convergeTimeout, "an echo over TLS for "+sni, func() error {
				c, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", listen, cfg)
				if err != nil {
					return err
				}
				defer c.Close()
				if got := c.ConnectionState().PeerCertificates[0].DNSNames[0]; got != sni {
					return fmt.Errorf("served the certificate for %s, want %s", got, sni)
				}
				return echoOver(c, "hello")
			})
		})
	}
	t.Run("go/no client certificate", func(t *testing.T) {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", listen, ca.clientConfig("a.example"))
		if err == nil {
			// TLS 1.3 reports the server's refusal on the first read.
			err = echoOver(c, "hello")
			c.Close()
		}
		if err == nil {
			t.Fatal("a client without a certificate got through")
		}
	})
	t.Run("openssl", func(t *testing.T) {
		args := []string{"s_client", "-connect", listen, "-servername", "b.example",
			"-CAfile", ca.pemPath, "-verify_return_error", "-quiet"}
		if out, err := opensslEcho(openssl, append(args, "-cert", clientCert, "-key", clientKey), "b1:from openssl"); err != nil {
			t.Fatalf("openssl s_client with a client certificate: %v\n%s", err, out)
		}
		if out, err := opensslEcho(openssl, args, "b1:from openssl"); err == nil {
			t.Fatalf("openssl s_client without a client certificate got through:\n%s", out)
		}
	})
}

// opensslEcho runs openssl s_client, says "from openssl", and waits (bounded)
// for a line containing want. s_client -quiet does not hang up on its own,
// so it is stopped once the answer is in.
func opensslEcho(openssl string, args []string, want string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, openssl, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return "", err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return "", err
	}
	// finish stops openssl and returns what it said on stderr: only safe to
	// read once the process has been waited for.
	finish := func() string {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
		return stderr.String()
	}
	if _, err := io.WriteString(stdin, "from openssl\n"); err != nil {
		return finish(), err
	}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if strings.Contains(sc.Text(), want) {
			line := sc.Text()
			finish()
			return line, nil
		}
	}
	return finish(), fmt.Errorf("no %q from the server", want)
}

// TestTLSOriginationWithSNI: the agent accepts plain TCP and speaks TLS to a
// real nginx upstream (nginx `proxy_ssl on; proxy_ssl_name …;
// proxy_ssl_verify on;`), sending a fixed SNI and verifying nginx's
// certificate against a CA.
func TestTLSOriginationWithSNI(t *testing.T) {
	t.Parallel()
	nginx := requirePeer(t, "nginx")
	ca := newTestCA(t)
	dir := t.TempDir()
	cert, key := ca.issue(t, dir, "upstream", "db.internal")
	upstream := freeAddr(t)
	startNginx(t, nginx, dir, fmt.Sprintf(`
    server {
        listen %s ssl;
        server_name db.internal;
        ssl_certificate %s;
        ssl_certificate_key %s;
        location / { default_type text/plain; return 200 "sni=$ssl_server_name proto=$ssl_protocol\n"; }
    }`, upstream, cert, key), upstream)

	cp := startControlPlane(t)
	ag := startAgent(t, cp, "a1", "dc=ams")
	listen := freeAddr(t)
	// origination writes the config: plain TCP in, TLS to nginx verified with caPath.
	origination := func(name, caPath string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(fmt.Sprintf(`
listeners:
  - name: to-db
    address: %q
    tcp: { cluster: db }
clusters:
  - name: db
    tls: { sni: db.internal, ca: %q }
    endpoints: [%q]
`, listen, caPath, upstream)), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	cp.apply(t, origination("origination.yaml", ca.pemPath), "TLS origination with SNI")
	ag.waitReady(t)
	waitFor(t, convergeTimeout, "plain HTTP through the agent to nginx over TLS", func() error {
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + listen + "/")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		if !strings.HasPrefix(string(body), "sni=db.internal proto=TLSv1.") {
			return fmt.Errorf("nginx answered %q", body)
		}
		return nil
	})

	// The same upstream checked against a CA that did not sign it: refused.
	cp.apply(t, origination("bad-ca.yaml", newTestCA(t).pemPath), "wrong CA")
	waitFor(t, convergeTimeout, "the upstream refused for its certificate", func() error {
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + listen + "/")
		if err == nil {
			resp.Body.Close()
			return fmt.Errorf("got %s through an unverified upstream", resp.Status)
		}
		n, merr := ag.metric("flotilla_agent_upstream_ssl_handshake_error")
		if merr != nil || n < 1 {
			return fmt.Errorf("upstream_ssl_handshake_error = %v (%v)", n, merr)
		}
		return nil
	})
}

// echoOver writes one line on c and expects the echo backend's reply.
func echoOver(c net.Conn, msg string) error {
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return err
	}
	if _, err := io.WriteString(c, msg+"\n"); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasSuffix(strings.TrimSpace(line), ":"+msg) {
		return fmt.Errorf("echo answered %q", line)
	}
	return nil
}
