package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binary is one binary under test, built once by TestMain.
type binary struct {
	pkg  string // import path of its main package
	path string // where it was built
	err  error  // why it could not be built, with the compiler's output
}

// The binaries under test.
var (
	controlplaneBin = &binary{pkg: "github.com/flotilla-proxy/flotilla/controlplane/cmd/flotilla-controlplane"}
	agentBin        = &binary{pkg: "github.com/flotilla-proxy/flotilla/agent/cmd/flotilla-agent"}
	flotctlBin      = &binary{pkg: "github.com/flotilla-proxy/flotilla/cli/cmd/flotctl"}
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "flotilla-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	buildBinaries(dir, controlplaneBin, agentBin, flotctlBin)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// buildBinaries builds each binary into dir (with -race when the tests run
// with it). Each is built on its own so that one failing leaves the others
// usable; the tests that need a missing one fail with its build output.
func buildBinaries(dir string, bs ...*binary) {
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	for _, b := range bs {
		b.path = filepath.Join(dir, path.Base(b.pkg))
		if err != nil {
			b.err = fmt.Errorf("go env GOMOD: %w", err)
			continue
		}
		args := []string{"build"}
		if raceEnabled {
			args = append(args, "-race")
		}
		args = append(args, "-o", b.path, b.pkg)
		cmd := exec.Command("go", args...)
		cmd.Dir = filepath.Dir(strings.TrimSpace(string(gomod)))
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// requireBinaries fails the test with the build output of any of bs that
// could not be built.
func requireBinaries(t *testing.T, bs ...*binary) {
	t.Helper()
	for _, b := range bs {
		if b.err != nil {
			t.Fatalf("building %s failed:\n%v", path.Base(b.pkg), b.err)
		}
	}
}

// process is one running binary. Its stdout and stderr go to a log file in
// the test's temporary directory; its tail is printed if the test fails.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when the process has exited
	waitErr error         // valid after done
	killed  bool          // killed on purpose: any exit status is fine
}

// stopTimeout bounds how long a process may take to exit after SIGTERM.
const stopTimeout = 15 * time.Second

// startProcess starts bin. At cleanup it sends SIGTERM and expects exit
// status 0 within stopTimeout (then SIGKILL and an error), and prints the
// log's tail if the test failed.
func startProcess(t *testing.T, name, bin string, args ...string) *process {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	t.Logf("started %s (pid %d): %s %s", name, cmd.Process.Pid, filepath.Base(bin), strings.Join(args, " "))
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("--- last lines of %s (%s) ---\n%s", name, logPath, p.tail(40))
		}
	})
	return p
}

// exited reports whether the process has exited.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and checks the process exits with status 0 in time. A
// process that already exited on its own is an error: nothing here expects
// a binary to die by itself.
func (p *process) stop(t *testing.T) {
	t.Helper()
	if p.killed {
		<-p.done
		return
	}
	if p.exited() {
		t.Errorf("%s exited by itself: %v", p.name, p.waitErr)
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		p.cmd.Process.Kill()
		<-p.done
		t.Errorf("%s did not exit within %v of SIGTERM; killed it", p.name, stopTimeout)
		return
	}
	if p.waitErr != nil {
		t.Errorf("%s exited with %v after SIGTERM, want status 0", p.name, p.waitErr)
	}
	if log, _ := os.ReadFile(p.logPath); bytes.Contains(log, []byte("WARNING: DATA RACE")) {
		t.Errorf("%s reported a data race (see its log %s)", p.name, p.logPath)
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *process) kill(t *testing.T) {
	t.Helper()
	p.killed = true
	p.cmd.Process.Kill()
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		t.Fatalf("%s still running %v after SIGKILL", p.name, stopTimeout)
	}
}

// tail returns the last n lines of the process log.
func (p *process) tail(n int) string {
	data, err := os.ReadFile(p.logPath)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Ports. Listeners are told their port in advance (the binaries take
// host:port flags and config), so the tests pick free ones. They come from
// below the kernel's ephemeral range (32768+ on Linux), where outgoing
// connections and other tests' :0 listeners do not land, and are handed out
// at most once per test binary.
var ports struct {
	sync.Mutex
	used map[int]bool
}

// freePort returns a loopback TCP port nothing listens on.
func freePort(t *testing.T) int {
	t.Helper()
	ports.Lock()
	defer ports.Unlock()
	if ports.used == nil {
		ports.used = make(map[int]bool)
	}
	for range 1000 {
		port := 20000 + rand.IntN(12000)
		if ports.used[port] {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		ln.Close()
		ports.used[port] = true
		return port
	}
	t.Fatal("no free loopback port found")
	return 0
}

// freeAddr returns "127.0.0.1:<free port>".
func freeAddr(t *testing.T) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
}

// pollInterval is how often conditions are checked.
const pollInterval = 50 * time.Millisecond

// waitFor polls cond until it returns nil, and fails the test with cond's
// last error if that does not happen within timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %v", timeout, what, err)
		}
		time.Sleep(pollInterval)
	}
}

// holdsFor polls cond for the whole of d and fails the test as soon as it
// returns an error: it checks that something stays true (a quiet period).
func holdsFor(t *testing.T, d time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if err := cond(); err != nil {
			t.Fatalf("%s stopped holding: %v", what, err)
		}
		time.Sleep(pollInterval)
	}
}

// dialable reports whether something accepts TCP connections at addr.
func dialable(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

// cliResult is one run of the flotctl binary.
type cliResult struct {
	stdout, stderr string
	code           int
}

func (r cliResult) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// runFlotctl runs the flotctl binary against the admin API at server.
func runFlotctl(t *testing.T, server string, args ...string) cliResult {
	t.Helper()
	requireBinaries(t, flotctlBin)
	cmd := exec.Command(flotctlBin.path, args...)
	cmd.Env = append(os.Environ(), "FLOTILLA_SERVER="+server, "FLOTILLA_AUTHOR=e2e@flotilla.test")
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	err := cmd.Run()
	code := 0
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run flotctl %s: %v", strings.Join(args, " "), err)
	}
	return cliResult{stdout.String(), stderr.String(), code}
}
