package udpproxy

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"
)

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// listenUDP binds a UDP socket on a free loopback port of the given address, closed at cleanup.
func listenUDP(t testing.TB, addr string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func addrOf(c *net.UDPConn) netip.AddrPort {
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// startEcho runs a UDP server on addr that answers every datagram with prefix+datagram, and
// returns its address. It allocates nothing per datagram, so benchmarks measure the proxy.
func startEcho(t testing.TB, addr, prefix string) netip.AddrPort {
	t.Helper()
	c := listenUDP(t, addr)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, maxDatagram+len(prefix))
		copy(buf, prefix)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf[len(prefix):])
			if err != nil {
				return
			}
			if _, err := c.WriteToUDPAddrPort(buf[:len(prefix)+n], from); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return addrOf(c)
}

// pickFixed picks the same upstream for every client.
func pickFixed(up netip.AddrPort) func(netip.AddrPort) (netip.AddrPort, error) {
	return func(netip.AddrPort) (netip.AddrPort, error) { return up, nil }
}

// startProxy serves a fresh loopback socket with cfg and returns the proxy and its address.
// The proxy is closed, then its socket, at cleanup.
func startProxy(t testing.TB, addr string, cfg Config) (*Proxy, netip.AddrPort) {
	t.Helper()
	ln, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	p := New(ln, cfg, nil)
	t.Cleanup(func() {
		p.Close()
		ln.Close()
	})
	return p, addrOf(ln)
}

// dial opens a connected client socket to addr, closed at cleanup.
func dial(t testing.TB, addr netip.AddrPort) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(addr))
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// exchange sends msg on c and returns the first reply. It does not fail the test, so it can be
// called from other goroutines.
func exchange(c *net.UDPConn, msg []byte, timeout time.Duration) ([]byte, error) {
	if _, err := c.Write(msg); err != nil {
		return nil, err
	}
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return nil, err
	}
	buf := make([]byte, maxDatagram+16)
	n, err := c.Read(buf)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

// mustExchange is exchange that fails the test unless the reply is want.
func mustExchange(t testing.TB, c *net.UDPConn, msg, want string) {
	t.Helper()
	got, err := exchange(c, []byte(msg), 2*time.Second)
	if err != nil {
		t.Fatalf("exchange %q from %s: %v", msg, c.LocalAddr(), err)
	}
	if !bytes.Equal(got, []byte(want)) {
		t.Fatalf("exchange %q from %s: got %q, want %q", msg, c.LocalAddr(), got, want)
	}
}

// expectSilence fails the test if c receives a datagram within wait.
func expectSilence(t testing.TB, c *net.UDPConn, wait time.Duration) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(wait)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	var ne net.Error
	if err == nil {
		t.Fatalf("%s got unexpected datagram %q", c.LocalAddr(), buf[:n])
	}
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("%s: read: %v", c.LocalAddr(), err)
	}
}

// openFDs counts this process's open file descriptors, or skips the test where /proc is
// missing.
func openFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count open files: %v", err)
	}
	return len(ents)
}
