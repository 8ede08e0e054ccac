package xds

import "testing"

// TestVersionsPublishedWithResponses: a new snapshot's versions become visible to held()
// (the NACK hold) inside the state-of-the-world cache's critical section that swaps its
// responses. A watch computes held() before it takes that lock, so it can never pair the
// hold of one version with the responses of another: before, versions were published
// first, and a NACK handled in between found no hold and was answered with the version
// it had just rejected (review of the shared-response cache).
func TestVersionsPublishedWithResponses(t *testing.T) {
	s := New(Options{})
	c := s.cache.sotw
	var locked, called bool
	c.set("g", map[string]*prepared{}, func() {
		called = true
		if c.mu.TryLock() {
			c.mu.Unlock()
			return
		}
		locked = true
	})
	if !called || !locked {
		t.Fatalf("publish called %v, under the cache lock %v; want both", called, locked)
	}
}
