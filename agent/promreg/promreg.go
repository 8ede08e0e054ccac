// Package promreg registers the agent's Prometheus collectors so that several owners of
// the same metrics (two proxy Managers, two upstream Registries, tests) can share one
// Registerer: the second registration gets the collector already there.
package promreg

import (
	"errors"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
)

// Register registers c with reg and returns the collector to use: c, or the identical
// collector already registered. A nil reg keeps c unregistered. A conflicting registration
// (same name, other labels or help) is logged with what, and c is used unregistered.
func Register[C prometheus.Collector](reg prometheus.Registerer, log *slog.Logger, what string, c C) C {
	if reg == nil {
		return c
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		log.Error("cannot register "+what+" metrics", "error", err)
	}
	return c
}
