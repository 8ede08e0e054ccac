package flotctl

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
)

// changeFlags are the flags shared by the commands that store a version.
type changeFlags struct {
	message       string
	author        string
	expectVersion uint64
}

func (f *changeFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&f.message, "message", "m", "", "why, like a commit message (required)")
	cmd.Flags().StringVar(&f.author, "author", "", "who (default $FLOTILLA_AUTHOR, else git config user.email, else $USER@hostname)")
	cmd.Flags().Uint64Var(&f.expectVersion, "expect-version", 0, "fail unless the latest version is this one (0: none yet)")
}

// expected returns --expect-version when it was given, else nil.
func (f *changeFlags) expected(cmd *cobra.Command) *uint64 {
	if !cmd.Flags().Changed("expect-version") {
		return nil
	}
	v := f.expectVersion
	return &v
}

func (a *app) applyCommand() *cobra.Command {
	var f changeFlags
	var dryRun, stage bool
	cmd := &cobra.Command{
		Use:   "apply PATH... -m MESSAGE",
		Short: "Store the files as a new version, which the control plane rolls out",
		Long: `apply validates the files locally (as validate does), then sends them to the
control plane, which stores them as a new numbered version unless they equal
the latest one. --expect-version N makes it fail if someone else applied in
the meantime; --dry-run has the control plane check them without storing.
--stage stores the version without serving it: the fleet keeps the active
version until "flotctl rollout start VERSION" moves it (see docs/rollouts.md).`,
		Args: pathArgs,
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			if f.message == "" && !dryRun {
				return usageError(cmd, fmt.Errorf("apply needs a message: -m \"why\""))
			}
			files, err := loadValid(args, ExitFailure)
			if err != nil {
				return err
			}
			c, err := a.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			req := &adminv1.ApplyRequest{
				Files:         files,
				Author:        a.author(f.author),
				Message:       f.message,
				ExpectVersion: f.expected(cmd),
				DryRun:        dryRun,
				Stage:         stage,
			}
			var resp *adminv1.ApplyResponse
			if err := c.call(cmd.Context(), func(ctx context.Context) error {
				resp, err = c.api.Apply(ctx, req)
				return err
			}); err != nil {
				return c.explainWrite(err, "")
			}
			if a.output != formatTable {
				return writeMessage(a.stdout, a.output, resp)
			}
			return writeApplied(a.stdout, resp, dryRun)
		}),
	}
	f.register(cmd)
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "validate and compile on the control plane, store nothing")
	cmd.Flags().BoolVar(&stage, "stage", false, "store the version without serving it (for flotctl rollout start)")
	return cmd
}

// writeApplied prints the outcome of an apply in one line.
func writeApplied(w io.Writer, resp *adminv1.ApplyResponse, dryRun bool) error {
	v := resp.GetVersion()
	var err error
	switch {
	case resp.GetUnchanged() && dryRun:
		_, err = fmt.Fprintf(w, "dry run: unchanged: latest version %d already has this content\n", v.GetNumber())
	case resp.GetUnchanged():
		_, err = fmt.Fprintf(w, "unchanged: latest version %d already has this content\n", v.GetNumber())
	case dryRun && v.GetNumber() != 0:
		_, err = fmt.Fprintf(w, "dry run: would store version %d (sha256 %s…); nothing was stored\n", v.GetNumber(), shortHash(v.GetHash(), 8))
	case dryRun:
		_, err = fmt.Fprintln(w, "dry run: the control plane accepted the config; nothing was stored")
	case resp.GetActive() != 0 && resp.GetActive() != v.GetNumber():
		_, err = fmt.Fprintf(w, "staged version %d (sha256 %s…); agents keep running version %d: flotctl rollout start %d\n",
			v.GetNumber(), shortHash(v.GetHash(), 8), resp.GetActive(), v.GetNumber())
	default:
		_, err = fmt.Fprintf(w, "applied version %d (sha256 %s…)\n", v.GetNumber(), shortHash(v.GetHash(), 8))
	}
	return err
}

func (a *app) rollbackCommand() *cobra.Command {
	var f changeFlags
	cmd := &cobra.Command{
		Use:   "rollback VERSION -m MESSAGE",
		Short: "Store a new version with the content of an older one",
		Long: `rollback stores a new version whose content equals VERSION's: history only
grows, so the rollback itself can be rolled back.`,
		Args: exactArgs(1, "one version number"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			n, err := strconv.ParseUint(args[0], 10, 64)
			if err != nil || n == 0 {
				return usageError(cmd, fmt.Errorf("%q is not a version number (1, 2, …)", args[0]))
			}
			if f.message == "" {
				return usageError(cmd, fmt.Errorf("rollback needs a message: -m \"why\""))
			}
			c, err := a.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			req := &adminv1.RollbackRequest{
				Number:        n,
				Author:        a.author(f.author),
				Message:       f.message,
				ExpectVersion: f.expected(cmd),
			}
			var resp *adminv1.RollbackResponse
			if err := c.call(cmd.Context(), func(ctx context.Context) error {
				resp, err = c.api.Rollback(ctx, req)
				return err
			}); err != nil {
				return c.explainWrite(err, fmt.Sprintf("version %d does not exist", n))
			}
			if a.output != formatTable {
				return writeMessage(a.stdout, a.output, resp)
			}
			_, err = fmt.Fprintf(a.stdout, "rolled back: version %d restores version %d\n", resp.GetVersion().GetNumber(), n)
			return err
		}),
	}
	f.register(cmd)
	return cmd
}

// author returns flag when set, else $FLOTILLA_AUTHOR, else Git's
// user.email, else $USER@hostname.
func (a *app) author(flag string) string {
	if flag != "" {
		return flag
	}
	if v := a.getenv("FLOTILLA_AUTHOR"); v != "" {
		return v
	}
	if out, err := exec.Command("git", "config", "user.email").Output(); err == nil {
		if email := strings.TrimSpace(string(out)); email != "" {
			return email
		}
	}
	user := a.getenv("USER")
	if user == "" {
		user = "unknown"
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	return user + "@" + host
}
