//go:build !race

package e2e

// raceEnabled builds the binaries with -race when the tests run with it.
const raceEnabled = false
