package flotctl

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/flotilla-proxy/flotilla/controlplane/bundle"
	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
)

func (a *app) getCommand() *cobra.Command {
	var number uint64
	cmd := &cobra.Command{
		Use:   "get [--version N]",
		Short: "Print a version's config (the latest by default)",
		Long: `get prints the merged config of a version as YAML, under a comment naming the
version, its author, time and message. -o json or -o yaml prints the stored
version record instead, with its files as applied.`,
		Args: exactArgs(0, "no arguments"),
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			c, err := a.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			var resp *adminv1.GetVersionResponse
			if err := c.call(cmd.Context(), func(ctx context.Context) error {
				resp, err = c.api.GetVersion(ctx, &adminv1.GetVersionRequest{Number: number})
				return err
			}); err != nil {
				notFound := fmt.Sprintf("version %d does not exist", number)
				if number == 0 {
					notFound = "the control plane has no version yet: flotctl apply one first"
				}
				return c.explain(err, notFound)
			}
			// The server redacts private keys; so does flotctl, whatever
			// server it talks to.
			v := &adminv1.Version{Info: resp.GetVersion().GetInfo(), Files: bundle.Redact(resp.GetVersion().GetFiles())}
			if a.output != formatTable {
				return writeMessage(a.stdout, a.output, v)
			}
			return writeVersion(a.stdout, v)
		}),
	}
	cmd.Flags().Uint64Var(&number, "version", 0, "version number (0: the latest)")
	return cmd
}

// writeVersion prints v's merged bundle as YAML under a comment header.
func writeVersion(w io.Writer, v *adminv1.Version) error {
	info := v.GetInfo()
	body, err := marshalYAML(bundle.Merge(v.GetFiles()))
	if err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# version %d", info.GetNumber())
	if info.GetRollbackOf() != 0 {
		fmt.Fprintf(&b, " (rollback of %d)", info.GetRollbackOf())
	}
	fmt.Fprintf(&b, "\n# sha256: %s\n# author: %s\n# created: %s\n", info.GetHash(), info.GetAuthor(), timestamp(info.GetCreatedAt()))
	for i, line := range strings.Split(strings.TrimRight(info.GetMessage(), "\n"), "\n") {
		if i == 0 {
			fmt.Fprintf(&b, "# message: %s\n", line)
		} else {
			fmt.Fprintf(&b, "#   %s\n", line)
		}
	}
	b.Write(body)
	_, err = io.WriteString(w, b.String())
	return err
}

func (a *app) historyCommand() *cobra.Command {
	var limit uint32
	cmd := &cobra.Command{
		Use:   "history [--limit N]",
		Short: "List versions, newest first",
		Args:  exactArgs(0, "no arguments"),
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			c, err := a.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			var resp *adminv1.ListVersionsResponse
			if err := c.call(cmd.Context(), func(ctx context.Context) error {
				resp, err = c.api.ListVersions(ctx, &adminv1.ListVersionsRequest{Limit: limit})
				return err
			}); err != nil {
				return c.explain(err, "")
			}
			if a.output != formatTable {
				return writeMessage(a.stdout, a.output, resp)
			}
			return writeHistory(a.stdout, resp.GetVersions())
		}),
	}
	cmd.Flags().Uint32Var(&limit, "limit", 0, "show at most this many versions (0: all)")
	return cmd
}

// writeHistory prints versions as a table, one row each.
func writeHistory(w io.Writer, versions []*adminv1.VersionInfo) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "VERSION\tCREATED\tAUTHOR\tHASH\tMESSAGE")
	for _, v := range versions {
		msg := firstLine(v.GetMessage())
		if v.GetRollbackOf() != 0 {
			msg = strings.TrimSuffix(fmt.Sprintf("rollback of %d: %s", v.GetRollbackOf(), msg), ": ")
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", v.GetNumber(), timestamp(v.GetCreatedAt()), v.GetAuthor(), shortHash(v.GetHash(), 12), msg)
	}
	return tw.Flush()
}
