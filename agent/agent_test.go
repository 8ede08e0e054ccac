package agent_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-proxy/flotilla/agent"
	"github.com/flotilla-proxy/flotilla/agent/lastgood"
	"github.com/flotilla-proxy/flotilla/agent/runtime/runtimetest"
	"github.com/flotilla-proxy/flotilla/agent/xdsclient"
	"github.com/flotilla-proxy/flotilla/agent/xdsclient/xdstest"
)

const (
	nodeID  = "edge-ams-1"
	timeout = 5 * time.Second
)

// echoServer accepts connections on loopback and writes back what it reads.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// startAgent runs an agent until stop is called or the test ends.
func startAgent(t *testing.T, dataDir string, controlPlanes ...string) (a *agent.Agent, stop func()) {
	t.Helper()
	a, err := agent.New(agent.Options{
		NodeID:        nodeID,
		Labels:        map[string]string{"dc": "ams", "role": "edge"},
		ControlPlanes: controlPlanes,
		DataDir:       dataDir,
		AdminAddr:     "127.0.0.1:0",
		DrainTimeout:  time.Second,
		Logger:        slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var stopped bool
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(timeout):
			t.Error("Run did not return after its context was cancelled")
		}
	}
	t.Cleanup(stop)
	xdstest.WaitFor(t, timeout, "admin server", func() bool { return a.AdminAddr() != nil })
	return a, stop
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// roundTrip sends msg through the agent's listener and returns the echo.
func roundTrip(t *testing.T, addr net.Addr, msg string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr.String(), timeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("read through the proxy: %v", err)
	}
	return string(buf)
}

func adminGet(t *testing.T, a *agent.Agent, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + a.AdminAddr().String() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

type dump struct {
	ControlPlane struct {
		Connected bool `json:"connected"`
	} `json:"control_plane"`
	FromDisk bool `json:"from_disk"`
	Types    map[string]struct {
		Version   string           `json:"version"`
		Resources []map[string]any `json:"resources"`
	} `json:"types"`
	Clusters map[string]struct {
		Hosts []struct {
			Address string `json:"address"`
			Health  string `json:"health"`
		} `json:"hosts"`
	} `json:"clusters"`
}

func configDump(t *testing.T, a *agent.Agent) dump {
	t.Helper()
	code, body := adminGet(t, a, "/config_dump")
	if code != http.StatusOK {
		t.Fatalf("/config_dump = %d %s", code, body)
	}
	var d dump
	if err := json.Unmarshal([]byte(body), &d); err != nil {
		t.Fatalf("/config_dump: %v\n%s", err, body)
	}
	return d
}

func TestProxiesAndServesLastGoodAfterRestart(t *testing.T) {
	backend := echoServer(t)
	dataDir := filepath.Join(t.TempDir(), "agent") // created by the agent
	cp := xdstest.NewServer(t, "")
	cp.SetSnapshot(t, nodeID, "v1",
		runtimetest.Listener("echo", "127.0.0.1", 0, "backend"),
		runtimetest.EDSCluster("backend"),
		runtimetest.LoadAssignment("backend", runtimetest.Endpoint(backend, 1)))

	// First life: config from the control plane.
	a, stop := startAgent(t, dataDir, cp.Addr())
	xdstest.WaitFor(t, timeout, "ready", func() bool {
		code, _ := adminGet(t, a, "/ready")
		return code == http.StatusOK
	})
	if got := roundTrip(t, a.ListenerAddr("echo"), "hello, flotilla"); got != "hello, flotilla" {
		t.Errorf("echo through the agent = %q", got)
	}
	xdstest.WaitFor(t, timeout, "xDS ACKs", func() bool {
		_, ok := cp.Answered(xdsclient.ListenerType, "v1", "v1")
		return ok
	})
	d := configDump(t, a)
	if d.FromDisk || !d.ControlPlane.Connected || d.Types["lds"].Version != "v1" || len(d.Types["lds"].Resources) != 1 {
		t.Errorf("config dump in first life = %+v", d)
	}
	if h := d.Clusters["backend"].Hosts; len(h) != 1 || h[0].Address != backend || h[0].Health != "healthy" {
		t.Errorf("config dump hosts of backend = %+v, want %s healthy", h, backend)
	}
	_, metrics := adminGet(t, a, "/metrics")
	for _, want := range []string{"flotilla_agent_xds_connected 1", `flotilla_agent_xds_updates_total{result="ack",type="lds"} 1`, "go_goroutines", "process_"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	xdstest.WaitFor(t, timeout, "snapshot on disk", func() bool {
		_, err := lastgood.Load(filepath.Join(dataDir, lastgood.FileName))
		return err == nil
	})
	stop()
	cp.Stop()

	// Second life: the control plane is gone; the snapshot on disk serves.
	b, _ := startAgent(t, dataDir, cp.Addr())
	xdstest.WaitFor(t, timeout, "ready from disk", func() bool {
		code, _ := adminGet(t, b, "/ready")
		return code == http.StatusOK
	})
	if got := roundTrip(t, b.ListenerAddr("echo"), "still here"); got != "still here" {
		t.Errorf("echo through the restarted agent = %q", got)
	}
	d = configDump(t, b)
	if !d.FromDisk || d.ControlPlane.Connected || d.Types["lds"].Version != "v1" || d.Types["cds"].Version != "v1" {
		t.Errorf("config dump from disk = %+v", d)
	}

	// The control plane comes back with v2: the agent follows it.
	cp2 := xdstest.NewServer(t, cp.Addr())
	cp2.SetSnapshot(t, nodeID, "v2",
		runtimetest.Listener("echo", "127.0.0.1", 0, "backend"),
		runtimetest.EDSCluster("backend"),
		runtimetest.LoadAssignment("backend", runtimetest.Endpoint(backend, 1)))
	xdstest.WaitFor(t, timeout, "v2 from the control plane", func() bool {
		d := configDump(t, b)
		return !d.FromDisk && d.Types["lds"].Version == "v2"
	})
	if got := roundTrip(t, b.ListenerAddr("echo"), "v2"); got != "v2" {
		t.Errorf("echo after v2 = %q", got)
	}
}

func TestNoSnapshotNotReady(t *testing.T) {
	cp := xdstest.NewServer(t, "")
	cp.Stop()
	dataDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dataDir, lastgood.FileName), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	a, _ := startAgent(t, dataDir, cp.Addr())
	if code, _ := adminGet(t, a, "/ready"); code != http.StatusServiceUnavailable {
		t.Errorf("/ready with a corrupt snapshot and no control plane = %d, want 503", code)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts agent.Options
	}{
		{"no node id", agent.Options{}},
		{"bad control plane", agent.Options{NodeID: "n", ControlPlanes: []string{"no-port"}}},
		{"empty label name", agent.Options{NodeID: "n", Labels: map[string]string{"": "x"}}},
		{"negative drain", agent.Options{NodeID: "n", DrainTimeout: -time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := agent.New(tc.opts); err == nil {
				t.Error("New succeeded")
			}
		})
	}
}

func TestRunFailsOnTakenAdminAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := agent.New(agent.Options{NodeID: "n", AdminAddr: ln.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "admin") {
		t.Errorf("Run = %v, want an admin listen error", err)
	}
	if err := a.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("second Run = %v, want an error", err)
	}
}
