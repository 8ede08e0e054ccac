package admin_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/flotilla-proxy/flotilla/agent/admin"
	"github.com/flotilla-proxy/flotilla/agent/runtime/runtimetest"
	"github.com/flotilla-proxy/flotilla/agent/upstream"
	"github.com/flotilla-proxy/flotilla/agent/xdsclient"
)

// state is a State whose readiness the test flips.
type state struct {
	ready atomic.Bool
	dump  admin.ConfigDump
}

func (s *state) Ready() bool                  { return s.ready.Load() }
func (s *state) ConfigDump() admin.ConfigDump { return s.dump }

func newState() *state {
	nackTime := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	return &state{dump: admin.ConfigDump{
		NodeID:       "edge-1",
		Labels:       map[string]string{"dc": "ams"},
		ControlPlane: "127.0.0.1:18000",
		Connected:    true,
		Types: []admin.TypeDump{
			{TypeURL: xdsclient.ClusterType, Version: "v3", Resources: []proto.Message{runtimetest.EDSCluster("pacs")}},
			{TypeURL: xdsclient.EndpointType, Version: "v3", Resources: []proto.Message{
				runtimetest.LoadAssignment("pacs", runtimetest.Endpoint("192.0.2.3:4242", 1)),
			}},
			{
				TypeURL: xdsclient.ListenerType, Version: "v2",
				LastNACK:  &xdsclient.NACK{Version: "v3", Message: `listener "dicom": listener_filters: not supported`, Time: nackTime},
				Resources: []proto.Message{runtimetest.Listener("dicom", "::", 4242, "pacs")},
			},
		},
		Clusters: []admin.ClusterDump{{Name: "pacs", ActiveConnections: 2, Hosts: []upstream.HostStatus{
			{Addr: netip.MustParseAddrPort("192.0.2.3:4242"), Weight: 1, Health: upstream.Ejected, ActiveConnections: 2, TimesEjected: 1},
		}}},
	}}
}

func get(t *testing.T, h http.Handler, path string) (int, string, http.Header) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String(), rec.Header()
}

func TestReady(t *testing.T) {
	st := newState()
	h := admin.NewHandler(st, prometheus.NewRegistry())
	for _, tc := range []struct {
		ready bool
		code  int
		body  string
	}{
		{false, http.StatusServiceUnavailable, "not ready"},
		{true, http.StatusOK, "ready\n"},
	} {
		st.ready.Store(tc.ready)
		code, body, _ := get(t, h, "/ready")
		if code != tc.code || !strings.HasPrefix(body, tc.body) {
			t.Errorf("ready=%v: /ready = %d %q, want %d %q", tc.ready, code, body, tc.code, tc.body)
		}
	}
}

func TestConfigDump(t *testing.T) {
	st := newState()
	st.dump.FromDisk = true
	code, body, hdr := get(t, admin.NewHandler(st, prometheus.NewRegistry()), "/config_dump")
	if code != http.StatusOK || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("/config_dump = %d %s", code, hdr.Get("Content-Type"))
	}
	var dump struct {
		Node struct {
			ID     string            `json:"id"`
			Labels map[string]string `json:"labels"`
		} `json:"node"`
		ControlPlane struct {
			Address   string `json:"address"`
			Connected bool   `json:"connected"`
		} `json:"control_plane"`
		FromDisk bool `json:"from_disk"`
		Types    map[string]struct {
			TypeURL  string `json:"type_url"`
			Version  string `json:"version"`
			LastNACK *struct {
				Version string    `json:"version"`
				Message string    `json:"message"`
				Time    time.Time `json:"time"`
			} `json:"last_nack"`
			Resources []map[string]any `json:"resources"`
		} `json:"types"`
	}
	if err := json.Unmarshal([]byte(body), &dump); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, body)
	}
	if dump.Node.ID != "edge-1" || dump.Node.Labels["dc"] != "ams" || dump.ControlPlane.Address != "127.0.0.1:18000" ||
		!dump.ControlPlane.Connected || !dump.FromDisk {
		t.Errorf("header fields wrong:\n%s", body)
	}
	if len(dump.Types) != 3 {
		t.Fatalf("types = %d, want 3:\n%s", len(dump.Types), body)
	}
	l := dump.Types["lds"]
	if l.TypeURL != xdsclient.ListenerType || l.Version != "v2" || len(l.Resources) != 1 {
		t.Fatalf("lds = %+v", l)
	}
	if l.LastNACK == nil || l.LastNACK.Version != "v3" || !strings.Contains(l.LastNACK.Message, "listener_filters") ||
		!l.LastNACK.Time.Equal(time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)) {
		t.Errorf("lds last_nack = %+v", l.LastNACK)
	}
	if dump.Types["cds"].LastNACK != nil {
		t.Error("cds has a last_nack")
	}
	// Resources are protojson with Envoy's field names, Anys expanded.
	if l.Resources[0]["name"] != "dicom" || !strings.Contains(body, `"filter_chains"`) ||
		!strings.Contains(body, `"@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"`) {
		t.Errorf("listener resource not dumped as expected:\n%s", body)
	}
	if got := dump.Types["eds"].Resources[0]["cluster_name"]; got != "pacs" {
		t.Errorf("eds cluster_name = %v", got)
	}
	// Live host state.
	if !strings.Contains(body, `"clusters": {
    "pacs": {
      "panic": false,
      "active_connections": 2,
      "hosts": [
        {
          "address": "192.0.2.3:4242",
          "weight": 1,
          "health": "ejected",
          "active_connections": 2,
          "times_ejected": 1
        }
      ]
    }
  }`) {
		t.Errorf("clusters not dumped as expected:\n%s", body)
	}
}

func TestConfigDumpEmpty(t *testing.T) {
	code, body, _ := get(t, admin.NewHandler(&state{}, prometheus.NewRegistry()), "/config_dump")
	if code != http.StatusOK || !strings.Contains(body, `"labels": {}`) || !strings.Contains(body, `"types": {}`) ||
		!strings.Contains(body, `"clusters": {}`) {
		t.Errorf("/config_dump of nothing = %d\n%s", code, body)
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "flotilla_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Add(3)
	code, body, _ := get(t, admin.NewHandler(newState(), reg), "/metrics")
	if code != http.StatusOK || !strings.Contains(body, "flotilla_test_total 3") {
		t.Errorf("/metrics = %d\n%s", code, body)
	}
}

func TestUnknownPathAndMethod(t *testing.T) {
	h := admin.NewHandler(newState(), prometheus.NewRegistry())
	if code, _, _ := get(t, h, "/nope"); code != http.StatusNotFound {
		t.Errorf("/nope = %d, want 404", code)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/ready", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /ready = %d, want 405", rec.Code)
	}
}

func TestListenServesAndShutsDown(t *testing.T) {
	st := newState()
	st.ready.Store(true)
	srv, err := admin.Listen("127.0.0.1:0", admin.NewHandler(st, prometheus.NewRegistry()), nil)
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + srv.Addr().String() + "/ready"
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "ready\n" {
		t.Errorf("GET /ready = %d %q", resp.StatusCode, body)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(url); err == nil {
		t.Error("server still answers after Shutdown")
	}

	// A taken address is reported, not ignored.
	other, err := admin.Listen("127.0.0.1:0", http.NotFoundHandler(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Shutdown(context.Background()) })
	if _, err := admin.Listen(other.Addr().String(), http.NotFoundHandler(), nil); err == nil {
		t.Error("Listen on a taken address succeeded")
	}
}

// TestConfigDumpRedactsSecrets: an SDS secret is shown by name with its certificate's
// subject, SANs and expiry and a SHA-256 of its key, never the key.
func TestConfigDumpRedactsSecrets(t *testing.T) {
	ca := runtimetest.NewCA("dump ca")
	certPEM, keyPEM := ca.Issue("db.example", false, "db.example", "192.0.2.7")
	sec := runtimetest.CertSecret(certPEM, keyPEM)
	st := newState()
	st.dump.Types = append(st.dump.Types, admin.TypeDump{TypeURL: xdsclient.SecretType, Version: "v3", Resources: []proto.Message{sec}})
	code, body, _ := get(t, admin.NewHandler(st, prometheus.NewRegistry()), "/config_dump")
	if code != http.StatusOK {
		t.Fatalf("/config_dump = %d %s", code, body)
	}
	if strings.Contains(body, "PRIVATE KEY") || strings.Contains(body, strings.Split(string(keyPEM), "\n")[1]) {
		t.Fatalf("/config_dump shows the private key:\n%s", body)
	}
	var dump struct {
		Types map[string]struct {
			Resources []struct {
				Name         string `json:"name"`
				Type         string `json:"type"`
				Certificates []struct {
					Subject  string    `json:"subject"`
					DNSNames []string  `json:"dns_names"`
					IPs      []string  `json:"ip_addresses"`
					NotAfter time.Time `json:"not_after"`
				} `json:"certificates"`
				KeySHA256 string `json:"private_key_sha256"`
			} `json:"resources"`
		} `json:"types"`
	}
	if err := json.Unmarshal([]byte(body), &dump); err != nil {
		t.Fatal(err)
	}
	rs := dump.Types["sds"].Resources
	if len(rs) != 1 {
		t.Fatalf("sds resources = %+v", rs)
	}
	got := rs[0]
	sum := sha256.Sum256(keyPEM)
	if got.Name != sec.GetName() || got.Type != "tls_certificate" || got.KeySHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("secret = %+v", got)
	}
	if len(got.Certificates) != 1 || got.Certificates[0].Subject != "CN=db.example" ||
		strings.Join(got.Certificates[0].DNSNames, ",") != "db.example" || strings.Join(got.Certificates[0].IPs, ",") != "192.0.2.7" ||
		got.Certificates[0].NotAfter.IsZero() {
		t.Errorf("certificates = %+v", got.Certificates)
	}
}
