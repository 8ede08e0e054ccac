package httpproxy

import (
	"net"
	"net/netip"
	"testing"

	"github.com/flotilla-proxy/flotilla/agent/tlsconf"
	"github.com/flotilla-proxy/flotilla/agent/upstream"
)

// TestUpstreamsUpdateKeepsPools: an update that does not change how a cluster speaks HTTP
// keeps its pool (a new TLS client of the same kind included); a changed one gets a new pool.
func TestUpstreamsUpdateKeepsPools(t *testing.T) {
	reg := upstream.NewRegistry(nil, nil)
	defer reg.Close()
	u := NewUpstreams(reg, nil)
	defer u.Close()
	tls1, tls2 := &tlsconf.Client{}, &tlsconf.Client{}
	u.Update([]Cluster{{Name: "plain"}, {Name: "tls", TLS: tls1}, {Name: "h2", HTTP2: true}})
	plain, tlsC, h2 := u.cluster("plain"), u.cluster("tls"), u.cluster("h2")
	u.Update([]Cluster{{Name: "plain"}, {Name: "tls", TLS: tls2}, {Name: "h2"}})
	if u.cluster("plain") != plain {
		t.Error("unchanged cluster got a new pool")
	}
	if u.cluster("tls") != tlsC || u.cluster("tls").tls.Load() != tls2 {
		t.Error("a new TLS client of the same cluster: want the same pool with the new client")
	}
	if u.cluster("h2") == h2 {
		t.Error("HTTP/2 → HTTP/1.1 kept the pool")
	}
	u.Update(nil)
	if u.cluster("plain") != nil {
		t.Error("removed cluster still there")
	}
}

// TestSweep: idle fast-path connections to an endpoint removed from its cluster close at
// the next sweep; those to current endpoints stay.
func TestSweep(t *testing.T) {
	reg := upstream.NewRegistry(nil, nil)
	defer reg.Close()
	u := NewUpstreams(reg, nil)
	defer u.Close()
	a, b := netip.MustParseAddrPort("127.0.0.1:1"), netip.MustParseAddrPort("127.0.0.1:2")
	reg.Update([]upstream.ClusterConfig{{Name: "c", Endpoints: []upstream.Endpoint{{Addr: a}, {Addr: b}}}})
	u.Update([]Cluster{{Name: "c"}})
	p := u.cluster("c").h1
	ca, cb := &fakeConn{}, &fakeConn{}
	p.put(&h1Conn{nc: ca, endpoint: a, pool: p})
	p.put(&h1Conn{nc: cb, endpoint: b, pool: p})
	reg.Update([]upstream.ClusterConfig{{Name: "c", Endpoints: []upstream.Endpoint{{Addr: a}}}})
	u.sweep()
	if ca.closed || !cb.closed {
		t.Errorf("after b was removed: a closed %v, b closed %v; want false, true", ca.closed, cb.closed)
	}
}

// fakeConn is a net.Conn that records Close.
type fakeConn struct {
	net.Conn
	closed bool
}

func (c *fakeConn) Close() error { c.closed = true; return nil }
