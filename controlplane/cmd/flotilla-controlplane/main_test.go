package main

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestServeMetrics: /metrics serves the registry; a busy default address
// turns /metrics off with a warning, a busy address given on the command
// line is an error, and "" turns it off.
func TestServeMetrics(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "flotilla_controlplane_test_total", Help: "t"}))

	tests := []struct {
		name     string
		cfg      config
		wantErr  string
		wantWarn bool
		wantOff  bool
	}{
		{name: "serves", cfg: config{metricsAddr: "127.0.0.1:0", metricsAddrSet: true}},
		{name: "off", cfg: config{metricsAddr: ""}, wantOff: true},
		{name: "busy default", cfg: config{metricsAddr: busy.Addr().String()}, wantWarn: true, wantOff: true},
		{name: "busy flag", cfg: config{metricsAddr: busy.Addr().String(), metricsAddrSet: true}, wantErr: "metrics listener"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			errc := make(chan error, 1)
			srv, at, err := serveMetrics(tt.cfg, reg, slog.New(slog.NewTextHandler(&logs, nil)), errc)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Contains(logs.String(), "not serving /metrics"); got != tt.wantWarn {
				t.Errorf("warned %v, want %v: %s", got, tt.wantWarn, logs.String())
			}
			if tt.wantOff {
				if srv != nil || at != "off" {
					t.Fatalf("server %v at %q, want off", srv, at)
				}
				return
			}
			defer srv.Close()
			c := http.Client{Timeout: 5 * time.Second}
			resp, err := c.Get("http://" + at + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !strings.Contains(string(body), "flotilla_controlplane_test_total 0") {
				t.Fatalf("/metrics:\n%s", body)
			}
		})
	}
}
