// Package flotctl is the command line client of a Flotilla control plane:
// validate and diff config bundles locally, apply them as new versions, read
// the history, roll back, see which version every agent runs (and wait for
// them to converge), see the traffic they report, and run canary rollouts.
//
// Everything a command prints goes to the writers given to Main, so the whole
// CLI runs in tests without a process. Results go to stdout; failures go to
// stderr as one sentence (plus one line per validation error) — never a stack
// trace or a raw gRPC status. Exit codes: 0 ok, 1 failure or invalid config,
// 2 usage error; diff exits 0 when nothing changes, 1 when something does and
// 2 on error, like `kubectl diff`.
package flotctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// Exit codes returned by Main.
const (
	// ExitOK means the command did what it was asked (diff: no change).
	ExitOK = 0
	// ExitFailure means the command failed or the config is invalid (diff: changes found).
	ExitFailure = 1
	// ExitUsage means the command line was wrong (diff: any error).
	ExitUsage = 2
)

// DefaultServer is the control plane's admin address when neither --server
// nor $FLOTILLA_SERVER names one.
const DefaultServer = "127.0.0.1:18001"

// Main runs flotctl with args (the command line without the program name) and
// returns the process exit code. Results are written to stdout and errors to
// stderr; getenv reads the environment (os.Getenv in the real binary).
// Cancelling ctx aborts any call to the control plane.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	a := &app{stdout: stdout, stderr: stderr, getenv: getenv, now: time.Now}
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	return a.report(cmd, err)
}

// app holds one run's global flags and writers.
type app struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	now            func() time.Time

	server  string
	output  string
	timeout time.Duration
}

// Output formats for -o.
const (
	formatTable = "table"
	formatJSON  = "json"
	formatYAML  = "yaml"
)

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "flotctl",
		Short: "Drive a Flotilla control plane: apply config, read history, roll back, watch agents",
		Long: `flotctl talks to a Flotilla control plane's admin API.

Config is YAML (listeners and clusters) kept in files, typically in Git:
validate and diff it locally, apply it as a new numbered version, and check
that every agent runs it with "flotctl agents" or "flotctl wait", and see
the traffic agents report with "flotctl stats".

-o json and -o yaml print the control plane's records (get, history, apply,
rollback, agents, stats); validate and diff always print text.`,
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			switch a.output {
			case formatTable, formatJSON, formatYAML:
			default:
				return usageError(cmd, fmt.Errorf("unknown output format %q (use table, json or yaml)", a.output))
			}
			if a.timeout <= 0 {
				return usageError(cmd, fmt.Errorf("--timeout must be positive, not %s", a.timeout))
			}
			return nil
		},
	}
	server := a.getenv("FLOTILLA_SERVER")
	if server == "" {
		server = DefaultServer
	}
	flags := root.PersistentFlags()
	flags.StringVar(&a.server, "server", server, "control plane admin address host:port (env FLOTILLA_SERVER)")
	flags.StringVarP(&a.output, "output", "o", formatTable, "output format: table, json or yaml")
	flags.DurationVar(&a.timeout, "timeout", 10*time.Second, "how long to wait for the control plane")
	root.SetFlagErrorFunc(usageError)
	root.AddCommand(
		a.validateCommand(),
		a.diffCommand(),
		a.applyCommand(),
		a.getCommand(),
		a.historyCommand(),
		a.rollbackCommand(),
		a.agentsCommand(),
		a.statsCommand(),
		a.waitCommand(),
		a.rolloutCommand(),
	)
	return root
}

// exitError ends a command with an exit code and what to print on stderr.
type exitError struct {
	code int
	// msg is one sentence, printed as "error: msg"; empty prints only lines.
	msg string
	// lines are details printed one per line after msg: validation errors.
	lines []string
}

func (e *exitError) Error() string {
	if e.msg == "" {
		return strings.Join(e.lines, "\n")
	}
	return strings.Join(append([]string{e.msg}, e.lines...), "\n")
}

// failure returns an exitError with ExitFailure and a formatted sentence.
func failure(format string, args ...any) *exitError {
	return &exitError{code: ExitFailure, msg: fmt.Sprintf(format, args...)}
}

// usageError turns a command line mistake into an ExitUsage error that points
// to the command's help. It doubles as cobra's flag error function.
func usageError(cmd *cobra.Command, err error) error {
	return &exitError{code: ExitUsage, msg: fmt.Sprintf("%v (see %q)", err, cmd.CommandPath()+" --help")}
}

// runE adapts a command body so that every error it returns carries an exit
// code; errors without one are failures. That leaves cobra's own errors
// (unknown command, wrong number of arguments) as the only untyped ones, and
// report treats those as usage errors.
func runE(fn func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		err := fn(cmd, args)
		if err == nil {
			return nil
		}
		if ee := (*exitError)(nil); errors.As(err, &ee) {
			return ee
		}
		return &exitError{code: ExitFailure, msg: err.Error()}
	}
}

// report prints err on stderr and returns the exit code for it.
func (a *app) report(cmd *cobra.Command, err error) int {
	if err == nil {
		return ExitOK
	}
	ee := (*exitError)(nil)
	if !errors.As(err, &ee) {
		// Only cobra's own errors are untyped, and they are all about the
		// command line. cobra returns the command it got to (at least the root).
		errors.As(usageError(cmd, err), &ee)
	}
	if ee.msg != "" {
		fmt.Fprintf(a.stderr, "error: %s\n", ee.msg)
	}
	for _, l := range ee.lines {
		fmt.Fprintln(a.stderr, l)
	}
	return ee.code
}

// exactArgs is cobra.ExactArgs with a sentence that names the arguments.
func exactArgs(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageError(cmd, fmt.Errorf("%s takes %s, got %s", cmd.Name(), names, plural(len(args), "argument")))
		}
		return nil
	}
}

// pathArgs requires at least one file or directory argument.
func pathArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return usageError(cmd, fmt.Errorf("%s needs at least one file or directory", cmd.Name()))
	}
	return nil
}
