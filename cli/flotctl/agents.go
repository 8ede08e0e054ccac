package flotctl

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
)

// agentColumns are the resource types always shown as columns, by short
// name. SDS and RDS are shown after them when any agent has been sent
// secrets or routes (see columnsFor): fleets without TLS or HTTP never see
// them.
var agentColumns = []string{"CDS", "EDS", "LDS"}

// optionalColumns are shown, in this order, only when used.
var optionalColumns = []string{"SDS", "RDS"}

// columnsFor returns the columns for agents: agentColumns, then each of
// optionalColumns that any agent has been sent or rejected.
func columnsFor(agents []*adminv1.Agent) []string {
	columns := agentColumns
	for _, col := range optionalColumns {
		used := false
		for _, ag := range agents {
			for _, rs := range ag.GetResources() {
				if rs.GetShort() == col && (rs.GetSent() != "" || rs.GetAcked() != "" || rs.GetLastNack() != nil) {
					used = true
				}
			}
		}
		if used {
			columns = append(slices.Clone(columns), col)
		}
	}
	return columns
}

func (a *app) agentsCommand() *cobra.Command {
	var selector string
	cmd := &cobra.Command{
		Use:   "agents [--selector k=v,...]",
		Short: "Show every connected agent and which version it runs",
		Long: `agents lists the agents connected to the control plane, like
"istioctl proxy-status": per resource type, SYNCED (the agent runs what it
should), STALE (a version was sent and not yet acknowledged), NACKED (the
agent rejected what it should run; the reason follows the table) or NOT_SENT.
-o json or -o yaml prints the full records.`,
		Args: exactArgs(0, "no arguments"),
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			sel, err := parseSelector(selector)
			if err != nil {
				return usageError(cmd, err)
			}
			c, err := a.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			var resp *adminv1.ListAgentsResponse
			if err := c.call(cmd.Context(), func(ctx context.Context) error {
				resp, err = c.api.ListAgents(ctx, &adminv1.ListAgentsRequest{Selector: sel})
				return err
			}); err != nil {
				return c.explain(err, "")
			}
			if a.output != formatTable {
				return writeMessage(a.stdout, a.output, resp)
			}
			return writeAgents(a.stdout, resp.GetAgents(), a.now())
		}),
	}
	cmd.Flags().StringVarP(&selector, "selector", "l", "", "only agents with these labels, e.g. dc=ams,role=edge")
	return cmd
}

// parseSelector parses "k=v,k=v" into a map; "" is no selector.
func parseSelector(s string) (map[string]string, error) {
	if s == "" {
		return nil, nil
	}
	sel := make(map[string]string)
	for _, pair := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if !ok || k == "" || v == "" {
			return nil, fmt.Errorf("selector %q: want key=value pairs separated by commas, got %q", s, pair)
		}
		if old, dup := sel[k]; dup && old != v {
			return nil, fmt.Errorf("selector %q: label %q given twice", s, k)
		}
		sel[k] = v
	}
	return sel, nil
}

// writeAgents prints one row per agent, then one line per rejected version.
func writeAgents(w io.Writer, agents []*adminv1.Agent, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	columns := columnsFor(agents)
	fmt.Fprintf(tw, "NODE\tLABELS\t%s\tCONNECTED\n", strings.Join(columns, "\t"))
	var nacks []string
	for _, ag := range agents {
		byShort := make(map[string]*adminv1.ResourceStatus, len(ag.GetResources()))
		for _, rs := range ag.GetResources() {
			byShort[rs.GetShort()] = rs
		}
		cells := make([]string, 0, len(columns))
		for _, col := range columns {
			cells = append(cells, syncCell(byShort[col]))
		}
		connected := "-"
		if t := ag.GetConnectedSince(); t != nil {
			connected = age(now.Sub(t.AsTime()))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", ag.GetNodeId(), labelString(ag.GetLabels()), strings.Join(cells, "\t"), connected)
		for _, rs := range ag.GetResources() {
			if n := rs.GetLastNack(); n != nil && rs.GetState() == adminv1.SyncState_SYNC_STATE_NACKED {
				msg := strings.Join(strings.Fields(strings.ReplaceAll(n.GetMessage(), "\n", "; ")), " ")
				nacks = append(nacks, fmt.Sprintf("%s %s %s rejected: %s", ag.GetNodeId(), rs.GetShort(), xdsVersion(n.GetVersion()), msg))
			}
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, line := range nacks {
		if _, err := fmt.Fprintln(w, line); err != nil {
			return err
		}
	}
	return nil
}

// syncCell renders one agent's state for one resource type.
func syncCell(rs *adminv1.ResourceStatus) string {
	if rs == nil {
		return "NOT_SENT"
	}
	switch rs.GetState() {
	case adminv1.SyncState_SYNC_STATE_SYNCED:
		return fmt.Sprintf("SYNCED (%s)", xdsVersion(rs.GetAcked()))
	case adminv1.SyncState_SYNC_STATE_STALE:
		return fmt.Sprintf("STALE (sent %s, acked %s)", xdsVersion(rs.GetSent()), xdsVersion(rs.GetAcked()))
	case adminv1.SyncState_SYNC_STATE_NACKED:
		v := rs.GetLastNack().GetVersion()
		if v == "" {
			v = rs.GetSent()
		}
		return fmt.Sprintf("NACKED (%s)", xdsVersion(v))
	case adminv1.SyncState_SYNC_STATE_NOT_SENT:
		return "NOT_SENT"
	default:
		return "UNKNOWN"
	}
}

// labelString renders labels as sorted k=v pairs.
func labelString(labels map[string]string) string {
	if len(labels) == 0 {
		return "<none>"
	}
	pairs := make([]string, 0, len(labels))
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		pairs = append(pairs, k+"="+labels[k])
	}
	return strings.Join(pairs, ",")
}
