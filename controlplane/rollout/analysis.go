package rollout

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
)

// The analysis of a step compares what the canaries did over the step's
// bake with what the baseline did over the same span, from the agents'
// cumulative counts (GetStats, one group per agent): the controller reads
// them when the bake starts (or, after a restart, when it resumes), and
// subtracts those from the counts when the bake ends, agent by agent. A
// bake of any length is thus counted whole, and nothing from before it, to
// within a report at each end: agents report counter deltas every few
// seconds, and the first report of the bake holds what an agent counted
// since its previous one.
//
// The canaries are the agents the rollout assigned (Rollout.AssignedNodes);
// the baseline is the other selected agents that run the rollout's
// from_version, not agents on some older or newer version.

// counts are one agent's cumulative counts and open client connections, as
// the aggregator last heard them.
type counts struct {
	attempts, failures, requests, http5xx uint64
	active                                uint64
}

// bakeStart is what the analysis of a step subtracts: the agents' counts
// when its bake started (or resumed after a restart).
type bakeStart struct {
	id     uint64
	step   uint32
	at     time.Time
	agents map[string]counts
}

// sample reads the counts of the agents the rollout selects.
func (c *Controller) sample(ctx context.Context, r *adminv1.Rollout) (map[string]counts, error) {
	resp, err := c.opts.Stats.GetStats(ctx, &adminv1.GetStatsRequest{Selector: r.GetSelector()})
	if err != nil {
		return nil, err
	}
	out := make(map[string]counts, len(resp.GetGroups()))
	for _, g := range resp.GetGroups() {
		cum := g.GetCumulative()
		out[g.GetKey()] = counts{attempts: cum.GetUpstreamCx(), failures: cum.GetConnectFailures(),
			requests: cum.GetHttpRequests(), http5xx: cum.GetHttp_5Xx(), active: g.GetDownstreamCxActive()}
	}
	return out, nil
}

// markBakeStart reads the counts the step's analysis will subtract, unless
// it has them already (a bake that stopped and starts again keeps its
// start). Without stats, it tries again at the next tick. Callers hold c.mu.
func (c *Controller) markBakeStart(ctx context.Context, r *adminv1.Rollout, now time.Time) {
	if c.opts.Stats == nil || (c.start != nil && c.start.id == r.GetId() && c.start.step == r.GetStep()) {
		return
	}
	agents, err := c.sample(ctx, r)
	if err != nil {
		c.log.Warn("rollout: no stats at the bake's start; trying again", "rollout", r.GetId(), "step", r.GetStep()+1, "error", err)
		return
	}
	c.start = &bakeStart{id: r.GetId(), step: r.GetStep(), at: now, agents: agents}
}

// cohort sums the counts of some agents over a bake.
type cohort struct {
	agents                                int
	attempts, failures, requests, http5xx uint64
	// activeFrom and activeTo are the open connections, at the bake's
	// start and now, of the agents that had reported at its start.
	activeFrom, activeTo uint64
}

// add adds one agent's counts between its start (ok: it had reported at
// the bake's start) and now.
func (co *cohort) add(from counts, ok bool, to counts) {
	co.agents++
	if !ok || to.attempts < from.attempts || to.requests < from.requests {
		// Reported first during the bake (or forgotten and heard again):
		// everything it counted is the bake's.
		from = counts{active: from.active}
	}
	co.attempts += to.attempts - from.attempts
	co.failures += sub(to.failures, from.failures)
	co.requests += to.requests - from.requests
	co.http5xx += sub(to.http5xx, from.http5xx)
	if ok {
		co.activeFrom += from.active
		co.activeTo += to.active
	}
}

func sub(a, b uint64) uint64 {
	if a < b {
		return 0
	}
	return a - b
}

func ratio(n, d uint64) float64 {
	if d == 0 {
		return 0
	}
	return float64(n) / float64(d)
}

// drop is how much the cohort's open connections fell over the bake,
// relative to their number at its start (negative when they rose).
func (co *cohort) drop() float64 {
	if co.activeFrom == 0 {
		return 0
	}
	return (float64(co.activeFrom) - float64(co.activeTo)) / float64(co.activeFrom)
}

// analyse compares the canary cohort with the baseline cohort over the
// step's bake. It returns why the step fails ("" when it passes) and what
// it compared and skipped, for Rollout.Analysis.
func (c *Controller) analyse(ctx context.Context, r *adminv1.Rollout) (reason, summary string) {
	if c.opts.Stats == nil {
		return "", ""
	}
	step := fmt.Sprintf("step %d (%d%%)", r.GetStep()+1, r.GetSteps()[r.GetStep()])
	start := c.start
	if start == nil || start.id != r.GetId() || start.step != r.GetStep() {
		return "", step + ": not analysed: no stats from the bake's start"
	}
	now, err := c.sample(ctx, r)
	if err != nil {
		c.log.Warn("rollout analysis without stats", "rollout", r.GetId(), "error", err)
		return "", fmt.Sprintf("%s: not analysed: %v", step, err)
	}
	var canary, base cohort
	for _, id := range r.GetAssignedNodes() {
		if to, ok := now[id]; ok {
			from, had := start.agents[id]
			canary.add(from, had, to)
		}
	}
	for _, ag := range c.candidates(r) {
		id := ag.NodeID
		// AssignedNodes is sorted (enterStep).
		if _, canary := slices.BinarySearch(r.GetAssignedNodes(), id); ag.ConfigVersion != r.GetFromVersion() || canary {
			continue
		}
		if to, ok := now[id]; ok {
			from, had := start.agents[id]
			base.add(from, had, to)
		}
	}
	least := uint64(minSamples(r))
	span := c.opts.now().Sub(start.at).Round(time.Second)
	var notes []string
	notes = append(notes, fmt.Sprintf("%s over %s: %s against %s on v%d",
		step, span, count(canary.agents, "canary", "canaries"), count(base.agents, "baseline agent", "baseline agents"), r.GetFromVersion()))

	for _, j := range []ratioJudgement{
		{"connect failures", "connect-failure ratio", "attempt", "attempts", canary.failures, canary.attempts, base.failures, base.attempts, r.GetMaxConnectFailureRatio()},
		{"5xx", "5xx ratio", "request", "requests", canary.http5xx, canary.requests, base.http5xx, base.requests, r.GetMax_5XxRatio()},
	} {
		note, why := j.judge(least)
		notes = append(notes, note)
		if reason == "" {
			reason = why
		}
	}

	cd, bd := canary.drop(), base.drop()
	switch {
	case canary.activeFrom < least:
		notes = append(notes, fmt.Sprintf("active connections not judged: %d at the bake's start, fewer than %d", canary.activeFrom, least))
	default:
		notes = append(notes, fmt.Sprintf("active connections %d to %d (%s), baseline %d to %d (%s)",
			canary.activeFrom, canary.activeTo, change(cd), base.activeFrom, base.activeTo, change(bd)))
		if maxDrop := maxActiveDropRatio(r); cd > maxDrop && cd > bd && reason == "" {
			reason = fmt.Sprintf("analysis: canary active connections fell %.1f%% (%d to %d), more than %.1f%% and than the baseline's (%s)",
				cd*100, canary.activeFrom, canary.activeTo, maxDrop*100, change(bd))
		}
	}
	return reason, strings.Join(notes, "; ")
}

// ratioJudgement is one ratio the analysis judges: the canaries' n of d
// against the baseline's, and the rollout's threshold.
type ratioJudgement struct {
	note, name, one, many string
	n, d, baseN, baseD    uint64
	max                   float64
}

// judge returns what the status says of the ratio and, when the canaries
// do worse than the threshold and the baseline, why the step fails. With
// fewer than least samples it is not judged.
func (j ratioJudgement) judge(least uint64) (note, reason string) {
	if j.d < least {
		return fmt.Sprintf("%s not judged: %s, fewer than %d", j.note, count(j.d, j.one, j.many), least), ""
	}
	c, b := ratio(j.n, j.d), ratio(j.baseN, j.baseD)
	note = fmt.Sprintf("%s %.1f%% (%d of %d), baseline %.1f%% (%d of %d)", j.note, c*100, j.n, j.d, b*100, j.baseN, j.baseD)
	if c > j.max && c > b {
		reason = fmt.Sprintf("analysis: canary %s %.1f%% (%d of %d) is above %.1f%% and the baseline's %.1f%%", j.name, c*100, j.n, j.d, j.max*100, b*100)
	}
	return note, reason
}

// count is "1 canary", "3 canaries".
func count[N int | uint64](n N, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// change describes a relative drop as a change: "-70.0%", "+5.0%".
func change(drop float64) string {
	if drop == 0 {
		return "+0.0%" // not "-0.0%"
	}
	return fmt.Sprintf("%+.1f%%", -drop*100)
}
