package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Status is what GET /status returns: the state of one process's agents.
type Status struct {
	Agents    int    `json:"agents"`
	Connected int    `json:"connected"`
	Synced    int    `json:"synced"` // every subscribed type ACKed on the current stream
	Streams   int64  `json:"streams_opened"`
	Failures  int64  `json:"streams_failed"`
	FirstErr  string `json:"first_error,omitempty"`
	// Versions counts, per type, the agents that ACKed each version.
	Versions map[string]map[string]int `json:"versions"`
}

// Acks is what GET /acks?version=V returns: per agent and type, when the
// agent first ACKed V (Unix nanoseconds), 0 when it has not: the time it
// came back to V if it went back to V from another version, and the time it
// ACKed V even after it went on to another one.
type Acks struct {
	At [][numTypes]int64 `json:"at"`
}

// Synced is what GET /synced returns: per agent, when its current stream
// first had every subscribed type ACKed (Unix nanoseconds), 0 when not yet.
type Synced struct {
	At []int64 `json:"at"`
}

func (f *fleet) status() Status {
	st := Status{Agents: len(f.agents), Streams: f.streams.Load(), Failures: f.fails.Load(), Versions: map[string]map[string]int{}}
	f.firstErrMu.Lock()
	st.FirstErr = f.firstErr
	f.firstErrMu.Unlock()
	for _, a := range f.agents {
		a.mu.Lock()
		if a.connected {
			st.Connected++
		}
		if a.connected && a.syncedAt != 0 {
			st.Synced++
		}
		for t := range numTypes {
			if n := len(a.acked[t]); n > 0 {
				v := a.acked[t][n-1].version
				if st.Versions[typeNames[t]] == nil {
					st.Versions[typeNames[t]] = map[string]int{}
				}
				st.Versions[typeNames[t]][v]++
			}
		}
		a.mu.Unlock()
	}
	return st
}

func (f *fleet) acks(version string) Acks {
	out := Acks{At: make([][numTypes]int64, len(f.agents))}
	for i, a := range f.agents {
		a.mu.Lock()
		for t := range numTypes {
			for _, k := range slices.Backward(a.acked[t]) {
				if k.version == version {
					out.At[i][t] = k.at
					break
				}
			}
		}
		a.mu.Unlock()
	}
	return out
}

func (f *fleet) synced() Synced {
	out := Synced{At: make([]int64, len(f.agents))}
	for i, a := range f.agents {
		a.mu.Lock()
		if a.connected {
			out.At[i] = a.syncedAt
		}
		a.mu.Unlock()
	}
	return out
}

func (f *fleet) handler() http.Handler {
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		if err := json.NewEncoder(w).Encode(v); err != nil {
			f.opts.Logger.Warn("cannot write a reply", "error", err)
		}
	}
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) { reply(w, f.status()) })
	mux.HandleFunc("GET /acks", func(w http.ResponseWriter, r *http.Request) {
		v := r.URL.Query().Get("version")
		if v == "" {
			http.Error(w, "version is required", http.StatusBadRequest)
			return
		}
		reply(w, f.acks(v))
	})
	mux.HandleFunc("GET /synced", func(w http.ResponseWriter, _ *http.Request) { reply(w, f.synced()) })
	// The load process's own profile, to see what the simulation costs.
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	return mux
}

// runCommand is `fleetload run`.
func runCommand(args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	var opts fleetOptions
	fs.StringVar(&opts.Server, "xds", "127.0.0.1:18000", "control plane xDS `address`")
	fs.IntVar(&opts.Agents, "agents", 1000, "agents to simulate")
	fs.IntVar(&opts.First, "first", 0, "index of the first agent (node ids and labels count from it)")
	fs.StringVar(&opts.IDPrefix, "id-prefix", "fleet-", "node id prefix")
	labels := fs.String("labels", "role=edge", "labels every agent carries besides dc=dc{i%3}, k=v,...")
	subscribe := fs.String("subscribe", "cds,eds,lds,rds", "types to subscribe to (cds, eds, lds, rds, sds)")
	fs.IntVar(&opts.AgentsPerConn, "agents-per-conn", 1, "agents sharing one gRPC connection (1: each its own, as in reality)")
	fs.IntVar(&opts.ConnectRate, "connect-rate", 0, "agents started per second (0: all at once)")
	fs.DurationVar(&opts.BackoffMin, "backoff-min", 250*time.Millisecond, "first reconnect backoff ceiling (full jitter)")
	fs.DurationVar(&opts.BackoffMax, "backoff-max", 30*time.Second, "largest reconnect backoff ceiling")
	httpAddr := fs.String("http", "127.0.0.1:0", "`address` of the status endpoint")
	addrFile := fs.String("addr-file", "", "write the status endpoint's address to this `file` once serving")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var err error
	if opts.Subscribe, err = parseTypes(*subscribe); err != nil {
		return fmt.Errorf("--subscribe: %w", err)
	}
	if opts.Labels, err = parseLabels(*labels); err != nil {
		return fmt.Errorf("--labels: %w", err)
	}
	opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	if os.Getenv("GOGC") == "" {
		// Collect less often: the agents' memory is not what is measured,
		// the CPU the load processes take from the control plane is.
		debug.SetGCPercent(400)
	}
	f, err := newFleet(opts)
	if err != nil {
		return err
	}
	defer f.close()

	ln, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		return fmt.Errorf("status endpoint: %w", err)
	}
	srv := &http.Server{Handler: f.handler(), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln) //nolint:errcheck // ends with Shutdown
	defer srv.Shutdown(context.Background())
	if *addrFile != "" {
		tmp := *addrFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(ln.Addr().String()+"\n"), 0o644); err != nil {
			return fmt.Errorf("--addr-file: %w", err)
		}
		if err := os.Rename(tmp, *addrFile); err != nil {
			return fmt.Errorf("--addr-file: %w", err)
		}
	}
	opts.Logger.Info("simulating agents", "agents", opts.Agents, "first", opts.First, "xds", opts.Server,
		"agents_per_conn", opts.AgentsPerConn, "status", ln.Addr().String())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	f.run(ctx)
	return nil
}

func parseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	if s == "" {
		return out, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" || v == "" {
			return nil, fmt.Errorf("want k=v pairs separated by commas, got %q", kv)
		}
		if k == "dc" {
			return nil, errors.New("dc is set per agent (dc0, dc1, dc2)")
		}
		out[k] = v
	}
	return out, nil
}
