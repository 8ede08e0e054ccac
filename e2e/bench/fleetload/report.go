package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// endpoints parses --endpoints: status addresses, or files holding one
// (written by run --addr-file).
func endpoints(s string) ([]string, error) {
	var out []string
	for _, e := range strings.Split(s, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		out = append(out, e)
	}
	if len(out) == 0 {
		return nil, errors.New("--endpoints is empty")
	}
	return out, nil
}

var client = &http.Client{Timeout: 30 * time.Second}

func getJSON(ctx context.Context, endpoint, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+endpoint+path, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", endpoint, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s%s: %s: %s", endpoint, path, resp.Status, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("%s%s: %w", endpoint, path, err)
	}
	return nil
}

// sumStatus adds up the status of every process.
func sumStatus(ctx context.Context, eps []string) (Status, error) {
	total := Status{Versions: map[string]map[string]int{}}
	for _, e := range eps {
		var st Status
		if err := getJSON(ctx, e, "/status", &st); err != nil {
			return total, err
		}
		total.Agents += st.Agents
		total.Connected += st.Connected
		total.Synced += st.Synced
		total.Streams += st.Streams
		total.Failures += st.Failures
		if total.FirstErr == "" {
			total.FirstErr = st.FirstErr
		}
		for t, vs := range st.Versions {
			if total.Versions[t] == nil {
				total.Versions[t] = map[string]int{}
			}
			for v, n := range vs {
				total.Versions[t][v] += n
			}
		}
	}
	return total, nil
}

// statusCommand is `fleetload status`: one line of totals; with
// --want-synced it first waits until that many agents are synced.
func statusCommand(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	eps := fs.String("endpoints", "", "status `addresses` of the run processes, comma separated")
	want := fs.Int("want-synced", 0, "wait until at least this many agents are synced (0: do not wait)")
	timeout := fs.Duration("timeout", 2*time.Minute, "bound on --want-synced")
	if err := fs.Parse(args); err != nil {
		return err
	}
	list, err := endpoints(*eps)
	if err != nil {
		return err
	}
	ctx := context.Background()
	deadline := time.Now().Add(*timeout)
	for {
		st, err := sumStatus(ctx, list)
		if err != nil {
			return err
		}
		if *want == 0 || st.Synced >= *want {
			fmt.Fprintln(out, statusLine(st))
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d agents synced after %s: %s", st.Synced, *want, *timeout, statusLine(st))
		}
		time.Sleep(100 * time.Millisecond) // polling another process; nothing to wait on
	}
}

func statusLine(st Status) string {
	var vs []string
	for _, t := range typeNames {
		if m := st.Versions[t]; len(m) > 0 {
			var parts []string
			for _, v := range slices.Sorted(maps.Keys(m)) {
				parts = append(parts, fmt.Sprintf("%s:%d", v, m[v]))
			}
			vs = append(vs, t+"="+strings.Join(parts, "/"))
		}
	}
	line := fmt.Sprintf("agents=%d connected=%d synced=%d streams_opened=%d streams_failed=%d acked=%s",
		st.Agents, st.Connected, st.Synced, st.Streams, st.Failures, strings.Join(vs, ","))
	if st.FirstErr != "" {
		line += fmt.Sprintf(" first_error=%q", st.FirstErr)
	}
	return line
}

// reportCommand is `fleetload report`.
func reportCommand(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	eps := fs.String("endpoints", "", "status `addresses` of the run processes, comma separated")
	since := fs.Int64("since", 0, "start of the measurement, Unix nanoseconds (e.g. date +%s%N before flotctl apply)")
	version := fs.String("version", "", "the version whose ACKs are measured")
	typesFlag := fs.String("types", "", "types that must reach --version (default: every type some agent ACKed it for; with --new-only, from --since on)")
	until := fs.Int64("until", 0, "count only ACKs at or before this time, Unix nanoseconds: an agent that ACKed later is not done (0: no bound); once it has passed, report at once")
	newOnly := fs.Bool("new-only", false, "leave out the agents that had ACKed --version before --since (an earlier rollout step's); they are counted as before=")
	synced := fs.Bool("synced", false, "measure the time to each agent's first complete set of ACKs on its current stream instead")
	wait := fs.Duration("wait", 2*time.Minute, "wait up to this long for every agent before reporting")
	if err := fs.Parse(args); err != nil {
		return err
	}
	list, err := endpoints(*eps)
	if err != nil {
		return err
	}
	if *since == 0 {
		return errors.New("--since is required")
	}
	if !*synced && *version == "" {
		return errors.New("--version or --synced is required")
	}
	if *synced && (*until != 0 || *newOnly) {
		return errors.New("--until and --new-only measure ACKs of a --version, not --synced")
	}
	if *until != 0 && *until < *since {
		return errors.New("--until is before --since")
	}
	sp := span{since: *since, until: *until, newOnly: *newOnly}
	types, err := parseTypes(*typesFlag)
	if err != nil {
		return fmt.Errorf("--types: %w", err)
	}
	ctx := context.Background()
	deadline := time.Now().Add(*wait)
	for {
		var r result
		if *synced {
			r, err = collectSynced(ctx, list, *since)
		} else {
			r, err = collectAcks(ctx, list, *version, sp, types)
		}
		if err != nil {
			return err
		}
		// Past --until no later ACK counts: the agents not done are what
		// is measured (those a rollout step left on the old version).
		closed := sp.until != 0 && time.Now().UnixNano() > sp.until
		if r.complete() || closed || time.Now().After(deadline) {
			fmt.Fprintln(out, r.line())
			if !r.complete() && !closed {
				return fmt.Errorf("%d of %d agents did not get there within %s", r.notDone(), r.agents, *wait)
			}
			return nil
		}
		time.Sleep(200 * time.Millisecond) // polling other processes; nothing to wait on
	}
}

// result is a convergence measurement over every agent: done ones got there
// (latencies has one entry each), before ones had got there before the
// measurement started and are left out (span.newOnly), and the others did
// not get there (notDone).
type result struct {
	agents, done, before int
	types                []string
	latencies            []time.Duration
}

func (r result) notDone() int { return r.agents - r.done - r.before }

// complete reports whether every agent is done or left out as before.
func (r result) complete() bool { return r.notDone() == 0 }

func (r result) line() string {
	slices.Sort(r.latencies)
	ms := func(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d)/float64(time.Millisecond)) }
	s := fmt.Sprintf("agents=%d done=%d not_done=%d before=%d", r.agents, r.done, r.notDone(), r.before)
	if len(r.types) > 0 {
		s += " types=" + strings.Join(r.types, ",")
	}
	if len(r.latencies) > 0 {
		s += fmt.Sprintf(" p50_ms=%s p99_ms=%s max_ms=%s", ms(percentile(r.latencies, 50)), ms(percentile(r.latencies, 99)), ms(r.latencies[len(r.latencies)-1]))
	}
	return s
}

// percentile returns the nearest-rank percentile p of sorted.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(p/100*float64(len(sorted)) + 0.999999)
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// span is what a convergence measurement counts: ACKs from since (Unix
// nanoseconds; earlier ones count as at since) to until (later ones do not
// count; 0 means no bound). With newOnly, an agent whose ACKs all came
// before since is left out: during a rollout step, the earlier steps' agents.
type span struct {
	since, until int64
	newOnly      bool
}

// acked reports whether an ACK at at (0: none) counts.
func (s span) acked(at int64) bool { return at != 0 && (s.until == 0 || at <= s.until) }

// pushed reports whether an ACK at at shows that the type was pushed within
// the span: with newOnly, only ACKs from since on do.
func (s span) pushed(at int64) bool { return s.acked(at) && (!s.newOnly || at >= s.since) }

// convergence computes, per agent, the time from since to its ACK of the
// target types: the latest of them. With no types given, the target types
// are those some agent ACKed the version for within the span (with
// newOnly, from since on: what was pushed during the span, not what some
// agents had ACKed before).
func convergence(at [][numTypes]int64, s span, want [numTypes]bool) result {
	var r result
	if want == ([numTypes]bool{}) {
		for _, a := range at {
			for t := range numTypes {
				if s.pushed(a[t]) {
					want[t] = true
				}
			}
		}
	}
	for t := range numTypes {
		if want[t] {
			r.types = append(r.types, typeNames[t])
		}
	}
	r.agents = len(at)
	if len(r.types) == 0 {
		return r
	}
agents:
	for _, a := range at {
		var last int64
		for t := range numTypes {
			if !want[t] {
				continue
			}
			if !s.acked(a[t]) {
				continue agents
			}
			last = max(last, a[t])
		}
		if s.newOnly && last < s.since {
			r.before++
			continue
		}
		r.done++
		r.latencies = append(r.latencies, time.Duration(max(last-s.since, 0)))
	}
	return r
}

func collectAcks(ctx context.Context, eps []string, version string, s span, want [numTypes]bool) (result, error) {
	var all [][numTypes]int64
	for _, e := range eps {
		var a Acks
		if err := getJSON(ctx, e, "/acks?version="+url.QueryEscape(version), &a); err != nil {
			return result{}, err
		}
		all = append(all, a.At...)
	}
	return convergence(all, s, want), nil
}

func collectSynced(ctx context.Context, eps []string, since int64) (result, error) {
	var r result
	for _, e := range eps {
		var s Synced
		if err := getJSON(ctx, e, "/synced", &s); err != nil {
			return r, err
		}
		for _, at := range s.At {
			r.agents++
			// A stream that synced before since is one the restart has
			// not closed yet.
			if at >= since {
				r.done++
				r.latencies = append(r.latencies, time.Duration(max(at-since, 0)))
			}
		}
	}
	return r, nil
}
