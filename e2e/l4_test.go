package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestDNSThroughUDPListener sends real DNS queries through an agent's UDP
// listener (nginx `listen 53 udp`) to a real dnsmasq, from several clients at
// once: each must get its own answer.
func TestDNSThroughUDPListener(t *testing.T) {
	t.Parallel()
	dnsmasq := requirePeer(t, "dnsmasq")
	dnsAddr := freeUDPAddr(t)
	host, port := splitHostPort(t, dnsAddr)
	args := []string{"--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
		"--listen-address=" + host, "--bind-interfaces", "--port=" + port, "--pid-file=",
		"--log-facility=-", "--address=/flotilla.test/192.0.2.7"}
	if os.Geteuid() == 0 {
		args = append(args, "--user=root")
	}
	p := startProcess(t, "dnsmasq", dnsmasq, args...)
	waitFor(t, startTimeout, "dnsmasq to answer", func() error {
		if p.exited() {
			t.Fatalf("dnsmasq exited: %v\n%s", p.waitErr, p.tail(20))
		}
		return queryA(dnsAddr, "flotilla.test.", "192.0.2.7")
	})

	cp := startControlPlane(t)
	ag := startAgent(t, cp, "a1", "dc=ams")
	listen := freeUDPAddr(t)
	cfg := filepath.Join(t.TempDir(), "dns.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`
listeners:
  - name: dns
    address: %q
    udp: { cluster: resolvers, idle_timeout: 5s }
clusters:
  - name: resolvers
    endpoints: [%q]
`, listen, dnsAddr)), 0o600); err != nil {
		t.Fatal(err)
	}
	cp.apply(t, cfg, "DNS over the UDP proxy")
	ag.waitReady(t)
	waitFor(t, convergeTimeout, "an answer through the agent", func() error {
		return queryA(listen, "flotilla.test.", "192.0.2.7")
	})

	errs := make(chan error, 8)
	for i := range 8 {
		go func() {
			// A name dnsmasq answers from its own config, and one it does not
			// know (NXDOMAIN, since it has no upstream): each client must get
			// the answer to its own question.
			if i%2 == 0 {
				errs <- queryA(listen, "flotilla.test.", "192.0.2.7")
				return
			}
			errs <- queryNX(listen, fmt.Sprintf("client-%d.invalid.", i))
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if n, err := ag.metric("flotilla_agent_downstream_sess_total"); err != nil || n < 9 {
		t.Errorf("downstream_sess_total = %v (%v), want at least 9 sessions", n, err)
	}
}

func queryA(server, name, want string) error {
	c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	r, _, err := c.Exchange(m, server)
	if err != nil {
		return fmt.Errorf("query %s at %s: %w", name, server, err)
	}
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok && a.A.String() == want {
			return nil
		}
	}
	return fmt.Errorf("query %s at %s: answer %v, want A %s", name, server, r.Answer, want)
}

func queryNX(server, name string) error {
	c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	r, _, err := c.Exchange(m, server)
	if err != nil {
		return fmt.Errorf("query %s at %s: %w", name, server, err)
	}
	if r.Question[0].Name != name || len(r.Answer) != 0 {
		return fmt.Errorf("query %s at %s: got %v for question %q", name, server, r.Answer, r.Question[0].Name)
	}
	return nil
}

// freeUDPAddr returns a loopback UDP address nobody listens on, with the
// same port-picking rules as freeAddr.
func freeUDPAddr(t *testing.T) string {
	t.Helper()
	for range 100 {
		addr := freeAddr(t)
		c, err := net.ListenPacket("udp", addr)
		if err == nil {
			c.Close()
			return addr
		}
	}
	t.Fatal("no free UDP port")
	return ""
}

// TestHealthCheckEjectsAndReturns: an active health check (send "ping",
// expect a reply starting with "b") marks a stopped backend unhealthy, so new
// connections all go to the healthy one, and takes it back when it returns.
func TestHealthCheckEjectsAndReturns(t *testing.T) {
	t.Parallel()
	cp := startControlPlane(t)
	ag := startAgent(t, cp, "a1", "dc=ams")
	b1 := startBackend(t, "b1")
	b2 := startBackend(t, "b2")
	listen := freeAddr(t)
	cfg := filepath.Join(t.TempDir(), "health.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`
listeners:
  - name: echo
    address: %q
    tcp: { cluster: echo, connect_attempts: 1 }
clusters:
  - name: echo
    health_check:
      interval: 200ms
      timeout: 500ms
      healthy_threshold: 1
      unhealthy_threshold: 2
      tcp: { send: "ping\n", expect: "b" }
    endpoints: [%q, %q]
`, listen, b1.addr, b2.addr)), 0o600); err != nil {
		t.Fatal(err)
	}
	cp.apply(t, cfg, "health checked cluster")
	ag.waitReady(t)
	healthy := func(addr string, want float64) func() error {
		return func() error {
			v, err := ag.metric("flotilla_agent_endpoint_healthy", `endpoint="`+addr+`"`)
			if err != nil {
				return err
			}
			if v != want {
				return fmt.Errorf("endpoint_healthy{endpoint=%q} = %v, want %v", addr, v, want)
			}
			return nil
		}
	}
	waitFor(t, convergeTimeout, "both backends healthy", func() error {
		if err := healthy(b1.addr, 1)(); err != nil {
			return err
		}
		return healthy(b2.addr, 1)()
	})
	seen := backendsSeen(t, listen, 8)
	if !seen["b1"] || !seen["b2"] {
		t.Fatalf("round robin over two healthy backends reached %v", seen)
	}

	b2.close()
	waitFor(t, convergeTimeout, "b2 marked unhealthy", healthy(b2.addr, 0))
	// With one connect attempt, a connection sent to b2 would fail: every one
	// succeeding on b1 shows b2 is out of the rotation.
	if seen := backendsSeen(t, listen, 10); len(seen) != 1 || !seen["b1"] {
		t.Fatalf("with b2 down, connections reached %v", seen)
	}

	restartBackend(t, "b2", b2.addr)
	waitFor(t, convergeTimeout, "b2 healthy again", healthy(b2.addr, 1))
	waitFor(t, convergeTimeout, "traffic back on b2", func() error {
		if seen := backendsSeen(t, listen, 8); !seen["b2"] {
			return fmt.Errorf("connections reached %v", seen)
		}
		return nil
	})
}

// backendsSeen opens n connections through addr, each saying one line, and
// returns which backend ids answered. A failed connection fails the test.
func backendsSeen(t *testing.T, addr string, n int) map[string]bool {
	t.Helper()
	seen := map[string]bool{}
	for i := range n {
		reply, err := echoOnce(addr, "hello "+strconv.Itoa(i))
		if err != nil {
			t.Fatalf("connection %d through %s: %v", i, addr, err)
		}
		id, _, _ := strings.Cut(reply, ":")
		seen[id] = true
	}
	return seen
}

// restartBackend starts an echo backend with id on a given address again.
func restartBackend(t *testing.T, id, addr string) *backend {
	t.Helper()
	var ln net.Listener
	waitFor(t, startTimeout, "listen on "+addr+" again", func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	})
	b := &backend{id: id, addr: addr, ln: ln, conns: make(map[net.Conn]bool)}
	b.wg.Add(1)
	go b.serve()
	t.Cleanup(b.close)
	return b
}
