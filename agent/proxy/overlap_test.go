package proxy_test

import (
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/flotilla-proxy/flotilla/agent/proxy"
	"github.com/flotilla-proxy/flotilla/agent/runtime/runtimetest"
)

// Changing a listener's address to one that overlaps the old socket
// (specific IP -> wildcard, same port) should be accepted.
func TestAddressChangeOverlap(t *testing.T) {
	b := startBackend(t, echo)
	m, _ := newManager(t, proxy.Options{})
	port := portOf(t, deadAddr(t))
	l1 := runtimetest.Listener("web", "127.0.0.1", port, "c")
	apply(t, m, graph(t, []*listenerv3.Listener{l1}, cluster("c", b.addr)))
	c := dialListener(t, m, "web")
	roundTrip(t, c, "before")
	l2 := runtimetest.Listener("web", "0.0.0.0", port, "c")
	if err := m.Apply(graph(t, []*listenerv3.Listener{l2}, cluster("c", b.addr))); err != nil {
		t.Fatalf("moving listener web from 127.0.0.1:%d to 0.0.0.0:%d: %v", port, port, err)
	}
}
