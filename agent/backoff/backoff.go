// Package backoff is the agent's reconnect backoff: exponential, with full jitter, so that a
// fleet that lost its control plane at once does not come back at once.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Backoff hands out delays in [0, ceiling), where the ceiling starts at Min and doubles on
// every Next up to Max. The zero value is not usable: set Min and Max (0 < Min <= Max).
type Backoff struct {
	Min, Max time.Duration
	ceiling  time.Duration
}

// Reset starts the ceiling over at Min (after an attempt that made progress).
func (b *Backoff) Reset() { b.ceiling = 0 }

// Next returns a random delay in [0, ceiling) and doubles the ceiling.
func (b *Backoff) Next() time.Duration {
	if b.ceiling == 0 {
		b.ceiling = b.Min
	}
	d := rand.N(b.ceiling)
	b.ceiling = min(2*b.ceiling, b.Max)
	return d
}
