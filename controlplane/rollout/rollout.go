// Package rollout runs canary rollouts: a stored version goes to a growing
// share of the selected agents, step by step, and the rollout stops itself
// when an agent rejects the version or the canaries do worse than the rest.
//
// A rollout orders the selected agents by a stable hash of their node id
// and the rollout id (xds.Hash). A step of p% assigns the version to the
// first floor(p% × n) (at least one) of the n selected agents that are
// connected when the step starts, by raising the rollout's hash threshold:
// a step only adds agents, and an agent that connects later is assigned
// when its hash is under the threshold. The node ids assigned so far are
// stored in the rollout (AssignedNodes). Each step then waits until every
// stored agent is connected and runs the version (ACKed every type), bakes,
// and analyses the agents' reports over the bake (analysis.go): the canary
// cohort (the assigned agents) against the baseline cohort (the other
// selected agents on the rollout's from_version). An assigned agent that
// disconnects or stops running the version stops the bake (what was baked
// is kept); one that is not back and running the version within the ACK
// wait (the rollout's ack_wait, else Options.AckWait, else max(30s, bake))
// fails the step. A step never passes with no agent to check: a rollout
// with no connected agent to assign is refused at Start. Any NACK of the
// version by an assigned agent fails the step at once; so does a canary
// connect-failure or 5xx ratio above the rollout's threshold and above the
// baseline's, or a fall of the canaries' open connections by more than the
// rollout's ratio and more than the baseline's, each judged only with
// min_samples attempts, requests or connections. A failed step aborts the
// rollout: its assignments are dropped, so the canaries run the active
// version again. After the last step (100%) the rollout is COMPLETED; with
// an empty selector its version becomes the active version, unless the
// active version is no longer the rollout's from_version (then the rollout
// aborts rather than revert that change); with a selector its assignments
// stay while its version is newer than the active one.
//
// Rollouts are stored (store.Store), with the step, the phase and how much
// of the bake has passed, so a control plane restarted mid-rollout carries
// on: it waits for the ACKs again and bakes what is left.
//
// The Controller's state machine advances in Tick, which Run calls in a
// loop; tests call Tick with a fake clock.
package rollout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/flotilla-proxy/flotilla/controlplane/fleet"
	"github.com/flotilla-proxy/flotilla/controlplane/store"
	"github.com/flotilla-proxy/flotilla/controlplane/xds"
	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
)

// Defaults of a rollout's settings.
const (
	DefaultBake                   = 2 * time.Minute
	DefaultMaxConnectFailureRatio = 0.05
	DefaultMax5xxRatio            = 0.05
	DefaultMaxActiveDropRatio     = 0.5
	DefaultMinSamples             = 20
)

// DefaultSteps are the steps of a rollout that names none.
var DefaultSteps = []uint32{1, 10, 50, 100}

// Fleet is what the controller needs of the xDS layer (xds.Server).
type Fleet interface {
	// Briefs lists the connected agents whose labels include selector
	// (fleet.Registry.Briefs: at every tick, so not the full Agents).
	Briefs(selector map[string]string) []fleet.Brief
	// SetAssignments replaces the versions pinned on agents.
	SetAssignments(as []*xds.Assignment) error
}

// Stats answers GetStats from the agents' reports (stats.Aggregator).
type Stats interface {
	GetStats(ctx context.Context, req *adminv1.GetStatsRequest) (*adminv1.GetStatsResponse, error)
}

// Options configure a Controller.
type Options struct {
	// Store keeps versions and rollouts. Required.
	Store store.Store
	// Fleet is the xDS server. Required.
	Fleet Fleet
	// Activate makes a stored version the active one, stored and served
	// (admin.Service.Activate). Required.
	Activate func(ctx context.Context, version uint64) error
	// Stats answers the analysis; nil skips it (only NACKs fail a step).
	Stats Stats
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Interval is how often Run ticks while a rollout runs; 0 means 250ms.
	Interval time.Duration
	// AckWait is how long a step waits for an assigned agent to be
	// connected and run the version before it fails, for rollouts that do
	// not set their ack_wait; 0 means max(30s, the rollout's bake).
	AckWait time.Duration
}

// MinAckWait is the shortest default ACK wait (Options.AckWait).
const MinAckWait = 30 * time.Second

func (o Options) ackWait(r *adminv1.Rollout) time.Duration {
	if d := r.GetAckWait().AsDuration(); d > 0 {
		return d
	}
	if o.AckWait > 0 {
		return o.AckWait
	}
	return max(MinAckWait, r.GetBake().AsDuration())
}

// minSamples and maxActiveDropRatio default for rollouts stored before they
// had the fields.
func minSamples(r *adminv1.Rollout) uint32 {
	if r.GetMinSamples() == 0 {
		return DefaultMinSamples
	}
	return r.GetMinSamples()
}

func maxActiveDropRatio(r *adminv1.Rollout) float64 {
	if r.GetMaxActiveDropRatio() == 0 {
		return DefaultMaxActiveDropRatio
	}
	return r.GetMaxActiveDropRatio()
}

func (o Options) now() time.Time {
	if o.Now == nil {
		return time.Now()
	}
	return o.Now()
}

func (o Options) interval() time.Duration {
	if o.Interval == 0 {
		return 250 * time.Millisecond
	}
	return o.Interval
}

// checkpoint is how often the bake's progress is stored while baking.
const checkpoint = 5 * time.Second

// Controller runs rollouts, one at a time. It is safe for concurrent use.
type Controller struct {
	opts Options
	log  *slog.Logger
	wake chan struct{}

	mu sync.Mutex
	// lastTick is when the bake of rollout bakeID last advanced; zero after
	// a step starts, a pause or a restart (the time in between is not
	// baked). baked is its bake progress (the store has stored of it).
	lastTick      time.Time
	bakeID        uint64
	baked, stored time.Duration
	// waitSince is when rollout waitID started waiting for its assigned
	// agents (the ACK wait runs from it); zero after a step starts, a
	// pause, a resume or a restart.
	waitSince time.Time
	waitID    uint64
	// start holds the agents' counts at the start of the current step's
	// bake, for its analysis; nil until read (after a restart: when the
	// bake resumes).
	start *bakeStart
}

// ErrConflict is returned when a rollout cannot change state (another one
// runs, or it has ended).
var ErrConflict = errors.New("rollout conflict")

// ErrInvalid is returned for a StartRollout request that makes no sense.
var ErrInvalid = errors.New("invalid rollout")

// ErrNoAgents is returned by Start when no connected agent matches the
// selector: a step with nothing to check would pass. It wraps ErrConflict.
var ErrNoAgents = fmt.Errorf("%w: no agent to roll out to", ErrConflict)

// New returns a Controller and publishes the assignments of the stored
// rollouts, so a restarted control plane serves what it served before.
func New(ctx context.Context, opts Options) (*Controller, error) {
	if opts.Store == nil || opts.Fleet == nil || opts.Activate == nil {
		return nil, errors.New("rollout: Store, Fleet and Activate are required")
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	c := &Controller{opts: opts, log: log, wake: make(chan struct{}, 1)}
	if err := c.publish(ctx); err != nil {
		return nil, err
	}
	if r, err := c.current(ctx); err == nil && r != nil {
		log.Info("rollout carries on", "rollout", r.GetId(), "version", r.GetVersion(),
			"state", r.GetState().String(), "step", r.GetStep(), "phase", r.GetPhase().String())
	}
	return c, nil
}

// Run ticks until ctx is done.
func (c *Controller) Run(ctx context.Context) error {
	t := time.NewTicker(c.opts.interval())
	defer t.Stop()
	for {
		if err := c.Tick(ctx); err != nil && ctx.Err() == nil {
			c.log.Error("rollout tick", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-c.wake:
		}
	}
}

func (c *Controller) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// live reports whether a rollout has not ended.
func live(r *adminv1.Rollout) bool {
	s := r.GetState()
	return s == adminv1.RolloutState_ROLLOUT_STATE_RUNNING || s == adminv1.RolloutState_ROLLOUT_STATE_PAUSED
}

// Live returns the running or paused rollout, or nil when none is. It does
// not wait for a tick in progress.
func (c *Controller) Live(ctx context.Context) (*adminv1.Rollout, error) {
	return c.current(ctx)
}

// current returns the running or paused rollout, or nil.
func (c *Controller) current(ctx context.Context) (*adminv1.Rollout, error) {
	r, err := c.opts.Store.GetRollout(ctx, 0)
	if errors.Is(err, store.ErrRolloutNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if !live(r) {
		return nil, nil
	}
	return r, nil
}

// publish computes the assignments from the stored rollouts and hands them
// to the fleet: the live rollout's, and those of completed rollouts with a
// selector whose version is newer than the active one (older ones first,
// so later rollouts win where they overlap).
func (c *Controller) publish(ctx context.Context) error {
	active, err := c.opts.Store.Active(ctx)
	if err != nil {
		return fmt.Errorf("rollouts: %w", err)
	}
	all, err := c.opts.Store.ListRollouts(ctx, 0)
	if err != nil {
		return fmt.Errorf("rollouts: %w", err)
	}
	slices.Reverse(all)
	var as []*xds.Assignment
	files := map[uint64][]*adminv1.ConfigFile{}
	for _, r := range all {
		keep := live(r) || (r.GetState() == adminv1.RolloutState_ROLLOUT_STATE_COMPLETED &&
			len(r.GetSelector()) > 0 && r.GetVersion() > active)
		if !keep || r.GetThreshold() == 0 {
			continue
		}
		f, ok := files[r.GetVersion()]
		if !ok {
			v, err := c.opts.Store.Get(ctx, r.GetVersion())
			if err != nil {
				return fmt.Errorf("rollout %d: %w", r.GetId(), err)
			}
			f = v.GetFiles()
			files[r.GetVersion()] = f
		}
		as = append(as, &xds.Assignment{
			Version:   r.GetVersion(),
			Files:     f,
			Selector:  maps.Clone(r.GetSelector()),
			Salt:      salt(r),
			Threshold: r.GetThreshold(),
		})
	}
	if err := c.opts.Fleet.SetAssignments(as); err != nil {
		return fmt.Errorf("assign versions: %w", err)
	}
	return nil
}

// ActiveChanged is told that an apply or a rollback made another version
// active: the assignments of completed rollouts with a selector whose
// version is not newer than it go.
func (c *Controller) ActiveChanged(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.publish(ctx)
}

func salt(r *adminv1.Rollout) string { return strconv.FormatUint(r.GetId(), 10) }

// Start validates and stores a new rollout, and starts its first step.
func (c *Controller) Start(ctx context.Context, req *adminv1.StartRolloutRequest) (*adminv1.Rollout, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cur, err := c.current(ctx)
	if err != nil {
		return nil, err
	}
	if cur != nil {
		return nil, fmt.Errorf("%w: rollout %d of version %d is %s; abort it or wait",
			ErrConflict, cur.GetId(), cur.GetVersion(), stateName(cur.GetState()))
	}
	active, err := c.opts.Store.Active(ctx)
	if err != nil {
		return nil, err
	}
	r, err := newRollout(req, active)
	if err != nil {
		return nil, err
	}
	if _, err := c.opts.Store.Get(ctx, r.GetVersion()); err != nil {
		return nil, fmt.Errorf("%w: version %d: %w", ErrInvalid, r.GetVersion(), err)
	}
	if len(c.candidates(r)) == 0 {
		return nil, fmt.Errorf("%w: no connected agent matches selector %v: the rollout would check nothing",
			ErrNoAgents, r.GetSelector())
	}
	now := c.opts.now()
	r.CreatedAt, r.UpdatedAt = timestamppb.New(now), timestamppb.New(now)
	if err := c.opts.Store.CreateRollout(ctx, r); err != nil {
		return nil, err
	}
	c.log.Info("rollout started", "rollout", r.GetId(), "version", r.GetVersion(), "from", r.GetFromVersion(),
		"selector", r.GetSelector(), "steps", r.GetSteps(), "bake_s", r.GetBake().AsDuration().Seconds())
	c.lastTick, c.stored = time.Time{}, 0
	if err := c.enterStep(ctx, r, 0); err != nil {
		return nil, err
	}
	c.poke()
	return r, nil
}

// newRollout checks a request and fills in the defaults.
func newRollout(req *adminv1.StartRolloutRequest, active uint64) (*adminv1.Rollout, error) {
	if req.GetVersion() == 0 {
		return nil, fmt.Errorf("%w: version: a rollout needs a version", ErrInvalid)
	}
	if req.GetVersion() == active {
		return nil, fmt.Errorf("%w: version: version %d is already the active version", ErrInvalid, active)
	}
	steps := req.GetSteps()
	if len(steps) == 0 {
		steps = DefaultSteps
	}
	for i, p := range steps {
		switch {
		case p == 0 || p > 100:
			return nil, fmt.Errorf("%w: steps: step %d is %d%%, not in 1..100", ErrInvalid, i+1, p)
		case i > 0 && p <= steps[i-1]:
			return nil, fmt.Errorf("%w: steps: %d%% after %d%%: steps must increase", ErrInvalid, p, steps[i-1])
		}
	}
	if steps[len(steps)-1] != 100 {
		return nil, fmt.Errorf("%w: steps: the last step is %d%%, it must be 100", ErrInvalid, steps[len(steps)-1])
	}
	bake := DefaultBake
	if req.GetBake() != nil {
		if err := req.GetBake().CheckValid(); err != nil {
			return nil, fmt.Errorf("%w: bake: %w", ErrInvalid, err)
		}
		bake = req.GetBake().AsDuration()
	}
	if bake < 0 {
		return nil, fmt.Errorf("%w: bake: %s is negative", ErrInvalid, bake)
	}
	ratio := func(name string, v, def float64) (float64, error) {
		switch {
		case v == 0:
			return def, nil
		case v < 0 || v > 1 || math.IsNaN(v):
			return 0, fmt.Errorf("%w: %s: %v is not a ratio in 0..1", ErrInvalid, name, v)
		}
		return v, nil
	}
	cfr, err := ratio("max_connect_failure_ratio", req.GetMaxConnectFailureRatio(), DefaultMaxConnectFailureRatio)
	if err != nil {
		return nil, err
	}
	r5, err := ratio("max_5xx_ratio", req.GetMax_5XxRatio(), DefaultMax5xxRatio)
	if err != nil {
		return nil, err
	}
	drop, err := ratio("max_active_drop_ratio", req.GetMaxActiveDropRatio(), DefaultMaxActiveDropRatio)
	if err != nil {
		return nil, err
	}
	minSamples := req.GetMinSamples()
	if minSamples == 0 {
		minSamples = DefaultMinSamples
	}
	var ackWait *durationpb.Duration
	if req.GetAckWait() != nil {
		if err := req.GetAckWait().CheckValid(); err != nil {
			return nil, fmt.Errorf("%w: ack_wait: %w", ErrInvalid, err)
		}
		switch d := req.GetAckWait().AsDuration(); {
		case d < 0:
			return nil, fmt.Errorf("%w: ack_wait: %s is negative", ErrInvalid, d)
		case d > 0:
			ackWait = durationpb.New(d)
		}
	}
	return &adminv1.Rollout{
		Version:                req.GetVersion(),
		FromVersion:            active,
		Selector:               maps.Clone(req.GetSelector()),
		Steps:                  slices.Clone(steps),
		Bake:                   durationpb.New(bake),
		MaxConnectFailureRatio: cfr,
		Max_5XxRatio:           r5,
		MaxActiveDropRatio:     drop,
		MinSamples:             minSamples,
		AckWait:                ackWait,
		State:                  adminv1.RolloutState_ROLLOUT_STATE_RUNNING,
		Author:                 req.GetAuthor(),
	}, nil
}

// candidates are the agents a rollout may assign: connected, matching its
// selector, not proxyless gRPC clients.
func (c *Controller) candidates(r *adminv1.Rollout) []fleet.Brief {
	var out []fleet.Brief
	for _, a := range c.opts.Fleet.Briefs(r.GetSelector()) {
		if !strings.HasPrefix(a.UserAgent, "gRPC") {
			out = append(out, a)
		}
	}
	return out
}

// enterStep makes step the rollout's current one: the threshold rises so
// that the step's share of the connected selected agents is assigned.
// Callers hold c.mu.
func (c *Controller) enterStep(ctx context.Context, r *adminv1.Rollout, step int) error {
	agents := c.candidates(r)
	p := r.GetSteps()[step]
	n := len(agents)
	// At most the step's share, and at least one agent: 34% of 3 agents is
	// 1, 1% of 10 is 1 (a share rounded up would make 34% of 3 two).
	k := max(int(p)*n/100, min(n, 1))
	threshold := r.GetThreshold()
	if p >= 100 {
		threshold = math.MaxUint64
	} else if k > 0 {
		hashes := make([]uint64, n)
		for i, a := range agents {
			hashes[i] = xds.Hash(a.NodeID, salt(r))
		}
		slices.Sort(hashes)
		threshold = max(threshold, hashes[k-1])
	}
	// The step must see every agent assigned so far run the version: the
	// ones assigned by earlier steps and the connected ones under the new
	// threshold.
	nodes := slices.Clone(r.GetAssignedNodes())
	a := &xds.Assignment{Selector: r.GetSelector(), Salt: salt(r), Threshold: threshold}
	for _, ag := range agents {
		if a.Covers(ag.NodeID, ag.Labels) {
			nodes = append(nodes, ag.NodeID)
		}
	}
	slices.Sort(nodes)
	nodes = slices.Compact(nodes)
	now := c.opts.now()
	r.Step = uint32(step)
	r.Phase = adminv1.RolloutPhase_ROLLOUT_PHASE_WAITING
	r.Threshold = threshold
	r.Baked = durationpb.New(0)
	r.Selected, r.Assigned = uint32(n), uint32(len(nodes))
	r.AssignedNodes = nodes
	r.StepStartedAt, r.UpdatedAt = timestamppb.New(now), timestamppb.New(now)
	r.Reason = ""
	c.lastTick, c.stored = time.Time{}, 0
	c.waitSince = time.Time{}
	c.start = nil
	if len(nodes) == 0 {
		return c.abort(ctx, r, fmt.Sprintf("step %d (%d%%): no connected agent matches the selector: nothing to check", step+1, p))
	}
	if err := c.opts.Store.PutRollout(ctx, r); err != nil {
		return err
	}
	c.log.Info("rollout step", "rollout", r.GetId(), "version", r.GetVersion(), "step", step+1,
		"percent", p, "assigned", len(nodes), "new", k, "selected", n)
	return c.publish(ctx)
}

// Tick advances the live rollout, if any, by what the fleet and the clock
// say: assigned agents that NACKed abort it; once every assigned agent runs
// the version, the bake starts; after the bake, the analysis passes to the
// next step or aborts.
func (c *Controller) Tick(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, err := c.current(ctx)
	if err != nil || r == nil || r.GetState() != adminv1.RolloutState_ROLLOUT_STATE_RUNNING {
		return err
	}
	if len(r.GetAssignedNodes()) == 0 && r.GetThreshold() != 0 {
		// Stored before rollouts kept their node ids: take the connected
		// agents the threshold covers.
		a := &xds.Assignment{Selector: r.GetSelector(), Salt: salt(r), Threshold: r.GetThreshold()}
		for _, ag := range c.candidates(r) {
			if a.Covers(ag.NodeID, ag.Labels) {
				r.AssignedNodes = append(r.AssignedNodes, ag.NodeID)
			}
		}
		slices.Sort(r.AssignedNodes)
		if len(r.GetAssignedNodes()) == 0 {
			return c.abort(ctx, r, fmt.Sprintf("step %d: no connected agent is assigned: nothing to check", r.GetStep()+1))
		}
		if err := c.opts.Store.PutRollout(ctx, r); err != nil {
			return err
		}
	}
	assigned, ready, nack, missing := c.assigned(r)
	if nack != "" {
		return c.abort(ctx, r, nack)
	}
	now := c.opts.now()
	if r.GetPhase() == adminv1.RolloutPhase_ROLLOUT_PHASE_BAKING && ready < assigned {
		// An assigned agent went away or off the version: the bake stops
		// (what was baked is kept) until it is back.
		c.advanceBake(r, now)
		c.lastTick = time.Time{}
		r.Phase = adminv1.RolloutPhase_ROLLOUT_PHASE_WAITING
		r.UpdatedAt = timestamppb.New(now)
		c.waitSince, c.waitID = now, r.GetId()
		c.log.Warn("rollout step waits again for its agents", "rollout", r.GetId(), "step", r.GetStep()+1,
			"ready", ready, "assigned", assigned, "missing", missing)
		return c.opts.Store.PutRollout(ctx, r)
	}
	switch r.GetPhase() {
	case adminv1.RolloutPhase_ROLLOUT_PHASE_WAITING:
		if ready < assigned {
			if c.waitSince.IsZero() || c.waitID != r.GetId() {
				c.waitSince, c.waitID = now, r.GetId()
			}
			if wait := c.opts.ackWait(r); now.Sub(c.waitSince) >= wait {
				return c.abort(ctx, r, fmt.Sprintf("step %d: %d of %d assigned agents do not run v%d after %s: %s",
					r.GetStep()+1, assigned-ready, assigned, r.GetVersion(), wait, missing))
			}
			return nil
		}
		c.waitSince = time.Time{}
		r.Phase = adminv1.RolloutPhase_ROLLOUT_PHASE_BAKING
		r.UpdatedAt = timestamppb.New(now)
		c.lastTick = time.Time{}
		c.advanceBake(r, now)
		c.markBakeStart(ctx, r, now)
		c.log.Info("rollout step acked; baking", "rollout", r.GetId(), "step", r.GetStep()+1,
			"agents", assigned, "bake_s", (r.GetBake().AsDuration() - c.stored).Seconds())
		return c.opts.Store.PutRollout(ctx, r)
	case adminv1.RolloutPhase_ROLLOUT_PHASE_BAKING:
		c.markBakeStart(ctx, r, now) // after a restart: from the resume
		baked := c.advanceBake(r, now)
		if baked < r.GetBake().AsDuration() {
			if baked-c.stored >= checkpoint {
				c.stored = baked
				return c.opts.Store.PutRollout(ctx, r)
			}
			return nil
		}
		reason, summary := c.analyse(ctx, r)
		r.Analysis = summary
		if summary != "" {
			c.log.Info("rollout analysis", "rollout", r.GetId(), "step", r.GetStep()+1, "analysis", summary)
		}
		if reason != "" {
			return c.abort(ctx, r, reason)
		}
		return c.next(ctx, r)
	}
	return nil
}

// maxMissing is how many not-ready agents a reason names.
const maxMissing = 5

// assigned counts the agents the rollout assigned (AssignedNodes) and those
// of them that are connected and run its version; missing describes the
// others ("a01 disconnected, a02 runs v1"). nack describes the first
// connected agent under the threshold that rejected the version.
func (c *Controller) assigned(r *adminv1.Rollout) (assigned, ready int, nack, missing string) {
	a := &xds.Assignment{Selector: r.GetSelector(), Salt: salt(r), Threshold: r.GetThreshold()}
	connected := map[string]fleet.Brief{}
	var nacked *fleet.Brief // the NACKing agent with the smallest node id
	for _, ag := range c.candidates(r) {
		connected[ag.NodeID] = ag
		if ag.NackType != "" && a.Covers(ag.NodeID, ag.Labels) && (nacked == nil || ag.NodeID < nacked.NodeID) {
			nacked = &ag
		}
	}
	if ag := nacked; ag != nil {
		nack = fmt.Sprintf("%s: %s NACKED v%d: %s", ag.NodeID, ag.NackType, r.GetVersion(), ag.Nack.GetMessage())
		if v := ag.Nack.GetVersion(); v != "" && v != strconv.FormatUint(r.GetVersion(), 10) {
			// The version keeps a type unchanged from an earlier one, which
			// the agent rejected before (the NACK hold does not send it
			// again): say so rather than blame the version.
			nack = fmt.Sprintf("%s: %s NACKED v%d: it keeps %s unchanged from v%s, which %s rejected: %s",
				ag.NodeID, ag.NackType, r.GetVersion(), ag.NackType, v, ag.NodeID, ag.Nack.GetMessage())
		}
	}
	var notReady []string
	for _, id := range r.GetAssignedNodes() {
		assigned++
		ag, ok := connected[id]
		switch {
		case !ok:
			notReady = append(notReady, id+" disconnected")
		case ag.ConfigVersion != r.GetVersion():
			notReady = append(notReady, fmt.Sprintf("%s runs v%d", id, ag.ConfigVersion))
		default:
			ready++
		}
	}
	if len(notReady) > maxMissing {
		notReady = append(notReady[:maxMissing], fmt.Sprintf("%d more", len(notReady)-maxMissing))
	}
	return assigned, ready, nack, strings.Join(notReady, ", ")
}

// next goes to the next step, or completes the rollout after the last one.
// Callers hold c.mu.
func (c *Controller) next(ctx context.Context, r *adminv1.Rollout) error {
	if int(r.GetStep())+1 < len(r.GetSteps()) {
		return c.enterStep(ctx, r, int(r.GetStep())+1)
	}
	return c.complete(ctx, r)
}

// complete ends a rollout whose last step passed. Callers hold c.mu.
func (c *Controller) complete(ctx context.Context, r *adminv1.Rollout) error {
	if len(r.GetSelector()) == 0 {
		// Activating over a version made active during the rollout (an
		// apply or rollback that went around it) would revert that change.
		active, err := c.opts.Store.Active(ctx)
		if err != nil {
			return fmt.Errorf("rollout %d: %w", r.GetId(), err)
		}
		if active != r.GetFromVersion() {
			return c.abort(ctx, r, fmt.Sprintf("version %d became active during the rollout (it started from %d): "+
				"not activating v%d over it", active, r.GetFromVersion(), r.GetVersion()))
		}
		// The version becomes the active one before the assignments go, so
		// no agent runs the old version in between.
		if err := c.opts.Activate(ctx, r.GetVersion()); err != nil {
			return fmt.Errorf("rollout %d: activate version %d: %w", r.GetId(), r.GetVersion(), err)
		}
	}
	now := c.opts.now()
	r.State = adminv1.RolloutState_ROLLOUT_STATE_COMPLETED
	r.UpdatedAt = timestamppb.New(now)
	r.Phase = adminv1.RolloutPhase_ROLLOUT_PHASE_UNSPECIFIED
	if err := c.opts.Store.PutRollout(ctx, r); err != nil {
		return err
	}
	c.log.Info("rollout completed", "rollout", r.GetId(), "version", r.GetVersion(), "selector", r.GetSelector())
	return c.publish(ctx)
}

// abort ends a rollout and drops its assignments. Callers hold c.mu.
func (c *Controller) abort(ctx context.Context, r *adminv1.Rollout, reason string) error {
	r.State = adminv1.RolloutState_ROLLOUT_STATE_ABORTED
	r.Reason = reason
	r.UpdatedAt = timestamppb.New(c.opts.now())
	if err := c.opts.Store.PutRollout(ctx, r); err != nil {
		return err
	}
	c.log.Warn("rollout aborted; canaries back on the active version", "rollout", r.GetId(),
		"version", r.GetVersion(), "step", r.GetStep()+1, "reason", reason)
	return c.publish(ctx)
}

// Get returns rollout id (0: the latest), with the live count of ready agents.
func (c *Controller) Get(ctx context.Context, id uint64) (*adminv1.Rollout, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, err := c.opts.Store.GetRollout(ctx, id)
	if err != nil {
		return nil, err
	}
	withDefaults(r)
	if live(r) {
		_, ready, _, missing := c.assigned(r)
		r.Ready = uint32(ready)
		if r.GetPhase() == adminv1.RolloutPhase_ROLLOUT_PHASE_WAITING && missing != "" {
			r.Reason = "waiting for " + missing
		}
		if r.GetPhase() == adminv1.RolloutPhase_ROLLOUT_PHASE_BAKING && c.bakeID == r.GetId() && !c.lastTick.IsZero() {
			r.Baked = durationpb.New(c.baked) // the store has it every few seconds
		}
	}
	return r, nil
}

// List returns rollouts newest first.
func (c *Controller) List(ctx context.Context, limit int) ([]*adminv1.Rollout, error) {
	rs, err := c.opts.Store.ListRollouts(ctx, limit)
	for _, r := range rs {
		withDefaults(r)
	}
	return rs, err
}

// withDefaults fills in the settings a rollout stored before it had them
// runs with.
func withDefaults(r *adminv1.Rollout) {
	r.MinSamples, r.MaxActiveDropRatio = minSamples(r), maxActiveDropRatio(r)
}

// change applies an operator's action to rollout id (0: the latest).
func (c *Controller) change(ctx context.Context, id uint64, verb string, f func(r *adminv1.Rollout) error) (*adminv1.Rollout, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, err := c.opts.Store.GetRollout(ctx, id)
	if err != nil {
		return nil, err
	}
	if !live(r) {
		return nil, fmt.Errorf("%w: cannot %s rollout %d: it is %s", ErrConflict, verb, r.GetId(), stateName(r.GetState()))
	}
	before := proto.Clone(r)
	if err := f(r); err != nil {
		return nil, err
	}
	if !proto.Equal(before, r) {
		r.UpdatedAt = timestamppb.New(c.opts.now())
		if err := c.opts.Store.PutRollout(ctx, r); err != nil {
			return nil, err
		}
	}
	c.poke()
	return r, nil
}

// Pause stops a running rollout where it is; the bake clock stops too.
func (c *Controller) Pause(ctx context.Context, id uint64) (*adminv1.Rollout, error) {
	return c.change(ctx, id, "pause", func(r *adminv1.Rollout) error {
		if r.GetState() == adminv1.RolloutState_ROLLOUT_STATE_RUNNING {
			if r.GetPhase() == adminv1.RolloutPhase_ROLLOUT_PHASE_BAKING {
				c.advanceBake(r, c.opts.now())
			}
			c.lastTick, c.waitSince = time.Time{}, time.Time{}
			r.State = adminv1.RolloutState_ROLLOUT_STATE_PAUSED
			c.log.Info("rollout paused", "rollout", r.GetId())
		}
		return nil
	})
}

// advanceBake adds the time baked since the last tick to r.Baked and
// returns it. The first tick of a bake (after a step starts, a resume or a
// restart) starts the clock from what the store says. Callers hold c.mu.
func (c *Controller) advanceBake(r *adminv1.Rollout, now time.Time) time.Duration {
	if c.lastTick.IsZero() || c.bakeID != r.GetId() {
		c.bakeID, c.baked, c.stored = r.GetId(), r.GetBaked().AsDuration(), r.GetBaked().AsDuration()
	} else if now.After(c.lastTick) {
		c.baked += now.Sub(c.lastTick)
	}
	c.lastTick = now
	r.Baked = durationpb.New(c.baked)
	return c.baked
}

// Resume carries on with a paused rollout.
func (c *Controller) Resume(ctx context.Context, id uint64) (*adminv1.Rollout, error) {
	return c.change(ctx, id, "resume", func(r *adminv1.Rollout) error {
		if r.GetState() == adminv1.RolloutState_ROLLOUT_STATE_PAUSED {
			r.State = adminv1.RolloutState_ROLLOUT_STATE_RUNNING
			c.lastTick, c.waitSince = time.Time{}, time.Time{}
			c.log.Info("rollout resumed", "rollout", r.GetId())
		}
		return nil
	})
}

// Promote jumps a rollout to its last step (every selected agent) now,
// without a bake: it completes once they all run the version. A NACK still
// aborts it, and so does the analysis.
func (c *Controller) Promote(ctx context.Context, id uint64) (*adminv1.Rollout, error) {
	return c.change(ctx, id, "promote", func(r *adminv1.Rollout) error {
		r.State = adminv1.RolloutState_ROLLOUT_STATE_RUNNING
		c.log.Info("rollout promoted", "rollout", r.GetId())
		if err := c.enterStep(ctx, r, len(r.GetSteps())-1); err != nil {
			return err
		}
		r.Baked = r.GetBake() // nothing left to bake
		return nil
	})
}

// Abort stops a rollout and puts its canaries back on the active version.
func (c *Controller) Abort(ctx context.Context, id uint64, reason string) (*adminv1.Rollout, error) {
	if reason == "" {
		reason = "aborted by an operator"
	}
	return c.change(ctx, id, "abort", func(r *adminv1.Rollout) error {
		return c.abort(ctx, r, reason)
	})
}

func stateName(s adminv1.RolloutState) string {
	return strings.TrimPrefix(s.String(), "ROLLOUT_STATE_")
}
