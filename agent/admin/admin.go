// Package admin serves the agent's admin HTTP endpoints, meant for localhost
// (127.0.0.1:9901 by default) and for the people and probes on that machine:
//
//	/ready        200 "ready" once a config runs (from the control plane or from disk), else 503
//	/config_dump  JSON: node, control-plane connection, per xDS type the running
//	              version, the last NACK and the running resources (protojson; SDS
//	              secrets redacted: name, certificates' subject/SANs/expiry and a
//	              SHA-256 of the private key, never the key), and per cluster the
//	              live state of its hosts (health, connections, ejections)
//	/metrics      Prometheus metrics of the agent's registry
//
// The package formats; it holds no state of its own. What it shows comes from
// a State the agent implements.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/flotilla-proxy/flotilla/agent/upstream"
	"github.com/flotilla-proxy/flotilla/agent/xdsclient"
)

// DefaultAddr is where the admin server listens unless told otherwise.
const DefaultAddr = "127.0.0.1:9901"

// State is the agent as the admin pages see it. Its methods are called from
// concurrent requests.
type State interface {
	// Ready reports whether a config runs.
	Ready() bool
	// ConfigDump returns what /config_dump shows. The messages in it are
	// only read.
	ConfigDump() ConfigDump
}

// ConfigDump is the content of /config_dump.
type ConfigDump struct {
	// NodeID and Labels are the agent's xDS identity.
	NodeID string
	Labels map[string]string
	// ControlPlane is the address of the current (or last tried) control
	// plane; Connected whether a stream to it is open.
	ControlPlane string
	Connected    bool
	// FromDisk reports that the running config was loaded from the last good
	// snapshot on disk and no control plane has replaced it yet.
	FromDisk bool
	// Types holds the running config, one entry per xDS type.
	Types []TypeDump
	// Clusters holds the live state of the upstream clusters, in name order.
	Clusters []ClusterDump
}

// ClusterDump is the live state of one upstream cluster.
type ClusterDump struct {
	Name string
	// Panic reports that too few hosts are healthy, so all of them take traffic.
	Panic bool
	// ActiveConnections counts the cluster's open upstream connections.
	ActiveConnections int64
	// Hosts are the cluster's endpoints, in configuration order.
	Hosts []upstream.HostStatus
}

// TypeDump is the running config of one xDS type.
type TypeDump struct {
	TypeURL string
	// Version is the running version_info, empty if none runs.
	Version string
	// LastNACK is the last rejected update of the type, or nil.
	LastNACK *xdsclient.NACK
	// Resources are the running resources, in name order.
	Resources []proto.Message
}

// NewHandler returns the admin endpoints. gatherer backs /metrics.
func NewHandler(state State, gatherer prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprint(w, "flotilla-agent admin\n\n/ready\n/config_dump\n/metrics\n")
	})
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !state.Ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready: no config runs yet")
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("GET /config_dump", func(w http.ResponseWriter, _ *http.Request) {
		b, err := marshalDump(state.ConfigDump())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(b)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	return mux
}

// The JSON shape of /config_dump. Field names follow Envoy's snake_case.
type jsonDump struct {
	Node         jsonNode               `json:"node"`
	ControlPlane jsonControlPlane       `json:"control_plane"`
	FromDisk     bool                   `json:"from_disk"`
	Types        map[string]jsonType    `json:"types"`
	Clusters     map[string]jsonCluster `json:"clusters"`
}

type jsonCluster struct {
	Panic             bool       `json:"panic"`
	ActiveConnections int64      `json:"active_connections"`
	Hosts             []jsonHost `json:"hosts"`
}

type jsonHost struct {
	Address           string `json:"address"`
	Weight            uint32 `json:"weight"`
	Health            string `json:"health"`
	ActiveConnections int64  `json:"active_connections"`
	TimesEjected      uint32 `json:"times_ejected"`
}

type jsonNode struct {
	ID     string            `json:"id"`
	Labels map[string]string `json:"labels"`
}

type jsonControlPlane struct {
	Address   string `json:"address"`
	Connected bool   `json:"connected"`
}

type jsonType struct {
	TypeURL   string            `json:"type_url"`
	Version   string            `json:"version"`
	LastNACK  *jsonNACK         `json:"last_nack,omitempty"`
	Resources []json.RawMessage `json:"resources"`
}

type jsonNACK struct {
	Version string    `json:"version"`
	Message string    `json:"message"`
	Time    time.Time `json:"time"`
}

var resourceJSON = protojson.MarshalOptions{UseProtoNames: true}

func marshalDump(d ConfigDump) ([]byte, error) {
	out := jsonDump{
		Node:         jsonNode{ID: d.NodeID, Labels: d.Labels},
		ControlPlane: jsonControlPlane{Address: d.ControlPlane, Connected: d.Connected},
		FromDisk:     d.FromDisk,
		Types:        make(map[string]jsonType, len(d.Types)),
	}
	if out.Node.Labels == nil {
		out.Node.Labels = map[string]string{}
	}
	for _, t := range d.Types {
		jt := jsonType{TypeURL: t.TypeURL, Version: t.Version, Resources: []json.RawMessage{}}
		if n := t.LastNACK; n != nil {
			jt.LastNACK = &jsonNACK{Version: n.Version, Message: n.Message, Time: n.Time.UTC()}
		}
		for _, m := range t.Resources {
			var b []byte
			var err error
			if sec, ok := m.(*tlsv3.Secret); ok {
				b, err = redactSecret(sec)
			} else if m, err = redactInlineKeys(m); err == nil {
				b, err = resourceJSON.Marshal(m)
			}
			if err != nil {
				return nil, fmt.Errorf("config dump of %s: %w", xdsclient.ShortName(t.TypeURL), err)
			}
			jt.Resources = append(jt.Resources, b)
		}
		out.Types[xdsclient.ShortName(t.TypeURL)] = jt
	}
	out.Clusters = make(map[string]jsonCluster, len(d.Clusters))
	for _, c := range d.Clusters {
		jc := jsonCluster{Panic: c.Panic, ActiveConnections: c.ActiveConnections, Hosts: []jsonHost{}}
		for _, h := range c.Hosts {
			jc.Hosts = append(jc.Hosts, jsonHost{Address: h.Addr.String(), Weight: h.Weight, Health: h.Health.String(),
				ActiveConnections: h.ActiveConnections, TimesEjected: h.TimesEjected})
		}
		out.Clusters[c.Name] = jc
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("config dump: %w", err)
	}
	return append(b, '\n'), nil
}

// Server is a running admin HTTP server.
type Server struct {
	http *http.Server
	ln   net.Listener
	done chan struct{}
}

// Listen binds addr ("" means DefaultAddr) and serves h on it in the
// background until Shutdown.
func Listen(addr string, h http.Handler, logger *slog.Logger) (*Server, error) {
	if addr == "" {
		addr = DefaultAddr
	}
	if logger == nil {
		logger = slog.Default()
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	s := &Server{
		http: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		},
		ln:   ln,
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		if err := s.http.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			logger.Error("admin server stopped", "address", ln.Addr().String(), "error", err)
		}
	}()
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Shutdown stops accepting, waits for requests in flight until ctx is done,
// then closes the rest.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.http.Shutdown(ctx)
	if err != nil {
		s.http.Close()
	}
	<-s.done
	return err
}
