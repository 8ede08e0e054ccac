package proxy_test

import (
	"math/rand/v2"
	"net"
	"strconv"
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
	port := wildcardFreePort(t)
	l1 := runtimetest.Listener("web", "127.0.0.1", port, "c")
	apply(t, m, graph(t, []*listenerv3.Listener{l1}, cluster("c", b.addr)))
	c := dialListener(t, m, "web")
	roundTrip(t, c, "before")
	l2 := runtimetest.Listener("web", "0.0.0.0", port, "c")
	if err := m.Apply(graph(t, []*listenerv3.Listener{l2}, cluster("c", b.addr))); err != nil {
		t.Fatalf("moving listener web from 127.0.0.1:%d to 0.0.0.0:%d: %v", port, port, err)
	}
}

// wildcardFreePort returns a port free on 0.0.0.0, below the ephemeral range
// (32768–60999 here): a port the kernel picked for :0 may be handed at once
// to some other process's outgoing connection on 127.0.0.1, and then the
// move to 0.0.0.0 fails for a reason of no interest to the test (seen in a
// full `make test`, where packages run side by side).
func wildcardFreePort(t *testing.T) uint32 {
	t.Helper()
	for range 100 {
		p := 20000 + rand.IntN(12000)
		ln, err := net.Listen("tcp4", net.JoinHostPort("0.0.0.0", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		ln.Close()
		return uint32(p)
	}
	t.Fatal("no free port in 20000-31999")
	return 0
}
