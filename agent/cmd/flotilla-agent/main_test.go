package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/flotilla-proxy/flotilla/agent"
)

// TestMain lets a test run the real main in a child process.
func TestMain(m *testing.M) {
	if os.Getenv("FLOTILLA_AGENT_RUN_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

func noEnv(string) string { return "" }

func TestParseFlags(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(*testing.T, *config)
		wantErr string
	}{
		{name: "defaults", check: func(t *testing.T, c *config) {
			host, _ := os.Hostname()
			o := c.opts
			if o.NodeID != host || len(o.ControlPlanes) != 1 || o.ControlPlanes[0] != "127.0.0.1:18000" ||
				o.DataDir != "/var/lib/flotilla-agent" || o.AdminAddr != "127.0.0.1:9901" || o.DrainTimeout != 30*time.Second ||
				o.ReportInterval != 5*time.Second || len(o.Labels) != 0 || c.logLevel.String() != "INFO" || c.version {
				t.Errorf("defaults = %+v", c)
			}
		}},
		{name: "everything", args: []string{
			"--control-plane", "cp1:18000, cp2:18000", "--node-id", "edge-7", "--labels", "dc=ams, role=edge",
			"--data-dir", "/tmp/x", "--admin-addr", "127.0.0.1:0", "--drain-timeout", "5s", "--log-level", "debug",
		}, check: func(t *testing.T, c *config) {
			o := c.opts
			if strings.Join(o.ControlPlanes, ",") != "cp1:18000,cp2:18000" || o.NodeID != "edge-7" ||
				o.Labels["dc"] != "ams" || o.Labels["role"] != "edge" || len(o.Labels) != 2 || o.DataDir != "/tmp/x" ||
				o.AdminAddr != "127.0.0.1:0" || o.DrainTimeout != 5*time.Second || c.logLevel.String() != "DEBUG" {
				t.Errorf("parsed = %+v", c)
			}
		}},
		{name: "environment", args: []string{"--node-id", "from-flag"},
			env: map[string]string{"FLOTILLA_NODE_ID": "from-env", "FLOTILLA_LABELS": "dc=fra", "FLOTILLA_CONTROL_PLANE": "cp:1"},
			check: func(t *testing.T, c *config) {
				if c.opts.NodeID != "from-flag" || c.opts.Labels["dc"] != "fra" || c.opts.ControlPlanes[0] != "cp:1" {
					t.Errorf("flag should win over env, env fill the rest: %+v", c.opts)
				}
			}},
		{name: "version", args: []string{"--version"}, check: func(t *testing.T, c *config) {
			if !c.version {
				t.Error("version not set")
			}
		}},
		{name: "unknown flag", args: []string{"--colour"}, wantErr: "flag provided but not defined"},
		{name: "bad duration", args: []string{"--drain-timeout", "soon"}, wantErr: "drain-timeout"},
		{name: "negative duration", args: []string{"--drain-timeout", "-1s"}, wantErr: "must not be negative"},
		{name: "reports off", args: []string{"--report-interval", "0"}, check: func(t *testing.T, c *config) {
			if c.opts.ReportInterval != 0 {
				t.Errorf("report interval = %s, want 0", c.opts.ReportInterval)
			}
		}},
		{name: "negative report interval", args: []string{"--report-interval", "-5s"}, wantErr: "--report-interval must not be negative"},
		{name: "bad level", args: []string{"--log-level", "trace"}, wantErr: "--log-level must be info or debug"},
		{name: "bad label", args: []string{"--labels", "dc"}, wantErr: "--labels needs k=v"},
		{name: "duplicate label", args: []string{"--labels", "dc=ams,dc=fra"}, wantErr: "twice"},
		{name: "bad control plane", args: []string{"--control-plane", "nohost"}, wantErr: "--control-plane needs host:port"},
		{name: "empty control plane", args: []string{"--control-plane", ","}, wantErr: "--control-plane needs host:port"},
		{name: "stray argument", args: []string{"serve"}, wantErr: `unexpected argument "serve"`},
		{name: "bad env", env: map[string]string{"FLOTILLA_DRAIN_TIMEOUT": "x"}, wantErr: "FLOTILLA_DRAIN_TIMEOUT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			getenv := func(k string) string { return tc.env[k] }
			cfg, err := parseFlags(tc.args, getenv, io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "\n") {
					t.Errorf("error spans lines: %q", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, cfg)
		})
	}
}

func TestRunExitCodes(t *testing.T) {
	for _, tc := range []struct {
		name        string
		args        []string
		code        int
		out, errOut string
	}{
		{"version", []string{"--version"}, 0, "flotilla-agent " + agent.Version + "\n", ""},
		{"help", []string{"--help"}, 0, "", "Usage: flotilla-agent"},
		{"bad flag", []string{"--nope"}, 2, "", "flotilla-agent: flag provided but not defined: -nope (see --help)\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tc.args, noEnv, &stdout, &stderr)
			if code != tc.code || stdout.String() != tc.out || !strings.HasPrefix(stderr.String(), tc.errOut) {
				t.Errorf("run = %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
			}
			if tc.code == 2 && strings.Count(stderr.String(), "\n") != 1 {
				t.Errorf("a bad flag should print one line, got %q", stderr.String())
			}
		})
	}
}

// lockedBuffer is a bytes.Buffer safe for the logger and the test at once.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestRunLogsJSONAndStopsCleanly(t *testing.T) {
	var stdout bytes.Buffer
	var stderr lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() {
		done <- run(ctx, []string{"--control-plane", "127.0.0.1:1", "--admin-addr", "127.0.0.1:0",
			"--data-dir", t.TempDir(), "--node-id", "t", "--drain-timeout", "1s"}, noEnv, &stdout, &stderr)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(stderr.String(), "cannot reach control plane") {
		if time.Now().After(deadline) {
			t.Fatalf("no connection attempt logged:\n%s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("exit code after cancel = %d, want 0", code)
	}
	for _, line := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil || m["msg"] == nil || m["level"] == nil {
			t.Errorf("log line is not slog JSON: %q", line)
		}
	}
	if !strings.Contains(stderr.String(), `"msg":"flotilla-agent stopped"`) {
		t.Errorf("no stop line:\n%s", stderr.String())
	}
}

// TestSIGTERMDrainsAndExitsZero runs the real main in a child process.
func TestSIGTERMDrainsAndExitsZero(t *testing.T) {
	cmd := exec.Command(os.Args[0], "--control-plane", "127.0.0.1:1", "--admin-addr", "127.0.0.1:0",
		"--data-dir", t.TempDir(), "--node-id", "sig", "--drain-timeout", "1s")
	cmd.Env = append(os.Environ(), "FLOTILLA_AGENT_RUN_MAIN=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	// Find the admin address in the startup line, then check the server is up.
	lines := make(chan map[string]any)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				lines <- m
			}
		}
	}()
	var adminAddr string
	timer := time.NewTimer(5 * time.Second)
	defer timer.Stop()
	for adminAddr == "" {
		select {
		case m, ok := <-lines:
			if !ok {
				t.Fatal("agent exited before starting")
			}
			if m["msg"] == "flotilla-agent starting" {
				adminAddr, _ = m["admin_address"].(string)
			}
		case <-timer.C:
			t.Fatal("no startup line")
		}
	}
	resp, err := http.Get("http://" + adminAddr + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/ready without config = %d, want 503", resp.StatusCode)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var stopped bool
	for m := range lines {
		if m["msg"] == "flotilla-agent stopped" {
			stopped = true
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("exit after SIGTERM: %v, want status 0", err)
	}
	if !stopped {
		t.Error("no stop line logged")
	}
}
