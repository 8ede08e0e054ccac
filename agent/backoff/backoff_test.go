package backoff

import (
	"testing"
	"time"
)

func TestBackoffDoublesWithFullJitterAndCaps(t *testing.T) {
	b := Backoff{Min: 250 * time.Millisecond, Max: 2 * time.Second}
	for i, ceiling := range []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 2 * time.Second} {
		if d := b.Next(); d < 0 || d >= ceiling {
			t.Errorf("attempt %d: delay %v outside [0, %v)", i, d, ceiling)
		}
	}
	b.Reset()
	if d := b.Next(); d >= 250*time.Millisecond {
		t.Errorf("after reset: delay %v, want < 250ms", d)
	}
}
