package store

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/flotilla-proxy/flotilla/controlplane/bundle"
	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
)

// crashHelperEnv makes the test binary run crashHelper instead of the tests.
const crashHelperEnv = "FLOTILLA_STORE_CRASH_HELPER"

func TestMain(m *testing.M) {
	if path := os.Getenv(crashHelperEnv); path != "" {
		crashHelper(path)
		return
	}
	os.Exit(m.Run())
}

// crashHelper applies new versions as fast as it can, printing each number,
// until it is killed.
func crashHelper(path string) {
	s, err := OpenBolt(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for i := 0; ; i++ {
		f, err := bundle.Parse("f.yaml", []byte(cluster(strconv.Itoa(1+i%60000))+fmt.Sprintf("# %d\n", i)))
		if err == nil {
			var info *adminv1.VersionInfo
			info, _, err = s.Apply(context.Background(), ApplyParams{Files: []*adminv1.ConfigFile{f}, Message: strconv.Itoa(i)})
			if err == nil {
				fmt.Println(info.GetNumber())
			}
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}

// TestKillDuringApplies kills a process in the middle of a stream of applies
// and checks that the file reopens with every version up to the latest intact.
func TestKillDuringApplies(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flotilla.db")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashHelperEnv+"="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	// Kill it once it has stored a few dozen versions: it is applying more
	// the whole time, so the kill lands in or between transactions.
	lines := bufio.NewScanner(out)
	seen := uint64(0)
	for seen < 40 && lines.Scan() {
		seen, _ = strconv.ParseUint(lines.Text(), 10, 64)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if seen < 40 {
		t.Fatalf("helper stopped after version %d", seen)
	}

	s, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	latest, err := s.Get(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if n := latest.GetInfo().GetNumber(); n < seen {
		t.Fatalf("latest is %d after the helper reported %d", n, seen)
	}
	infos, err := s.List(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if uint64(len(infos)) != latest.GetInfo().GetNumber() {
		t.Fatalf("%d versions listed, latest is %d", len(infos), latest.GetInfo().GetNumber())
	}
	for _, info := range infos {
		v, err := s.Get(ctx, info.GetNumber())
		if err != nil {
			t.Fatalf("version %d: %v", info.GetNumber(), err)
		}
		if Hash(v.GetFiles()) != info.GetHash() {
			t.Fatalf("version %d: content does not match its hash", info.GetNumber())
		}
	}
}
