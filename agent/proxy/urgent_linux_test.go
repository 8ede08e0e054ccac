//go:build linux

package proxy

import (
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

func sendOOB(t *testing.T, c *net.TCPConn, b []byte) {
	rc, _ := c.SyscallConn()
	var serr error
	rc.Write(func(fd uintptr) bool { serr = unix.Sendto(int(fd), b, unix.MSG_OOB, nil); return true })
	if serr != nil {
		t.Fatal(serr)
	}
}

// TestUrgentDataDoesNotStallCopy: a client that sends one byte of TCP urgent data (MSG_OOB,
// e.g. telnet/ftp "interrupt", or an attacker) followed by a request: SIOCINQ counts the
// out-of-band byte but read(2) skips it, so copySmall's io.ReadFull waits for a byte that
// never comes and the request is never forwarded.
func TestUrgentDataDoesNotStallCopy(t *testing.T) {
	for _, tc := range []struct {
		size   int
		inline bool
	}{{5, false}, {64 << 10, false}, {5, true}, {64 << 10, true}} {
		size := tc.size
		name := map[int]string{5: "small", 64 << 10: "splice"}[size]
		if tc.inline {
			name += "/with_SO_OOBINLINE(suggested_fix)"
		}
		t.Run(name, func(t *testing.T) {
			cli, proxDown := tcpPair(t)
			if tc.inline {
				rc, _ := proxDown.SyscallConn()
				rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_OOBINLINE, 1) })
			}
			proxUp, srv := tcpPair(t)
			done := make(chan error, 1)
			go func() { _, err := copyIdleFree(proxUp, proxDown); done <- err }()
			sendOOB(t, cli, []byte{'!'})
			msg := make([]byte, size)
			for i := range msg {
				msg[i] = 'a'
			}
			if tc.inline {
				msg = append([]byte{'!'}, msg...)
				size++
			}
			if _, err := cli.Write(msg[boolInt(tc.inline):]); err != nil {
				t.Fatal(err)
			}
			var r0, r1 unix.Rusage
			unix.Getrusage(unix.RUSAGE_SELF, &r0)
			srv.SetReadDeadline(time.Now().Add(2 * time.Second))
			got := make([]byte, size)
			n, err := io.ReadFull(srv, got)
			unix.Getrusage(unix.RUSAGE_SELF, &r1)
			t.Logf("CPU during the 2s wait: user %v sys %v", time.Duration(r1.Utime.Nano()-r0.Utime.Nano()), time.Duration(r1.Stime.Nano()-r0.Stime.Nano()))
			if err != nil {
				t.Fatalf("upstream got %d of %d bytes of the request after 2s: %v", n, size, err)
			}
			cli.Close()
			<-done
		})
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestUrgentDataAfterBulk: the same, once the stream has moved to bulk rounds
// (SIOCINQ + splice): the urgent byte is counted but never spliced or read.
func TestUrgentDataAfterBulk(t *testing.T) {
	cli, proxDown := tcpPair(t)
	proxUp, srv := tcpPair(t)
	done := make(chan error, 1)
	go func() { _, err := copyIdleFree(proxUp, proxDown); done <- err }()
	bulk := make([]byte, smallCopy) // fills a recv round: the next rounds are bulk
	if _, err := cli.Write(bulk); err != nil {
		t.Fatal(err)
	}
	srv.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(srv, make([]byte, len(bulk))); err != nil {
		t.Fatalf("bulk part: %v", err)
	}
	sendOOB(t, cli, []byte{'!'})
	if _, err := cli.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 5)
	if n, err := io.ReadFull(srv, got); err != nil {
		t.Fatalf("upstream got %d of 5 bytes after the urgent byte: %v", n, err)
	}
	if string(got) != "hello" {
		t.Fatalf("upstream got %q", got)
	}
	cli.CloseWrite()
	if err := <-done; err != nil {
		t.Fatalf("copy ended with %v, want a clean EOF", err)
	}
}
