package agent_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-proxy/flotilla/agent"
	"github.com/flotilla-proxy/flotilla/agent/lastgood"
	"github.com/flotilla-proxy/flotilla/agent/runtime/runtimetest"
	"github.com/flotilla-proxy/flotilla/agent/xdsclient"
	"github.com/flotilla-proxy/flotilla/agent/xdsclient/xdstest"
)

// syncBuffer is a log sink shared by the agent's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestTLSListenerEndToEnd: a control plane sends a TLS listener and its SDS secret; the
// agent terminates TLS with it, keeps it in the snapshot (mode 0600) and serves it again
// from disk, and neither /config_dump nor the logs ever show the private key.
func TestTLSListenerEndToEnd(t *testing.T) {
	backend := echoServer(t)
	ca := runtimetest.NewCA("e2e ca")
	certPEM, keyPEM := ca.Issue("db.example", false, "db.example")
	sec := runtimetest.CertSecret(certPEM, keyPEM)
	l := runtimetest.Listener("db-tls", "127.0.0.1", 0, "backend")
	l.FilterChains[0].TransportSocket = runtimetest.TLSSocket(runtimetest.DownstreamTLSContext(nil, sec.GetName()))
	cp := xdstest.NewServer(t, "")
	cp.SetSnapshot(t, nodeID, "v1", l, runtimetest.StaticCluster("backend", runtimetest.Endpoint(backend, 1)), sec)
	dataDir := filepath.Join(t.TempDir(), "agent")

	var logs syncBuffer
	run := func() (*agent.Agent, func()) {
		a, err := agent.New(agent.Options{
			NodeID: nodeID, ControlPlanes: []string{cp.Addr()}, DataDir: dataDir, AdminAddr: "127.0.0.1:0",
			DrainTimeout: time.Second,
			Logger:       slog.New(slog.NewTextHandler(io.MultiWriter(&logs, testWriter{t}), &slog.HandlerOptions{Level: slog.LevelDebug})),
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()
		stop := func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		}
		xdstest.WaitFor(t, timeout, "ready", func() bool {
			if a.AdminAddr() == nil {
				return false
			}
			code, _ := adminGet(t, a, "/ready")
			return code == http.StatusOK
		})
		return a, stop
	}
	handshake := func(a *agent.Agent) {
		t.Helper()
		c, err := tls.Dial("tcp", a.ListenerAddr("db-tls").String(), &tls.Config{ServerName: "db.example", RootCAs: ca.Pool()})
		if err != nil {
			t.Fatalf("TLS through the agent: %v", err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(timeout))
		io.WriteString(c, "over TLS")
		buf := make([]byte, len("over TLS"))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "over TLS" {
			t.Fatalf("echo = %q, %v", buf, err)
		}
	}

	a, stop := run()
	handshake(a)
	xdstest.WaitFor(t, timeout, "SDS ACK", func() bool {
		req, ok := cp.Answered(xdsclient.SecretType, "v1", "v1")
		return ok && req.GetErrorDetail() == nil
	})
	_, body := adminGet(t, a, "/config_dump")
	if !strings.Contains(body, sec.GetName()) || !strings.Contains(body, `"private_key_sha256"`) {
		t.Errorf("/config_dump does not list the secret:\n%s", body)
	}
	path := filepath.Join(dataDir, lastgood.FileName)
	xdstest.WaitFor(t, timeout, "snapshot with the secret", func() bool {
		s, err := lastgood.Load(path)
		if err != nil {
			return false
		}
		for _, ts := range s.GetTypes() {
			if ts.GetTypeUrl() == xdsclient.SecretType && len(ts.GetResources()) == 1 {
				return true
			}
		}
		return false
	})
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("snapshot file: %v, %v; want mode 0600", fi.Mode(), err)
	}
	stop()
	cp.Stop()

	// From disk, with the control plane gone.
	b, stop2 := run()
	defer stop2()
	handshake(b)

	keyLine := strings.Split(string(keyPEM), "\n")[1]
	for what, text := range map[string]string{"/config_dump": body, "the logs": logs.String()} {
		if strings.Contains(text, "PRIVATE KEY") || strings.Contains(text, keyLine) {
			t.Errorf("%s show the private key", what)
		}
	}
}
