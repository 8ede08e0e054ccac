package flotctl

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
)

func (a *app) statsCommand() *cobra.Command {
	var selector, by string
	var window time.Duration
	cmd := &cobra.Command{
		Use:   "stats [--selector k=v,...] [--by LABEL|version] [--window 1m|5m]",
		Short: "Show traffic rates the agents report: per agent, per label value or per config version",
		Long: `stats aggregates the reports agents send every few seconds (counter deltas per
listener and cluster) over a sliding window: connections, bytes and HTTP
requests per second, the share of upstream connections that failed, the share
of HTTP responses that were 5xx, open connections and healthy endpoints.

Without --by there is one row per agent that reported in the last 10
minutes; --by dc (any label) gives one row per value of the label, and
--by version one row per config version the agents run (a cohort).
-o json or -o yaml prints every window.`,
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
			var resp *adminv1.GetStatsResponse
			if err := c.call(cmd.Context(), func(ctx context.Context) error {
				resp, err = c.api.GetStats(ctx, &adminv1.GetStatsRequest{Selector: sel, GroupBy: by})
				return err
			}); err != nil {
				return c.explain(err, "")
			}
			if a.output != formatTable {
				return writeMessage(a.stdout, a.output, resp)
			}
			return writeStats(a.stdout, resp, window, a.now())
		}),
	}
	cmd.Flags().StringVarP(&selector, "selector", "l", "", "only agents with these labels, e.g. dc=ams,role=edge")
	cmd.Flags().StringVar(&by, "by", "", "group by a label (dc, role, ...) or by config version (version); default: one row per agent")
	cmd.Flags().DurationVar(&window, "window", time.Minute, "the sliding window shown in the table: 1m or 5m")
	return cmd
}

// writeStats prints one row per group for the window closest to window.
func writeStats(w io.Writer, resp *adminv1.GetStatsResponse, window time.Duration, now time.Time) error {
	groups := resp.GetGroups()
	if len(groups) == 0 {
		_, err := fmt.Fprintln(w, "no agent reported in the last 10 minutes")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	first := "AGENT"
	switch by := resp.GetGroupBy(); by {
	case "":
	case "version":
		first = "VERSION"
	default:
		first = strings.ToUpper(by)
	}
	win := pickWindow(groups[0].GetWindows(), window)
	if resp.GetGroupBy() == "" {
		fmt.Fprintf(tw, "%s\tVERSION\tCONN/S\tBYTES/S\tRQ/S\tCONNECT-FAIL\t5XX\tACTIVE\tENDPOINTS\tREPORTED\t(window %s)\n", first, shortDuration(win))
	} else {
		fmt.Fprintf(tw, "%s\tAGENTS\tCONN/S\tBYTES/S\tRQ/S\tCONNECT-FAIL\t5XX\tACTIVE\tENDPOINTS\tREPORTED\t(window %s)\n", first, shortDuration(win))
	}
	for _, g := range groups {
		var ws *adminv1.WindowStats
		for _, x := range g.GetWindows() {
			if x.GetWindow().AsDuration() == win {
				ws = x
			}
		}
		key := g.GetKey()
		if key == "" {
			key = "<none>"
		}
		second := strconv.FormatUint(uint64(g.GetAgents()), 10)
		if resp.GetGroupBy() == "" {
			second = "-"
			if v := g.GetAgent().GetConfigVersion(); v != 0 {
				second = "v" + strconv.FormatUint(v, 10)
			}
			if !g.GetAgent().GetConnected() {
				second += " (disconnected)"
			}
		} else if resp.GetGroupBy() == "version" && g.GetKey() != "" {
			key = "v" + key
		}
		reported := "-"
		if t := g.GetLastReport(); t != nil {
			reported = age(now.Sub(t.AsTime())) + " ago"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d/%d\t%s\t\n", key, second,
			rate(ws.GetConnectionsPerSecond()), bytesRate(ws.GetBytesPerSecond()), rate(ws.GetRequestsPerSecond()),
			ratio(ws.GetConnectFailureRatio(), ws.GetUpstreamCx()), ratio(ws.GetHttp_5XxRatio(), ws.GetHttpRequests()),
			g.GetDownstreamCxActive(), g.GetEndpointsHealthy(), g.GetEndpointsTotal(), reported)
	}
	return tw.Flush()
}

// pickWindow returns the length of the window closest to want.
func pickWindow(ws []*adminv1.WindowStats, want time.Duration) time.Duration {
	best := time.Duration(0)
	for _, w := range ws {
		d := w.GetWindow().AsDuration()
		if best == 0 || absDuration(d-want) < absDuration(best-want) {
			best = d
		}
	}
	return best
}

func absDuration(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// shortDuration renders 1m0s as 1m.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// rate renders a per-second rate with two significant decimals.
func rate(r float64) string {
	switch {
	case r == 0:
		return "0"
	case r < 10:
		return strconv.FormatFloat(r, 'f', 2, 64)
	case r < 1000:
		return strconv.FormatFloat(r, 'f', 1, 64)
	default:
		return strconv.FormatFloat(r, 'f', 0, 64)
	}
}

// bytesRate renders bytes per second with a binary unit.
func bytesRate(b float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for b >= 1024 && i < len(units)-1 {
		b /= 1024
		i++
	}
	return rate(b) + units[i]
}

// ratio renders a share as a percentage, "-" when nothing was counted.
func ratio(r float64, of uint64) string {
	if of == 0 {
		return "-"
	}
	return strconv.FormatFloat(100*r, 'f', 1, 64) + "%"
}
