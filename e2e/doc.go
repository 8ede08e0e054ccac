// Package e2e tests Flotilla end to end: it builds the real binaries
// (flotilla-controlplane, flotilla-agent, flotctl), starts them as processes
// on loopback ports with their own temporary directories, pushes config with
// flotctl and real TCP traffic through the agents to in-process echo
// backends, and kills and restarts processes to check that traffic keeps
// flowing and the fleet converges.
//
// Run it with `go test ./e2e/...` (add -race to build the binaries with the
// race detector too). Each test starts its own control plane and agents, so
// tests are independent and run in parallel. A failing test prints the tail
// of every process log it started.
package e2e
