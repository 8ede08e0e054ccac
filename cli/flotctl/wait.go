package flotctl

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
)

// waitPoll is how often wait asks the control plane.
const waitPoll = 500 * time.Millisecond

func (a *app) waitCommand() *cobra.Command {
	var selector, forWhat string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "wait --for=converged [VERSION] [--selector k=v,...] [--timeout 60s]",
		Short: "Wait until every agent runs a version (the latest by default)",
		Long: `wait --for=converged returns when every connected agent (those matching
--selector) runs VERSION or a newer one entirely: every resource type of its
group's snapshot ACKed. VERSION defaults to the active version (the latest
one, unless later ones were staged with apply --stage).

Exit 0 when they do; agents that reported in the last 10 minutes but are
not connected run nothing and do not hold it, but a warning on stderr names
them. At --timeout it names each agent that does not converge and why (a
NACK with the agent's message, a push not yet ACKed, an older version), and
the agents that reported in the last 10 minutes but are not connected, and
exits 1. With no matching agent connected it waits, then exits 1.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usageError(cmd, fmt.Errorf("wait takes at most one VERSION, got %d arguments", len(args)))
			}
			return nil
		},
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			if forWhat != "converged" {
				return usageError(cmd, fmt.Errorf("--for must be converged, not %q", forWhat))
			}
			if timeout <= 0 {
				return usageError(cmd, fmt.Errorf("--timeout must be positive, not %s", timeout))
			}
			var target uint64
			if len(args) == 1 {
				n, err := strconv.ParseUint(strings.TrimPrefix(args[0], "v"), 10, 64)
				if err != nil || n == 0 {
					return usageError(cmd, fmt.Errorf("VERSION must be a version number like 7 or v7, not %q", args[0]))
				}
				target = n
			}
			sel, err := parseSelector(selector)
			if err != nil {
				return usageError(cmd, err)
			}
			c, err := a.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			return a.wait(cmd.Context(), c, target, sel, timeout)
		}),
	}
	cmd.Flags().StringVar(&forWhat, "for", "converged", "the condition: converged")
	cmd.Flags().StringVarP(&selector, "selector", "l", "", "only agents with these labels, e.g. dc=ams,role=edge")
	cmd.Flags().DurationVar(&timeout, "timeout", 60*time.Second, "how long to wait for the agents")
	return cmd
}

// wait polls the fleet until every selected agent runs target or newer (0:
// the latest version), or the timeout passes.
func (a *app) wait(ctx context.Context, c *client, target uint64, sel map[string]string, timeout time.Duration) error {
	deadline := a.now().Add(timeout)
	if target == 0 {
		var resp *adminv1.GetVersionResponse
		err := c.call(ctx, func(ctx context.Context) (err error) {
			resp, err = c.api.GetVersion(ctx, &adminv1.GetVersionRequest{})
			return err
		})
		if err != nil {
			return c.explain(err, "the control plane has no version yet: flotctl apply one first")
		}
		target = resp.GetVersion().GetInfo().GetNumber()
		if active := resp.GetActive(); active != 0 {
			// Staged versions after it are served only by rollouts.
			target = active
		}
	}
	var agents []*adminv1.Agent
	for {
		var resp *adminv1.ListAgentsResponse
		err := c.call(ctx, func(ctx context.Context) (err error) {
			resp, err = c.api.ListAgents(ctx, &adminv1.ListAgentsRequest{Selector: sel})
			return err
		})
		if err != nil {
			return c.explain(err, "")
		}
		agents = resp.GetAgents()
		if len(agents) > 0 && len(lagging(agents, target)) == 0 {
			verb := "run"
			if len(agents) == 1 {
				verb = "runs"
			}
			if _, err := fmt.Fprintf(a.stdout, "converged: %s %s version %d\n", plural(len(agents), "agent"), verb, target); err != nil {
				return err
			}
			if gone, err := a.notConnected(ctx, c, sel, agents); err != nil {
				fmt.Fprintf(a.stderr, "warning: cannot list the agents that are not connected: %s\n", err)
			} else if len(gone) > 0 {
				names := make([]string, len(gone))
				for i, g := range gone {
					names[i] = fmt.Sprintf("%s (last report %s)", g.id, g.last)
				}
				verb := "are"
				if len(gone) == 1 {
					verb = "is"
				}
				fmt.Fprintf(a.stderr, "warning: %s reported in the last 10 minutes but %s not connected: %s\n",
					plural(len(gone), "agent"), verb, strings.Join(names, ", "))
			}
			return nil
		}
		if !a.now().Before(deadline) {
			break
		}
		t := time.NewTimer(min(waitPoll, time.Until(deadline)+time.Millisecond))
		select {
		case <-ctx.Done():
			t.Stop()
			return failure("interrupted while waiting for the agents")
		case <-t.C:
		}
	}

	var lines []string
	for _, ag := range lagging(agents, target) {
		lines = append(lines, fmt.Sprintf("%s: %s", ag.GetNodeId(), whyLagging(ag, target)))
	}
	lines = append(lines, a.disconnected(ctx, c, sel, agents)...)
	sel0 := ""
	if len(sel) > 0 {
		sel0 = " matching the selector"
	}
	if len(agents) == 0 {
		return &exitError{code: ExitFailure, msg: fmt.Sprintf("no agent%s is connected after %s", sel0, timeout), lines: lines}
	}
	n := len(lagging(agents, target))
	return &exitError{code: ExitFailure, lines: lines,
		msg: fmt.Sprintf("%d of %s%s did not converge on version %d within %s:", n, plural(len(agents), "agent"), sel0, target, timeout)}
}

// lagging returns the agents that do not run target or newer.
func lagging(agents []*adminv1.Agent, target uint64) []*adminv1.Agent {
	var out []*adminv1.Agent
	for _, ag := range agents {
		if ag.GetConfigVersion() < target {
			out = append(out, ag)
		}
	}
	return out
}

// whyLagging explains why an agent does not run target.
func whyLagging(ag *adminv1.Agent, target uint64) string {
	var reasons []string
	for _, rs := range ag.GetResources() {
		switch rs.GetState() {
		case adminv1.SyncState_SYNC_STATE_NACKED:
			msg := strings.Join(strings.Fields(strings.ReplaceAll(rs.GetLastNack().GetMessage(), "\n", "; ")), " ")
			reasons = append(reasons, fmt.Sprintf("%s NACKED %s: %s", rs.GetShort(), xdsVersion(rs.GetLastNack().GetVersion()), msg))
		case adminv1.SyncState_SYNC_STATE_STALE:
			reasons = append(reasons, fmt.Sprintf("%s STALE (sent %s, acked %s)", rs.GetShort(), xdsVersion(rs.GetSent()), xdsVersion(rs.GetAcked())))
		}
	}
	if len(reasons) > 0 {
		return strings.Join(reasons, "; ")
	}
	if v := ag.GetConfigVersion(); v != 0 {
		return fmt.Sprintf("runs version %d; version %d was not pushed to its group (see the control plane's log)", v, target)
	}
	return "has not ACKed its config yet"
}

// disconnected lists the agents that reported in the last 10 minutes but
// have no xDS stream, one line each, if the control plane aggregates reports.
func (a *app) disconnected(ctx context.Context, c *client, sel map[string]string, connected []*adminv1.Agent) []string {
	gone, err := a.notConnected(ctx, c, sel, connected)
	if err != nil {
		return []string{"(cannot list agents that are not connected: " + err.Error() + ")"}
	}
	lines := make([]string, len(gone))
	for i, g := range gone {
		lines[i] = fmt.Sprintf("%s: not connected (last report %s)", g.id, g.last)
	}
	return lines
}

// goneAgent is an agent that reported but is not connected, and how long
// ago its last report was ("3m ago", "-").
type goneAgent struct{ id, last string }

// notConnected returns the agents that reported in the last 10 minutes but
// have no xDS stream; none when the control plane does not aggregate
// reports.
func (a *app) notConnected(ctx context.Context, c *client, sel map[string]string, connected []*adminv1.Agent) ([]goneAgent, error) {
	var resp *adminv1.GetStatsResponse
	err := c.call(ctx, func(ctx context.Context) (err error) {
		resp, err = c.api.GetStats(ctx, &adminv1.GetStatsRequest{Selector: sel})
		return err
	})
	if err != nil {
		if status.Code(err) != codes.Unimplemented {
			return nil, errors.New(c.explain(err, "").msg)
		}
		return nil, nil
	}
	var out []goneAgent
	for _, g := range resp.GetGroups() {
		id := g.GetKey()
		if slices.ContainsFunc(connected, func(ag *adminv1.Agent) bool { return ag.GetNodeId() == id }) {
			continue
		}
		last := "-"
		if t := g.GetLastReport(); t != nil {
			last = age(a.now().Sub(t.AsTime())) + " ago"
		}
		out = append(out, goneAgent{id, last})
	}
	return out, nil
}
