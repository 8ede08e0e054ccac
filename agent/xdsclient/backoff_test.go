package xdsclient

import (
	"testing"
	"time"
)

func TestBackoffDoublesWithFullJitterAndCaps(t *testing.T) {
	b := backoff{min: 250 * time.Millisecond, max: 2 * time.Second}
	for i, ceiling := range []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 2 * time.Second} {
		if d := b.next(); d < 0 || d >= ceiling {
			t.Errorf("attempt %d: delay %v outside [0, %v)", i, d, ceiling)
		}
	}
	b.reset()
	if d := b.next(); d >= 250*time.Millisecond {
		t.Errorf("after reset: delay %v, want < 250ms", d)
	}
}
