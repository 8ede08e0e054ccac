// Command flotilla-controlplane stores the fleet's configuration versions and
// streams them to agents over xDS.
//
// It serves two gRPC ports: xDS (ADS, and the agents' stats reports) for
// agents, and the admin API for flotctl, which binds to localhost by default
// because it can change the whole fleet. A third, HTTP, port serves
// Prometheus /metrics (--metrics-addr; "" turns it off).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/flotilla-proxy/flotilla/controlplane/admin"
	"github.com/flotilla-proxy/flotilla/controlplane/rollout"
	"github.com/flotilla-proxy/flotilla/controlplane/stats"
	"github.com/flotilla-proxy/flotilla/controlplane/store"
	"github.com/flotilla-proxy/flotilla/controlplane/xds"
	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

type config struct {
	xdsAddr     string
	adminAddr   string
	metricsAddr string
	// metricsAddrSet is true when --metrics-addr was given: failing to bind
	// it is then fatal, while a busy default only turns /metrics off.
	metricsAddrSet bool
	// pprof adds net/http/pprof's /debug/pprof/ to the metrics server.
	pprof    bool
	dataDir  string
	logLevel string
}

// defaultMetricsAddr is where /metrics listens unless told otherwise.
const defaultMetricsAddr = "127.0.0.1:18002"

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("flotilla-controlplane", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg config
	fs.StringVar(&cfg.xdsAddr, "xds-addr", ":18000", "address of the xDS (ADS) gRPC server agents connect to")
	fs.StringVar(&cfg.adminAddr, "admin-addr", "127.0.0.1:18001", "address of the admin gRPC API flotctl calls")
	fs.StringVar(&cfg.metricsAddr, "metrics-addr", defaultMetricsAddr, `address of the HTTP server for Prometheus /metrics ("" turns it off)`)
	fs.BoolVar(&cfg.pprof, "pprof", false, "serve Go's profiles (/debug/pprof/) on the metrics address; only on a trusted address")
	fs.StringVar(&cfg.dataDir, "data-dir", "/var/lib/flotilla-controlplane", "directory of the embedded store (flotilla.db)")
	fs.StringVar(&cfg.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fs.Visit(func(f *flag.Flag) { cfg.metricsAddrSet = cfg.metricsAddrSet || f.Name == "metrics-addr" })
	if *showVersion {
		fmt.Fprintln(os.Stdout, "flotilla-controlplane", version)
		return 0
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.logLevel)); err != nil {
		fmt.Fprintf(stderr, "flotilla-controlplane: --log-level %q is not one of debug, info, warn, error\n", cfg.logLevel)
		return 2
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, cfg, log); err != nil {
		log.Error("control plane stopped", "error", err)
		fmt.Fprintf(stderr, "flotilla-controlplane: %v\n", err)
		return 1
	}
	return 0
}

func serve(ctx context.Context, cfg config, log *slog.Logger) error {
	if err := os.MkdirAll(cfg.dataDir, 0o750); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	dbPath := filepath.Join(cfg.dataDir, "flotilla.db")
	st, err := store.OpenBolt(dbPath)
	if err != nil {
		return fmt.Errorf("open store %s: %w", dbPath, err)
	}
	defer st.Close()

	// The xDS server and the metrics observing it refer to each other: the
	// metrics' fleet gauges read the registry through fleetView.
	var xdsServer *xds.Server
	fleetView := func(selector map[string]string) []*adminv1.Agent { return xdsServer.Agents(selector) }
	metrics := stats.NewMetrics(fleetView)
	xdsServer = xds.New(xds.Options{Logger: log, Observer: metrics})
	reports := stats.NewAggregator(stats.Options{Fleet: fleetView, Logger: log})
	metrics.Watch(reports)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := metrics.Register(reg); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	svc, err := admin.New(ctx, st, &publisher{Server: xdsServer, metrics: metrics}, log, admin.WithStats(reports))
	if err != nil {
		return err
	}
	rollouts, err := rollout.New(ctx, rollout.Options{Store: st, Fleet: xdsServer, Activate: svc.Activate, Stats: reports, Logger: log})
	if err != nil {
		return err
	}
	svc.SetRollouts(rollouts)
	if err := rollout.RegisterMetrics(reg, st); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	rolloutCtx, stopRollouts := context.WithCancel(ctx)
	rolloutDone := make(chan struct{})
	go func() {
		defer close(rolloutDone)
		rollouts.Run(rolloutCtx)
	}()
	defer func() {
		stopRollouts()
		<-rolloutDone
	}()

	xdsLis, err := net.Listen("tcp", cfg.xdsAddr)
	if err != nil {
		return fmt.Errorf("xds listener: %w", err)
	}
	adminLis, err := net.Listen("tcp", cfg.adminAddr)
	if err != nil {
		xdsLis.Close()
		return fmt.Errorf("admin listener: %w", err)
	}

	xdsGRPC := grpc.NewServer(xds.ServerOptions()...)
	xdsServer.Register(xdsGRPC)
	reports.Register(xdsGRPC)

	adminGRPC := grpc.NewServer()
	adminv1.RegisterAdminServiceServer(adminGRPC, svc)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(adminGRPC, hs)

	errc := make(chan error, 3)
	go func() { errc <- fmt.Errorf("xds server: %w", xdsGRPC.Serve(xdsLis)) }()
	go func() { errc <- fmt.Errorf("admin server: %w", adminGRPC.Serve(adminLis)) }()
	metricsSrv, metricsAt, err := serveMetrics(cfg, reg, log, errc)
	if err != nil {
		xdsGRPC.Stop()
		adminGRPC.Stop()
		return err
	}
	log.Info("control plane serving", "xds", xdsLis.Addr().String(), "admin", adminLis.Addr().String(),
		"metrics", metricsAt, "store", dbPath, "version", version)

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case runErr = <-errc:
	}
	hs.Shutdown()
	if metricsSrv != nil {
		metricsSrv.Close()
	}
	stopped := make(chan struct{})
	go func() {
		adminGRPC.GracefulStop()
		// xDS streams never end on their own: close them so agents reconnect elsewhere.
		xdsGRPC.Stop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		adminGRPC.Stop()
	}
	if runErr != nil && !errors.Is(runErr, grpc.ErrServerStopped) && !errors.Is(runErr, http.ErrServerClosed) &&
		!strings.Contains(runErr.Error(), "closed") {
		return runErr
	}
	return nil
}

// serveMetrics starts the /metrics HTTP server, unless cfg.metricsAddr is
// empty. A default address already taken (another control plane on the
// host) is logged and skips /metrics; an address given with --metrics-addr
// must bind. It returns the server (nil when off) and where it listens.
func serveMetrics(cfg config, reg *prometheus.Registry, log *slog.Logger, errc chan<- error) (*http.Server, string, error) {
	if cfg.metricsAddr == "" {
		return nil, "off", nil
	}
	lis, err := net.Listen("tcp", cfg.metricsAddr)
	if err != nil {
		if cfg.metricsAddrSet {
			return nil, "", fmt.Errorf("metrics listener: %w", err)
		}
		log.Warn("not serving /metrics: the default address is taken (set --metrics-addr)", "address", cfg.metricsAddr, "error", err)
		return nil, "off", nil
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	if cfg.pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { errc <- fmt.Errorf("metrics server: %w", srv.Serve(lis)) }()
	return srv, lis.Addr().String(), nil
}

// publisher is the admin service's Publisher: the xDS server, with the
// convergence clock of each version started as it is published.
type publisher struct {
	*xds.Server
	metrics *stats.Metrics
}

// SetVersion starts the version's convergence clock, then publishes it.
func (p *publisher) SetVersion(number uint64, files []*adminv1.ConfigFile) error {
	p.metrics.VersionPublished(number)
	return p.Server.SetVersion(number, files)
}
