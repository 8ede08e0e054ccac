package admin_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/flotilla-proxy/flotilla/agent/admin"
	"github.com/flotilla-proxy/flotilla/agent/runtime/runtimetest"
	"github.com/flotilla-proxy/flotilla/agent/xdsclient"
)

// TestConfigDumpShowsRoutes: RDS route configurations are dumped under "rds", and an HTTP
// listener's http_connection_manager (an Any) is rendered in full.
func TestConfigDumpShowsRoutes(t *testing.T) {
	st := newState()
	l := runtimetest.HTTPListener("web", "0.0.0.0", 8080, runtimetest.HTTPConnectionManager("web", "web"))
	rc := runtimetest.RouteConfig("web", runtimetest.VirtualHost("api", []string{"api.example.com"}, runtimetest.PrefixRoute("/", "backend")))
	st.dump.Types = append(st.dump.Types,
		admin.TypeDump{TypeURL: xdsclient.ListenerType, Version: "v7", Resources: []proto.Message{l}},
		admin.TypeDump{TypeURL: xdsclient.RouteType, Version: "v7", Resources: []proto.Message{rc}})
	code, body, _ := get(t, admin.NewHandler(st, prometheus.NewRegistry()), "/config_dump")
	if code != http.StatusOK {
		t.Fatalf("/config_dump = %d %s", code, body)
	}
	var dump struct {
		Types map[string]struct {
			Version   string           `json:"version"`
			Resources []map[string]any `json:"resources"`
		} `json:"types"`
	}
	if err := json.Unmarshal([]byte(body), &dump); err != nil {
		t.Fatal(err)
	}
	r := dump.Types["rds"]
	if r.Version != "v7" || len(r.Resources) != 1 || r.Resources[0]["name"] != "web" {
		t.Fatalf("rds = %+v", r)
	}
	if !strings.Contains(body, `"route_config_name": "web"`) || !strings.Contains(body, `"api.example.com"`) {
		t.Errorf("dump lacks the manager's RDS name or the route's domain:\n%s", body)
	}
}
