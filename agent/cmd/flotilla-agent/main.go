// Command flotilla-agent is Flotilla's proxy agent: it follows one of the
// control planes over xDS (ADS) and proxies the listeners it is given.
//
//	flotilla-agent --control-plane cp1:18000,cp2:18000 --labels dc=ams,role=edge
//
// Every flag can also be set from the environment as FLOTILLA_<FLAG>, dashes
// turned into underscores (FLOTILLA_CONTROL_PLANE, FLOTILLA_NODE_ID, ...); a
// flag on the command line wins. Logs are JSON on stderr. SIGINT or SIGTERM
// drains open connections (up to --drain-timeout) and exits 0. A bad flag
// prints one sentence and exits 2.
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
	"strings"
	"syscall"
	"time"

	"github.com/flotilla-proxy/flotilla/agent"
	"github.com/flotilla-proxy/flotilla/agent/admin"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// config is the parsed command line.
type config struct {
	opts     agent.Options
	logLevel slog.Level
	version  bool
}

// run is main without the process: it returns the exit code.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "flotilla-agent: %v (see --help)\n", err)
		return 2
	}
	if cfg.version {
		fmt.Fprintf(stdout, "flotilla-agent %s\n", agent.Version)
		return 0
	}
	logger := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.logLevel}))
	cfg.opts.Logger = logger
	a, err := agent.New(cfg.opts)
	if err != nil {
		fmt.Fprintf(stderr, "flotilla-agent: %v\n", err)
		return 2
	}
	if err := a.Run(ctx); err != nil {
		logger.Error("flotilla-agent stopped with an error", "error", err)
		if ctx.Err() == nil {
			return 1 // it never really ran (admin address taken, data dir unusable)
		}
	}
	logger.Info("flotilla-agent stopped")
	return 0
}

// parseFlags reads the command line, falling back to FLOTILLA_* variables
// for flags not given. Errors are one sentence.
// --help prints the usage to stderr.
func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (*config, error) {
	fs := flag.NewFlagSet("flotilla-agent", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	hostname, _ := os.Hostname()
	var (
		controlPlanes = fs.String("control-plane", agent.DefaultControlPlane, "control-plane `host:port` list, comma-separated, tried in order")
		nodeID        = fs.String("node-id", hostname, "xDS node `id`, unique in the fleet; defaults to the hostname")
		labels        = fs.String("labels", "", "agent labels as `k=v,k=v` (e.g. dc=ams,role=edge); the control plane picks config by them")
		dataDir       = fs.String("data-dir", "/var/lib/flotilla-agent", "`directory` for the last good snapshot")
		adminAddr     = fs.String("admin-addr", admin.DefaultAddr, "admin HTTP `address` (/ready, /config_dump, /metrics)")
		drainTimeout  = fs.Duration("drain-timeout", 30*time.Second, "how long open connections may run on after their listener goes away or on shutdown")
		reportEvery   = fs.Duration("report-interval", 5*time.Second, "how often to report statistics (counter deltas, endpoint health, versions) to the control plane; 0 disables")
		logLevel      = fs.String("log-level", "info", "log `level`: info or debug")
		version       = fs.Bool("version", false, "print the version and exit")
	)
	fs.Usage = func() {} // a bad flag gets one sentence, not the whole usage
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stderr, "Usage: flotilla-agent [flags]\n\nEvery flag may also come from FLOTILLA_<FLAG> (e.g. FLOTILLA_CONTROL_PLANE).\n\n")
			fs.SetOutput(stderr)
			fs.PrintDefaults()
			return nil, err
		}
		return nil, errors.New(strings.TrimSuffix(err.Error(), "\n"))
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		env := "FLOTILLA_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := getenv(env); v != "" && !given[f.Name] && envErr == nil {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = fmt.Errorf("invalid value %q for %s: %v", v, env, err)
			}
		}
	})
	if envErr != nil {
		return nil, envErr
	}

	cfg := &config{version: *version}
	switch *logLevel {
	case "info":
		cfg.logLevel = slog.LevelInfo
	case "debug":
		cfg.logLevel = slog.LevelDebug
	default:
		return nil, fmt.Errorf("--log-level must be info or debug, not %q", *logLevel)
	}
	if *nodeID == "" {
		return nil, errors.New("--node-id is empty and the hostname is unknown")
	}
	if *drainTimeout < 0 {
		return nil, fmt.Errorf("--drain-timeout must not be negative, got %s", *drainTimeout)
	}
	if *reportEvery < 0 {
		return nil, fmt.Errorf("--report-interval must not be negative, got %s", *reportEvery)
	}
	cps, err := parseList(*controlPlanes)
	if err != nil || len(cps) == 0 {
		return nil, fmt.Errorf("--control-plane needs host:port[,host:port], got %q", *controlPlanes)
	}
	lbls, err := parseLabels(*labels)
	if err != nil {
		return nil, err
	}
	cfg.opts = agent.Options{
		NodeID:         *nodeID,
		Labels:         lbls,
		ControlPlanes:  cps,
		DataDir:        *dataDir,
		AdminAddr:      *adminAddr,
		DrainTimeout:   *drainTimeout,
		ReportInterval: *reportEvery,
	}
	return cfg, nil
}

// parseList splits "a:1, b:2" into host:port items.
func parseList(s string) ([]string, error) {
	var out []string
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		host, port, err := net.SplitHostPort(item)
		if err != nil || host == "" || port == "" {
			return nil, fmt.Errorf("bad address %q", item)
		}
		out = append(out, item)
	}
	return out, nil
}

// parseLabels parses "dc=ams,role=edge".
func parseLabels(s string) (map[string]string, error) {
	labels := map[string]string{}
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		k, v, ok := strings.Cut(item, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || k == "" {
			return nil, fmt.Errorf("--labels needs k=v[,k=v], got %q", item)
		}
		if _, dup := labels[k]; dup {
			return nil, fmt.Errorf("--labels sets %q twice", k)
		}
		labels[k] = v
	}
	return labels, nil
}
