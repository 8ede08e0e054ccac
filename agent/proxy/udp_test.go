package proxy_test

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	udpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/udp/udp_proxy/v3"
	"github.com/miekg/dns"

	"github.com/flotilla-proxy/flotilla/agent/proxy"
	"github.com/flotilla-proxy/flotilla/agent/runtime/runtimetest"
)

// startDNS starts a miekg/dns server on 127.0.0.1:0 that answers every A question with an
// A record of ip, under the question's name, and returns its address.
func startDNS(t testing.TB, ip string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := dns.NewServeMux()
	mux.HandleFunc(".", func(w dns.ResponseWriter, req *dns.Msg) {
		resp := new(dns.Msg)
		resp.SetReply(req)
		for _, q := range req.Question {
			if q.Qtype == dns.TypeA {
				resp.Answer = append(resp.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
					A:   net.ParseIP(ip),
				})
			}
		}
		w.WriteMsg(resp)
	})
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: mux, NotifyStartedFunc: func() { close(started) }}
	served := make(chan error, 1)
	go func() { served <- srv.ActivateAndServe() }()
	t.Cleanup(func() {
		srv.Shutdown()
		<-served
	})
	select {
	case <-started:
	case err := <-served:
		t.Fatalf("dns server: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("dns server did not start")
	}
	return pc.LocalAddr().String()
}

// query asks conn for name's A record and returns the answer's address.
func query(t testing.TB, c *dns.Client, conn *dns.Conn, name string) string {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion(name, dns.TypeA)
	resp, _, err := c.ExchangeWithConn(q, conn)
	if err != nil {
		t.Fatalf("query %s: %v", name, err)
	}
	if resp.Id != q.Id || len(resp.Answer) != 1 || resp.Answer[0].Header().Name != name {
		t.Fatalf("query %s (id %d): answer %v (id %d)", name, q.Id, resp.Answer, resp.Id)
	}
	return resp.Answer[0].(*dns.A).A.String()
}

// dnsConn opens a client socket to the agent's UDP listener.
func dnsConn(t testing.TB, m *proxy.Manager, listener string) (*dns.Client, *dns.Conn) {
	t.Helper()
	c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	conn, err := c.Dial(m.Addr(listener).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return c, conn
}

func TestUDPProxyDNS(t *testing.T) {
	a, b := startDNS(t, "192.0.2.1"), startDNS(t, "192.0.2.2")
	m, reg := newManager(t, proxy.Options{})
	// Sessions end 1s after their last datagram: long enough to outlive an Apply, short
	// enough for Shutdown (which waits for sessions, like for connections) to be quick.
	dnsListener := runtimetest.UDPListener("dns", "127.0.0.1", 0, "resolvers", time.Second)
	apply(t, m, graph(t, []*listenerv3.Listener{dnsListener}, cluster("resolvers", a, b)))
	if got := m.Addr("dns"); got == nil || got.Network() != "udp" {
		t.Fatalf("Addr(dns) = %v, want a UDP address", got)
	}

	t.Run("replies go to the right client", func(t *testing.T) {
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, conn := dnsConn(t, m, "dns")
				for j := range 3 {
					query(t, c, conn, fmt.Sprintf("c%d-q%d.flotilla.test.", i, j))
				}
			}()
		}
		wg.Wait()
		if got := metric(t, reg, "flotilla_agent_downstream_sess_total", "dns"); got != 8 {
			t.Errorf("downstream_sess_total = %v, want 8 (one per client)", got)
		}
		if got := metric(t, reg, "flotilla_agent_downstream_sess_rx_datagrams", "dns"); got != 24 {
			t.Errorf("downstream_sess_rx_datagrams = %v, want 24", got)
		}
	})

	t.Run("Apply keeps the socket and the sessions", func(t *testing.T) {
		c, conn := dnsConn(t, m, "dns")
		first := query(t, c, conn, "keep.flotilla.test.")
		before := metric(t, reg, "flotilla_agent_downstream_sess_total", "dns")
		addr := m.Addr("dns").String()

		// A changed udp_proxy (idle timeout) and an unrelated TCP listener.
		other := runtimetest.UDPListener("dns", "127.0.0.1", 0, "resolvers", 2*time.Second)
		tcp := tcpListener("dns-tcp", 0, "resolvers", nil)
		apply(t, m, graph(t, []*listenerv3.Listener{other, tcp}, cluster("resolvers", a, b)))
		if got := m.Addr("dns").String(); got != addr {
			t.Fatalf("listener moved from %s to %s", addr, got)
		}
		for i := range 5 {
			if got := query(t, c, conn, fmt.Sprintf("keep%d.flotilla.test.", i)); got != first {
				t.Fatalf("after Apply, the session's queries went to %s, before to %s", got, first)
			}
		}
		if got := metric(t, reg, "flotilla_agent_downstream_sess_total", "dns"); got != before {
			t.Errorf("downstream_sess_total went from %v to %v: the session did not survive", before, got)
		}
	})

	t.Run("removed listener stops taking sessions", func(t *testing.T) {
		addr := m.Addr("dns").String()
		apply(t, m, graph(t, nil))
		if m.Addr("dns") != nil {
			t.Fatal("removed listener still has an address")
		}
		c := &dns.Client{Net: "udp", Timeout: 200 * time.Millisecond}
		q := new(dns.Msg)
		q.SetQuestion("gone.flotilla.test.", dns.TypeA)
		if _, _, err := c.Exchange(q, addr); err == nil {
			t.Fatal("a removed UDP listener still answers new clients")
		}
	})
}

func TestUDPMaxSessionsFromCircuitBreaker(t *testing.T) {
	a := startDNS(t, "192.0.2.1")
	m, reg := newManager(t, proxy.Options{})
	cl := cluster("resolvers", a)
	cl.CircuitBreakers = runtimetest.CircuitBreakers(1)
	apply(t, m, graph(t, []*listenerv3.Listener{runtimetest.UDPListener("dns", "127.0.0.1", 0, "resolvers", 500*time.Millisecond)}, cl))

	c, conn := dnsConn(t, m, "dns")
	query(t, c, conn, "first.flotilla.test.")
	c2 := &dns.Client{Net: "udp", Timeout: 200 * time.Millisecond}
	q := new(dns.Msg)
	q.SetQuestion("second.flotilla.test.", dns.TypeA)
	if _, _, err := c2.Exchange(q, m.Addr("dns").String()); err == nil {
		t.Fatal("a second client got a session beyond max_connections 1")
	}
	if got := metric(t, reg, "flotilla_agent_downstream_sess_overflow", "dns"); got < 1 {
		t.Errorf("downstream_sess_overflow = %v, want at least 1", got)
	}
	query(t, c, conn, "first-again.flotilla.test.") // the first session still works
}

func TestUDPRingHash(t *testing.T) {
	servers := []string{startDNS(t, "192.0.2.1"), startDNS(t, "192.0.2.2"), startDNS(t, "192.0.2.3")}
	m, _ := newManager(t, proxy.Options{})
	cl := cluster("resolvers", servers...)
	cl.LbPolicy = clusterv3.Cluster_MAGLEV
	l := runtimetest.UDPListener("dns", "127.0.0.1", 0, "resolvers", 100*time.Millisecond)
	cfg := runtimetest.UDPProxyOf(l)
	cfg.HashPolicies = udpSourceIP()
	runtimetest.SetUDPProxy(l, cfg)
	apply(t, m, graph(t, []*listenerv3.Listener{l}, cl))

	seen := map[string]bool{}
	for i := 1; i <= 12; i++ {
		src := fmt.Sprintf("127.0.0.%d", i)
		var first string
		for j := range 3 { // a new socket, so a new session, each time
			c := &dns.Client{Net: "udp", Timeout: 2 * time.Second, Dialer: &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(src)}}}
			conn, err := c.Dial(m.Addr("dns").String())
			if err != nil {
				t.Fatal(err)
			}
			got := query(t, c, conn, fmt.Sprintf("h%d-%d.flotilla.test.", i, j))
			conn.Close()
			if first == "" {
				first = got
			} else if got != first {
				t.Fatalf("client %s went to %s, then %s", src, first, got)
			}
		}
		seen[first] = true
	}
	if len(seen) < 2 {
		t.Errorf("12 client addresses all went to %v", seen)
	}
}

// udpSourceIP is a udp_proxy hash policy on the client's address.
func udpSourceIP() []*udpproxyv3.UdpProxyConfig_HashPolicy {
	return []*udpproxyv3.UdpProxyConfig_HashPolicy{{PolicySpecifier: &udpproxyv3.UdpProxyConfig_HashPolicy_SourceIp{SourceIp: true}}}
}
