// Command fleetload is the load process of `make bench-fleet`: it simulates
// many agents, each with its own real ADS stream (grpc-go, one ClientConn and
// so one TCP connection per agent unless --agents-per-conn shares them), to a
// control plane, and answers every response like flotilla-agent does.
//
// Each simulated agent presents a node like the agent's (id, user agent
// "flotilla-agent", labels in the node metadata: dc=dc{i%3} and --labels),
// subscribes to clusters and listeners (wildcard), and after the first
// response of those to endpoints, route configurations and secrets (also
// wildcard: the control plane treats named requests as wildcard ones). It
// ACKs every response at once, echoing version_info and nonce, and records
// per type the versions it ACKed (the last few) and when it first did. A
// failed stream is retried after the agent's own backoff (full jitter, 250ms
// doubling to 30s, reset after a stream that received a response), on a new
// connection.
//
// Subcommands:
//
//	fleetload run    --xds ADDR --agents N [--first I] --addr-file F ...  # simulate agents; serve /status, /acks, /synced
//	fleetload status --endpoints A,B [--want-synced N --timeout D]        # print (or wait for) the synced count
//	fleetload report --endpoints A,B --since NS (--version V | --synced) # convergence percentiles over all processes
//	fleetload cpu    --pids P,Q [--every 20ms]                            # CPU seconds of processes, a line per sample
//	fleetload sink   --xds ADDR --addr-file F                             # the least ADS server grpc-go allows (a baseline)
//
// report measures, per agent, the time from --since (Unix nanoseconds, e.g.
// when `flotctl apply` started) to the agent's ACK of version V on every type
// that reached V (--types restricts or names them), and prints p50, p99 and
// max over every agent of every process that got there, and how many did not
// (not_done). --until counts only the ACKs up to a time (a rollout step's
// end: the agents not done are those the step left on the old version), and
// --new-only leaves out the agents that had ACKed V before --since (an
// earlier step's; counted as before). With --synced it measures instead the
// time to the agent's first complete set of ACKs on its current stream
// (after a control-plane restart: the reconnect storm).
//
// cpu samples the CPU time of processes (the control plane, the load
// processes) and of the machine, so that the bench can read the CPU used
// between instants it learns afterwards, such as a rollout step's start.
//
// sink is an ADS server that answers each type once with nothing and keeps
// nothing per stream: what grpc-go's transport costs per connected agent,
// the floor under the control plane's memory per agent.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: fleetload run|status|report|cpu|sink [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = runCommand(os.Args[2:])
	case "status":
		err = statusCommand(os.Args[2:], os.Stdout)
	case "report":
		err = reportCommand(os.Args[2:], os.Stdout)
	case "cpu":
		err = runCPUCommand(os.Args[2:])
	case "sink":
		err = sinkCommand(os.Args[2:])
	default:
		err = fmt.Errorf("unknown subcommand %q (run, status, report, cpu, sink)", os.Args[1])
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "fleetload %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
