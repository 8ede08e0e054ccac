// Package agent assembles flotilla-agent: the xDS client that follows a
// control plane, the data plane (package proxy) that serves the resulting
// config, the last good snapshot on disk, and the admin HTTP server.
//
// TLS certificates and keys arrive as SDS secrets with the rest of the set;
// they are kept in the last good snapshot (a 0600 file) and never shown:
// /config_dump lists a secret by name, certificate facts and a hash of its
// key.
//
// A config change travels: xdsclient (a complete, consistent set) →
// Agent.apply → runtime.Build → proxy.Manager.Apply → save the last good
// snapshot → publish for /config_dump. Statistics travel the other way: every
// Options.ReportInterval package report sends counter deltas, endpoint health
// and the xDS state to the control plane. When the agent starts and a snapshot
// exists on disk, it is applied before the control plane is even dialled, so
// an agent restarting while the control plane is away still serves.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/flotilla-proxy/flotilla/agent/admin"
	"github.com/flotilla-proxy/flotilla/agent/lastgood"
	"github.com/flotilla-proxy/flotilla/agent/proxy"
	"github.com/flotilla-proxy/flotilla/agent/report"
	"github.com/flotilla-proxy/flotilla/agent/runtime"
	"github.com/flotilla-proxy/flotilla/agent/xdsclient"
)

// Version is the agent's build version, sent to the control plane as the
// node's user_agent_version. Release builds set it with
// -ldflags "-X github.com/flotilla-proxy/flotilla/agent.Version=v1.2.3".
var Version = "dev"

// DefaultControlPlane is the control plane dialled when Options.ControlPlanes is empty.
const DefaultControlPlane = "127.0.0.1:18000"

// Options configure an Agent. NodeID is required; every other zero value
// has a useful meaning.
type Options struct {
	// NodeID is the agent's xDS node id, unique in the fleet.
	NodeID string
	// Labels describe the agent (dc, zone, role, ...). They are sent in the
	// node metadata; the control plane picks the agent's config by them.
	Labels map[string]string
	// ControlPlanes are the control-plane addresses (host:port), used one at
	// a time and failed over in order. Empty means DefaultControlPlane.
	ControlPlanes []string
	// DataDir holds the last good snapshot (DataDir/snapshot.pb). It is
	// created if missing. Empty means no snapshot is kept or loaded.
	DataDir string
	// AdminAddr is where the admin HTTP server listens. Empty means
	// 127.0.0.1:9901; use port 0 for any free port (see AdminAddr).
	AdminAddr string
	// DrainTimeout bounds how long connections may run on after their
	// listener is removed, and after Run's context is done. 0 means 30s.
	DrainTimeout time.Duration
	// ReportInterval is how often the agent reports its statistics to the
	// control plane (package report); 0 disables reports.
	ReportInterval time.Duration
	// Logger receives the agent's logs; nil means slog.Default().
	Logger *slog.Logger
}

func (o *Options) drainTimeout() time.Duration {
	if o.DrainTimeout > 0 {
		return o.DrainTimeout
	}
	return proxy.DefaultDrainTimeout
}

// Agent is one flotilla-agent. Create it with New and call Run once.
type Agent struct {
	opts     Options
	log      *slog.Logger
	registry *prometheus.Registry
	manager  *proxy.Manager
	client   *xdsclient.Client
	reporter *report.Reporter // nil when reports are off

	started  atomic.Bool
	draining atomic.Bool
	running  atomic.Pointer[runningConfig]
	admin    atomic.Pointer[admin.Server]
}

// runningConfig is what the data plane serves, as published for the admin pages.
type runningConfig struct {
	set      *runtime.Resources
	versions map[string]string
	fromDisk bool
}

// New checks opts and builds an agent. Nothing is bound or dialled until Run.
func New(opts Options) (*Agent, error) {
	if opts.NodeID == "" {
		return nil, errors.New("agent: node id is empty")
	}
	if opts.DrainTimeout < 0 {
		return nil, fmt.Errorf("agent: negative drain timeout %s", opts.DrainTimeout)
	}
	if opts.ReportInterval < 0 {
		return nil, fmt.Errorf("agent: negative report interval %s", opts.ReportInterval)
	}
	if len(opts.ControlPlanes) == 0 {
		opts.ControlPlanes = []string{DefaultControlPlane}
	}
	for _, cp := range opts.ControlPlanes {
		if _, _, err := net.SplitHostPort(cp); err != nil {
			return nil, fmt.Errorf("agent: control plane %q: %w", cp, err)
		}
	}
	for k := range opts.Labels {
		if k == "" {
			return nil, errors.New("agent: label with an empty name")
		}
	}
	opts.Labels = maps.Clone(opts.Labels)
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}

	a := &Agent{opts: opts, log: opts.Logger, registry: prometheus.NewRegistry()}
	a.registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	a.manager = proxy.NewManager(proxy.Options{
		DrainTimeout: opts.drainTimeout(),
		Logger:       opts.Logger,
		Registerer:   a.registry,
	})
	client, err := xdsclient.New(xdsclient.Options{
		Servers:          opts.ControlPlanes,
		NodeID:           opts.NodeID,
		Labels:           opts.Labels,
		UserAgentVersion: Version,
		Applier:          xdsclient.ApplierFunc(a.apply),
		Registerer:       a.registry,
		Logger:           opts.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	a.client = client
	if opts.ReportInterval > 0 {
		a.reporter, err = report.New(report.Options{
			NodeID:       opts.NodeID,
			Labels:       opts.Labels,
			BuildVersion: Version,
			Servers:      opts.ControlPlanes,
			Current: func() string {
				if st := client.Status(); st.Connected {
					return st.Server
				}
				return ""
			},
			Status:     client.Status,
			Interval:   opts.ReportInterval,
			Gatherer:   a.registry,
			Registerer: a.registry,
			Logger:     opts.Logger,
		})
		if err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
	}
	return a, nil
}

// Run serves until ctx is done: it starts the admin server, applies the last
// good snapshot from disk if there is one, then follows the control planes.
// When ctx is done it stops following, lets open connections finish for up
// to the drain timeout, and returns. The error is nil after a clean drain.
func (a *Agent) Run(ctx context.Context) error {
	if !a.started.CompareAndSwap(false, true) {
		return errors.New("agent: Run called twice")
	}
	if a.opts.DataDir != "" {
		if err := os.MkdirAll(a.opts.DataDir, 0o700); err != nil {
			return fmt.Errorf("agent: data dir: %w", err)
		}
	}
	srv, err := admin.Listen(a.opts.AdminAddr, admin.NewHandler(a, a.registry), a.log)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	a.admin.Store(srv)
	a.log.Info("flotilla-agent starting", "node_id", a.opts.NodeID, "version", Version,
		"control_planes", a.opts.ControlPlanes, "admin_address", srv.Addr().String())

	a.loadLastGood()
	reported := make(chan struct{})
	go func() {
		defer close(reported)
		if a.reporter != nil {
			a.reporter.Run(ctx)
		}
	}()
	runErr := a.client.Run(ctx)
	<-reported

	a.draining.Store(true)
	a.log.Info("shutting down: draining connections", "drain_timeout_seconds", a.opts.drainTimeout().Seconds())
	dctx, cancel := context.WithTimeout(context.Background(), a.opts.drainTimeout())
	defer cancel()
	drainErr := a.manager.Shutdown(dctx)
	if drainErr != nil {
		drainErr = fmt.Errorf("agent: drain: %w", drainErr)
	}
	actx, acancel := context.WithTimeout(context.Background(), time.Second)
	defer acancel()
	srv.Shutdown(actx)
	return errors.Join(runErr, drainErr)
}

// AdminAddr is the admin server's address once Run has bound it, else nil.
func (a *Agent) AdminAddr() net.Addr {
	if s := a.admin.Load(); s != nil {
		return s.Addr()
	}
	return nil
}

// ListenerAddr is the bound address of a running listener, nil if none.
func (a *Agent) ListenerAddr(name string) net.Addr { return a.manager.Addr(name) }

// snapshotPath is where the last good snapshot lives, "" if none is kept.
func (a *Agent) snapshotPath() string {
	if a.opts.DataDir == "" {
		return ""
	}
	return filepath.Join(a.opts.DataDir, lastgood.FileName)
}

// apply installs a set from the control plane (xdsclient.Applier): an error
// NACKs it. The snapshot is saved only after the data plane took the set; a
// failed save is logged, not NACKed — the config runs, it just will not
// survive a restart.
func (a *Agent) apply(_ context.Context, set *runtime.Resources, versions map[string]string) error {
	if err := a.install(set, versions, false); err != nil {
		return err
	}
	if path := a.snapshotPath(); path != "" {
		snap, err := lastgood.FromResources(a.opts.NodeID, set, versions, time.Now())
		if err == nil {
			err = lastgood.Save(path, snap)
		}
		if err != nil {
			a.log.Error("cannot save the last good snapshot", "path", path, "error", err)
		}
	}
	return nil
}

// install builds set into a graph, hands it to the data plane and publishes it.
// Errors are returned as they come so that a *runtime.ResourceError stays
// recognisable to the xDS client.
func (a *Agent) install(set *runtime.Resources, versions map[string]string, fromDisk bool) error {
	g, err := runtime.Build(set)
	if err != nil {
		return err
	}
	if err := a.manager.Apply(g); err != nil {
		return err
	}
	a.running.Store(&runningConfig{set: set, versions: maps.Clone(versions), fromDisk: fromDisk})
	return nil
}

// loadLastGood applies the snapshot on disk, if any. A missing, damaged or no
// longer acceptable snapshot is logged and skipped: the control plane will
// send a config anyway.
func (a *Agent) loadLastGood() {
	path := a.snapshotPath()
	if path == "" {
		return
	}
	snap, err := lastgood.Load(path)
	if errors.Is(err, os.ErrNotExist) {
		a.log.Info("no last good snapshot on disk", "path", path)
		return
	}
	if err != nil {
		a.log.Warn("ignoring the last good snapshot", "error", err)
		return
	}
	set, versions, err := lastgood.ToResources(snap)
	if err == nil {
		err = a.install(set, versions, true)
	}
	if err != nil {
		a.log.Warn("ignoring the last good snapshot", "path", path, "error", err)
		return
	}
	a.client.SetRunning(set, versions)
	var attrs []any
	for _, t := range xdsclient.Types {
		if v, ok := versions[t]; ok {
			attrs = append(attrs, xdsclient.ShortName(t), v)
		}
	}
	a.log.Info("serving last good snapshot from disk", "path", path,
		"saved_at", snap.GetSavedAt().AsTime(), slog.Group("versions", attrs...))
}

// Ready reports whether a config with listeners runs — one that has an LDS
// version, even if it is empty — and the agent is not shutting down
// (admin.State). Clusters alone, applied while the listeners are still on
// their way, do not make the agent ready.
func (a *Agent) Ready() bool {
	r := a.running.Load()
	if r == nil || a.draining.Load() {
		return false
	}
	_, ok := r.versions[xdsclient.ListenerType]
	return ok
}

// ConfigDump returns the running config, the xDS client's state and the live state of
// the upstream clusters (admin.State).
func (a *Agent) ConfigDump() admin.ConfigDump {
	st := a.client.Status()
	r := a.running.Load()
	d := admin.ConfigDump{
		NodeID:       a.opts.NodeID,
		Labels:       a.opts.Labels,
		ControlPlane: st.Server,
		Connected:    st.Connected,
		FromDisk:     r != nil && r.fromDisk,
	}
	for _, t := range xdsclient.Types {
		td := admin.TypeDump{TypeURL: t, LastNACK: st.Types[t].LastNACK}
		if r != nil {
			td.Version = r.versions[t]
			items := xdsclient.Get(r.set, t)
			for _, name := range xdsclient.SortedNames(items) {
				td.Resources = append(td.Resources, items[name])
			}
		}
		d.Types = append(d.Types, td)
	}
	clusters := a.manager.Upstreams().Clusters()
	for _, name := range slices.Sorted(maps.Keys(clusters)) {
		c := clusters[name]
		d.Clusters = append(d.Clusters, admin.ClusterDump{Name: name, Panic: c.Panic(),
			ActiveConnections: c.ActiveConnections(), Hosts: c.Hosts()})
	}
	return d
}

var _ admin.State = (*Agent)(nil)
