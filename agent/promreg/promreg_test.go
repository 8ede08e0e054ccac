package promreg

import (
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestRegister(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	newVec := func(help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x_total", Help: help}, []string{"listener"})
	}
	reg := prometheus.NewRegistry()
	first := newVec("x")
	if got := Register(reg, log, "test", first); got != first {
		t.Fatal("the first registration must return its own collector")
	}
	if got := Register(reg, log, "test", newVec("x")); got != first {
		t.Fatal("an identical second registration must share the first collector")
	}
	conflicting := newVec("other help")
	if got := Register(reg, log, "test", conflicting); got != conflicting {
		t.Fatal("a conflicting registration must keep its own, unregistered collector")
	}
	unregistered := newVec("x")
	if got := Register(nil, log, "test", unregistered); got != unregistered {
		t.Fatal("a nil Registerer must keep the collector")
	}
}
