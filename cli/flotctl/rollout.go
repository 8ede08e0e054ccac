package flotctl

import (
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
)

// rolloutPoll is how often rollout status -w asks the control plane.
const rolloutPoll = 500 * time.Millisecond

func (a *app) rolloutCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollout start|status|list|pause|resume|promote|abort",
		Short: "Canary rollouts: a version to a growing share of the agents, stopped on NACKs or bad stats",
		Long: `A rollout serves a stored version (typically one applied with --stage) to a
growing share of the selected agents, step by step. Each step assigns the
version to its share (agents ordered by a stable hash of their node id, so a
step only adds agents), waits until they all run it, bakes, then compares
what the canaries did over the bake (connect-failure and 5xx ratios, open
connections dropping) with what the selected agents still on the version
the rollout started from did. A NACK or bad numbers abort the rollout and
put the canaries back on the version they ran before. See docs/rollouts.md.`,
	}
	cmd.AddCommand(a.rolloutStartCommand(), a.rolloutStatusCommand(), a.rolloutListCommand(),
		a.rolloutActionCommand("pause", "Pause a rollout where it is (the bake clock stops)"),
		a.rolloutActionCommand("resume", "Resume a paused rollout"),
		a.rolloutActionCommand("promote", "Jump a rollout to its last step (100%) now"),
		a.rolloutActionCommand("abort", "Abort a rollout: the canaries go back to the version they ran before"))
	return cmd
}

// parseSteps reads "1,10,50,100".
func parseSteps(s string) ([]uint32, error) {
	var out []uint32
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(f), "%"), 10, 32)
		if err != nil || n == 0 || n > 100 {
			return nil, fmt.Errorf("--steps %q: %q is not a percentage in 1..100", s, f)
		}
		out = append(out, uint32(n))
	}
	return out, nil
}

func parseVersion(cmd *cobra.Command, arg string) (uint64, error) {
	n, err := strconv.ParseUint(strings.TrimPrefix(arg, "v"), 10, 64)
	if err != nil || n == 0 {
		return 0, usageError(cmd, fmt.Errorf("VERSION must be a version number like 7 or v7, not %q", arg))
	}
	return n, nil
}

func parseID(cmd *cobra.Command, args []string) (uint64, error) {
	if len(args) == 0 {
		return 0, nil
	}
	n, err := strconv.ParseUint(args[0], 10, 64)
	if err != nil || n == 0 {
		return 0, usageError(cmd, fmt.Errorf("ID must be a rollout number like 3, not %q", args[0]))
	}
	return n, nil
}

func maxOneID(cmd *cobra.Command, args []string) error {
	if len(args) > 1 {
		return usageError(cmd, fmt.Errorf("%s takes at most one rollout ID, got %d arguments", cmd.Name(), len(args)))
	}
	return nil
}

func (a *app) rolloutStartCommand() *cobra.Command {
	var selector, steps, author string
	var bake, ackWait time.Duration
	var maxCF, max5xx, maxDrop float64
	var minSamples uint32
	var watch bool
	cmd := &cobra.Command{
		Use:   "start VERSION [--selector k=v,...] [--steps 1,10,50,100] [--bake 2m] [-w]",
		Short: "Start a canary rollout of a stored version",
		Args:  exactArgs(1, "one VERSION"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			v, err := parseVersion(cmd, args[0])
			if err != nil {
				return err
			}
			sel, err := parseSelector(selector)
			if err != nil {
				return usageError(cmd, err)
			}
			st, err := parseSteps(steps)
			if err != nil {
				return usageError(cmd, err)
			}
			if bake < 0 {
				return usageError(cmd, fmt.Errorf("--bake must not be negative, not %s", bake))
			}
			if ackWait < 0 {
				return usageError(cmd, fmt.Errorf("--ack-wait must not be negative, not %s", ackWait))
			}
			c, err := a.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			req := &adminv1.StartRolloutRequest{Version: v, Selector: sel, Steps: st, Bake: durationpb.New(bake),
				MaxConnectFailureRatio: maxCF, Max_5XxRatio: max5xx, MaxActiveDropRatio: maxDrop, MinSamples: minSamples,
				Author: a.author(author)}
			if ackWait > 0 {
				req.AckWait = durationpb.New(ackWait)
			}
			var resp *adminv1.StartRolloutResponse
			if err := c.call(cmd.Context(), func(ctx context.Context) (err error) {
				resp, err = c.api.StartRollout(ctx, req)
				return err
			}); err != nil {
				return c.explain(err, "")
			}
			r := resp.GetRollout()
			if a.output != formatTable {
				if err := writeMessage(a.stdout, a.output, r); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(a.stdout, "rollout %d started: version %d (from %d), steps %s, bake %s\n", r.GetId(), r.GetVersion(),
					r.GetFromVersion(), percents(r.GetSteps()), r.GetBake().AsDuration())
			}
			if watch {
				return a.watchRollout(cmd.Context(), c, r.GetId())
			}
			return nil
		}),
	}
	f := cmd.Flags()
	f.StringVarP(&selector, "selector", "l", "", "only agents with these labels, e.g. dc=ams,role=edge")
	f.StringVar(&steps, "steps", "1,10,50,100", "percentages of the selected agents, increasing, ending at 100")
	f.DurationVar(&bake, "bake", 2*time.Minute, "how long each step runs before its analysis")
	f.Float64Var(&maxCF, "max-connect-failure-ratio", 0.05, "abort when the canaries' connect-failure ratio is above this and the baseline's")
	f.Float64Var(&max5xx, "max-5xx-ratio", 0.05, "abort when the canaries' 5xx ratio is above this and the baseline's")
	f.Float64Var(&maxDrop, "max-active-drop-ratio", 0.5,
		"abort when the canaries' open connections fall over the bake by more than this share of their number at its start, and more than the baseline's")
	f.Uint32Var(&minSamples, "min-samples", 20,
		"judge a ratio only when the canaries made at least this many connection attempts, requests, or had this many open connections at the bake's start")
	f.DurationVar(&ackWait, "ack-wait", 0,
		"fail a step whose assigned agents do not all run the version within this (default: the control plane's, max(30s, bake) unless configured)")
	f.StringVar(&author, "author", "", "who (default $FLOTILLA_AUTHOR, else git config user.email, else $USER@hostname)")
	f.BoolVarP(&watch, "watch", "w", false, "follow the rollout until it ends (exit 1 if it is aborted)")
	return cmd
}

func (a *app) rolloutStatusCommand() *cobra.Command {
	var watch bool
	cmd := &cobra.Command{
		Use:   "status [ID] [-w]",
		Short: "Show a rollout (the latest by default); -w follows it until it ends",
		Long: `status shows a rollout: its step, what the step waits for, and why it was
aborted. -w follows it until it completes (exit 0) or is aborted (exit 1),
with a progress bar on a terminal and one line per change otherwise.`,
		Args: maxOneID,
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			id, err := parseID(cmd, args)
			if err != nil {
				return err
			}
			c, err := a.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			if watch {
				return a.watchRollout(cmd.Context(), c, id)
			}
			r, err := getRollout(cmd.Context(), c, id)
			if err != nil {
				return err
			}
			if a.output != formatTable {
				return writeMessage(a.stdout, a.output, r)
			}
			return writeRollout(a.stdout, r, a.now())
		}),
	}
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "follow the rollout until it ends (exit 1 if it is aborted)")
	return cmd
}

func getRollout(ctx context.Context, c *client, id uint64) (*adminv1.Rollout, error) {
	var resp *adminv1.GetRolloutResponse
	err := c.call(ctx, func(ctx context.Context) (err error) {
		resp, err = c.api.GetRollout(ctx, &adminv1.GetRolloutRequest{Id: id})
		return err
	})
	if err != nil {
		nf := "there is no rollout yet: flotctl rollout start VERSION"
		if id != 0 {
			nf = fmt.Sprintf("rollout %d does not exist", id)
		}
		return nil, c.explain(err, nf)
	}
	return resp.GetRollout(), nil
}

func (a *app) rolloutListCommand() *cobra.Command {
	var limit uint32
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List rollouts, newest first",
		Args:  exactArgs(0, "no arguments"),
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			c, err := a.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			var resp *adminv1.ListRolloutsResponse
			if err := c.call(cmd.Context(), func(ctx context.Context) (err error) {
				resp, err = c.api.ListRollouts(ctx, &adminv1.ListRolloutsRequest{Limit: limit})
				return err
			}); err != nil {
				return c.explain(err, "")
			}
			if a.output != formatTable {
				return writeMessage(a.stdout, a.output, resp)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 8, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tVERSION\tFROM\tSELECTOR\tSTATE\tSTEP\tSTARTED\tREASON")
			for _, r := range resp.GetRollouts() {
				fmt.Fprintf(tw, "%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\n", r.GetId(), r.GetVersion(), r.GetFromVersion(),
					selectorText(r.GetSelector()), stateText(r.GetState()), stepText(r), timestamp(r.GetCreatedAt()), firstLine(r.GetReason()))
			}
			return tw.Flush()
		}),
	}
	cmd.Flags().Uint32Var(&limit, "limit", 20, "show at most this many (0: all)")
	return cmd
}

func (a *app) rolloutActionCommand(verb, short string) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   verb + " [ID]",
		Short: short + " (the latest by default)",
		Args:  maxOneID,
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			id, err := parseID(cmd, args)
			if err != nil {
				return err
			}
			c, err := a.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			var r *adminv1.Rollout
			err = c.call(cmd.Context(), func(ctx context.Context) error {
				switch verb {
				case "pause":
					resp, err := c.api.PauseRollout(ctx, &adminv1.PauseRolloutRequest{Id: id})
					r = resp.GetRollout()
					return err
				case "resume":
					resp, err := c.api.ResumeRollout(ctx, &adminv1.ResumeRolloutRequest{Id: id})
					r = resp.GetRollout()
					return err
				case "promote":
					resp, err := c.api.PromoteRollout(ctx, &adminv1.PromoteRolloutRequest{Id: id})
					r = resp.GetRollout()
					return err
				default:
					resp, err := c.api.AbortRollout(ctx, &adminv1.AbortRolloutRequest{Id: id, Reason: reason})
					r = resp.GetRollout()
					return err
				}
			})
			if err != nil {
				return c.explain(err, fmt.Sprintf("rollout %d does not exist", id))
			}
			if a.output != formatTable {
				return writeMessage(a.stdout, a.output, r)
			}
			return writeRollout(a.stdout, r, a.now())
		}),
	}
	if verb == "abort" {
		cmd.Flags().StringVarP(&reason, "message", "m", "", "why (recorded as the rollout's reason)")
	}
	return cmd
}

// watchRollout follows a rollout until it ends: a progress bar redrawn in
// place on a terminal, else one line whenever what it shows changes; and a
// line with each step's analysis.
func (a *app) watchRollout(ctx context.Context, c *client, id uint64) error {
	tty := isTerminal(a.stdout)
	last, analysis := "", ""
	for {
		r, err := getRollout(ctx, c, id)
		if err != nil {
			if tty && last != "" {
				fmt.Fprintln(a.stdout)
			}
			return err
		}
		id = r.GetId()
		if an := r.GetAnalysis(); an != analysis {
			if tty {
				fmt.Fprint(a.stdout, "\r\033[K")
			}
			fmt.Fprintln(a.stdout, "analysis: "+an)
			analysis = an
		}
		line := progressLine(r, tty)
		switch {
		case tty:
			fmt.Fprintf(a.stdout, "\r\033[K%s", line)
		case line != last:
			fmt.Fprintln(a.stdout, line)
		}
		last = line
		switch r.GetState() {
		case adminv1.RolloutState_ROLLOUT_STATE_COMPLETED:
			if tty {
				fmt.Fprintln(a.stdout)
			}
			return nil
		case adminv1.RolloutState_ROLLOUT_STATE_ABORTED:
			if tty {
				fmt.Fprintln(a.stdout)
			}
			return failure("rollout %d of version %d aborted at step %d: %s", r.GetId(), r.GetVersion(), r.GetStep()+1, r.GetReason())
		}
		t := time.NewTimer(rolloutPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			if tty {
				fmt.Fprintln(a.stdout)
			}
			return failure("interrupted; the rollout goes on (flotctl rollout status -w %d)", id)
		case <-t.C:
		}
	}
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// progressLine is one line of rollout status -w; with bar, a progress bar
// of the share of the selected agents the current step assigns.
func progressLine(r *adminv1.Rollout, bar bool) string {
	pct := uint32(0)
	if int(r.GetStep()) < len(r.GetSteps()) {
		pct = r.GetSteps()[r.GetStep()]
	}
	if r.GetState() == adminv1.RolloutState_ROLLOUT_STATE_ABORTED {
		pct = 0
	}
	var b strings.Builder
	if bar {
		const width = 20
		filled := int(pct) * width / 100
		b.WriteString("[" + strings.Repeat("#", filled) + strings.Repeat(".", width-filled) + "] ")
	}
	fmt.Fprintf(&b, "rollout %d v%d: %s step %s", r.GetId(), r.GetVersion(), stateText(r.GetState()), stepText(r))
	if d := doing(r); d != "" {
		b.WriteString(": " + d)
	}
	return b.String()
}

// doing says what a live rollout's step does now.
func doing(r *adminv1.Rollout) string {
	switch r.GetState() {
	case adminv1.RolloutState_ROLLOUT_STATE_ABORTED:
		return r.GetReason()
	case adminv1.RolloutState_ROLLOUT_STATE_COMPLETED:
		if len(r.GetSelector()) == 0 {
			return fmt.Sprintf("version %d is active", r.GetVersion())
		}
		return fmt.Sprintf("agents matching %s run version %d", selectorText(r.GetSelector()), r.GetVersion())
	}
	switch r.GetPhase() {
	case adminv1.RolloutPhase_ROLLOUT_PHASE_WAITING:
		return fmt.Sprintf("waiting for ACKs, %d of %d assigned agents run v%d (%d selected)",
			r.GetReady(), r.GetAssigned(), r.GetVersion(), r.GetSelected())
	case adminv1.RolloutPhase_ROLLOUT_PHASE_BAKING:
		return fmt.Sprintf("baking %s of %s, %d agents on v%d (%d selected)", r.GetBaked().AsDuration().Round(time.Second),
			r.GetBake().AsDuration(), r.GetAssigned(), r.GetVersion(), r.GetSelected())
	}
	return ""
}

func stepText(r *adminv1.Rollout) string {
	if int(r.GetStep()) >= len(r.GetSteps()) {
		return "-"
	}
	return fmt.Sprintf("%d/%d (%d%%)", r.GetStep()+1, len(r.GetSteps()), r.GetSteps()[r.GetStep()])
}

func stateText(s adminv1.RolloutState) string {
	return strings.TrimPrefix(s.String(), "ROLLOUT_STATE_")
}

func selectorText(sel map[string]string) string {
	if len(sel) == 0 {
		return "(all)"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(sel)) {
		parts = append(parts, k+"="+sel[k])
	}
	return strings.Join(parts, ",")
}

func percents(steps []uint32) string {
	parts := make([]string, len(steps))
	for i, s := range steps {
		parts[i] = fmt.Sprintf("%d%%", s)
	}
	return strings.Join(parts, ",")
}

// writeRollout prints a rollout in a few lines.
func writeRollout(w io.Writer, r *adminv1.Rollout, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "rollout:\t%d by %s, started %s\n", r.GetId(), r.GetAuthor(), timestamp(r.GetCreatedAt()))
	fmt.Fprintf(tw, "version:\t%d (from %d)\n", r.GetVersion(), r.GetFromVersion())
	fmt.Fprintf(tw, "selector:\t%s\n", selectorText(r.GetSelector()))
	fmt.Fprintf(tw, "steps:\t%s, bake %s\n", percents(r.GetSteps()), r.GetBake().AsDuration())
	fmt.Fprintf(tw, "thresholds:\tconnect failures %.1f%%, 5xx %.1f%%, active connections dropping %.1f%%; at least %d samples\n",
		r.GetMaxConnectFailureRatio()*100, r.GetMax_5XxRatio()*100, r.GetMaxActiveDropRatio()*100, r.GetMinSamples())
	if d := r.GetAckWait(); d != nil {
		fmt.Fprintf(tw, "ack wait:\t%s\n", d.AsDuration())
	}
	fmt.Fprintf(tw, "state:\t%s, step %s\n", stateText(r.GetState()), stepText(r))
	if d := doing(r); d != "" {
		fmt.Fprintf(tw, "\t%s\n", d)
	}
	if an := r.GetAnalysis(); an != "" {
		fmt.Fprintf(tw, "analysis:\t%s\n", an)
	}
	if t := r.GetUpdatedAt(); t != nil {
		fmt.Fprintf(tw, "updated:\t%s ago\n", age(now.Sub(t.AsTime())))
	}
	return tw.Flush()
}
