// Command flotilla-controlplane stores the fleet's configuration versions and
// streams them to agents over xDS.
//
// It serves two gRPC ports: xDS (ADS) for agents, and the admin API for
// flotctl, which binds to localhost by default because it can change the
// whole fleet.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"github.com/flotilla-proxy/flotilla/controlplane/admin"
	"github.com/flotilla-proxy/flotilla/controlplane/store"
	"github.com/flotilla-proxy/flotilla/controlplane/xds"
	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

type config struct {
	xdsAddr   string
	adminAddr string
	dataDir   string
	logLevel  string
}

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("flotilla-controlplane", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg config
	fs.StringVar(&cfg.xdsAddr, "xds-addr", ":18000", "address of the xDS (ADS) gRPC server agents connect to")
	fs.StringVar(&cfg.adminAddr, "admin-addr", "127.0.0.1:18001", "address of the admin gRPC API flotctl calls")
	fs.StringVar(&cfg.dataDir, "data-dir", "/var/lib/flotilla-controlplane", "directory of the embedded store (flotilla.db)")
	fs.StringVar(&cfg.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
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

	xdsServer := xds.New(xds.Options{Logger: log})
	svc, err := admin.New(ctx, st, xdsServer, log)
	if err != nil {
		return err
	}

	xdsLis, err := net.Listen("tcp", cfg.xdsAddr)
	if err != nil {
		return fmt.Errorf("xds listener: %w", err)
	}
	adminLis, err := net.Listen("tcp", cfg.adminAddr)
	if err != nil {
		xdsLis.Close()
		return fmt.Errorf("admin listener: %w", err)
	}

	xdsGRPC := grpc.NewServer(append([]grpc.ServerOption{
		// Agents keep their stream alive with pings; allow them, and close
		// streams whose peer vanished without a FIN.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.MaxConcurrentStreams(1000),
	}, xdsServer.GRPCOptions()...)...)
	xdsServer.Register(xdsGRPC)

	adminGRPC := grpc.NewServer()
	adminv1.RegisterAdminServiceServer(adminGRPC, svc)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(adminGRPC, hs)

	errc := make(chan error, 2)
	go func() { errc <- fmt.Errorf("xds server: %w", xdsGRPC.Serve(xdsLis)) }()
	go func() { errc <- fmt.Errorf("admin server: %w", adminGRPC.Serve(adminLis)) }()
	log.Info("control plane serving", "xds", xdsLis.Addr().String(), "admin", adminLis.Addr().String(),
		"store", dbPath, "version", version)

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case runErr = <-errc:
	}
	hs.Shutdown()
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
	if runErr != nil && !errors.Is(runErr, grpc.ErrServerStopped) && !strings.Contains(runErr.Error(), "closed") {
		return runErr
	}
	return nil
}
