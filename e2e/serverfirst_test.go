package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestServerFirstProtocolThroughTCPListener runs a real server-first protocol
// (SSH: the server sends its banner before the client says anything, like
// MySQL, SMTP and DICOM servers) through a plain TCP listener. A proxy that
// waited for the client to speak first would hang here. ssh-keyscan must get
// exactly the host key of the sshd behind the agent.
func TestServerFirstProtocolThroughTCPListener(t *testing.T) {
	t.Parallel()
	sshd := requirePeer(t, "sshd")
	keyscan := requirePeer(t, "ssh-keyscan")
	keygen := requirePeer(t, "ssh-keygen")
	if os.Geteuid() != 0 {
		t.Skip("sshd needs root for its privilege separation")
	}
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil { // sshd's privilege separation directory
		t.Fatal(err)
	}

	dir := t.TempDir()
	hostKey := filepath.Join(dir, "host_ed25519")
	if out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "", "-f", hostKey).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	pub, err := os.ReadFile(hostKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	sshAddr := freeAddr(t)
	cfg := filepath.Join(dir, "sshd_config")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("ListenAddress %s\nHostKey %s\nPidFile none\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n", sshAddr, hostKey)), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProcess(t, "sshd", sshd, "-D", "-e", "-f", cfg)
	waitFor(t, startTimeout, "sshd to listen", func() error {
		if p.exited() {
			t.Fatalf("sshd exited: %v\n%s", p.waitErr, p.tail(20))
		}
		return dialable(sshAddr)
	})

	cp := startControlPlane(t)
	ag := startAgent(t, cp, "a1", "dc=ams")
	listen := freeAddr(t)
	c := config{
		clusters:  map[string][]string{"ssh": {sshAddr}},
		listeners: []listener{{name: "ssh", address: listen, cluster: "ssh"}},
	}
	cp.apply(t, c.write(t, "ssh.yaml"), "ssh through a plain TCP listener")
	ag.waitReady(t)

	host, port := splitHostPort(t, listen)
	waitFor(t, convergeTimeout, "ssh-keyscan through the agent", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, keyscan, "-T", "5", "-t", "ed25519", "-p", port, host).Output()
		if err != nil {
			return fmt.Errorf("ssh-keyscan: %v", err)
		}
		want := strings.Fields(string(pub))[1]
		if !strings.Contains(string(out), "ssh-ed25519 "+want) {
			return fmt.Errorf("ssh-keyscan got %q, want the key %s", out, want)
		}
		return nil
	})
}

func splitHostPort(t *testing.T, addr string) (string, string) {
	t.Helper()
	i := strings.LastIndex(addr, ":")
	if i < 0 {
		t.Fatalf("bad address %q", addr)
	}
	return strings.Trim(addr[:i], "[]"), addr[i+1:]
}
