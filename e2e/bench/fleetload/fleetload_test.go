package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/flotilla-proxy/flotilla/controlplane/bundle"
	"github.com/flotilla-proxy/flotilla/controlplane/xds"
	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
)

func TestDecodeResponseHeader(t *testing.T) {
	full := &discoveryv3.DiscoveryResponse{
		VersionInfo: "7", TypeUrl: typeURLs[cds], Nonce: "42",
		Resources: []*anypb.Any{{TypeUrl: typeURLs[cds], Value: []byte("\x0a\x03abc")}},
	}
	b, err := proto.Marshal(full)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		data    []byte
		want    *discoveryv3.DiscoveryResponse
		wantErr bool
	}{
		{name: "version, type and nonce; resources skipped", data: b, want: &discoveryv3.DiscoveryResponse{VersionInfo: "7", TypeUrl: typeURLs[cds], Nonce: "42"}},
		{name: "empty", data: nil, want: &discoveryv3.DiscoveryResponse{}},
		{name: "truncated", data: b[:len(b)-1], wantErr: true},
	}
	// The same, split into buffers at every position: gRPC hands the codec
	// the message in pieces.
	for i := 1; i < len(b); i++ {
		tests = append(tests, struct {
			name    string
			data    []byte
			want    *discoveryv3.DiscoveryResponse
			wantErr bool
		}{name: fmt.Sprintf("split at %d", i), data: b, want: tests[0].want})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got discoveryv3.DiscoveryResponse
			data := mem.BufferSlice{mem.SliceBuffer(tt.data)}
			if i, ok := strings.CutPrefix(tt.name, "split at "); ok {
				at, _ := strconv.Atoi(i)
				data = mem.BufferSlice{mem.SliceBuffer(tt.data[:at]), mem.SliceBuffer(tt.data[at:])}
			}
			err := lazyCodec{}.Unmarshal(data, &got)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if err == nil && !proto.Equal(&got, tt.want) {
				t.Fatalf("got %v, want %v", &got, tt.want)
			}
		})
	}
}

func TestConvergence(t *testing.T) {
	ms := func(n int64) int64 { return n * int64(time.Millisecond) }
	tests := []struct {
		name      string
		at        [][numTypes]int64
		span      span
		want      [numTypes]bool
		wantDone  int
		wantNot   int
		wantBef   int
		wantTypes string
		wantP99   time.Duration
	}{
		{
			name:     "latest of the types that reached the version",
			at:       [][numTypes]int64{{cds: ms(10), eds: ms(30)}, {cds: ms(20), eds: ms(25)}},
			wantDone: 2, wantTypes: "cds,eds", wantP99: 30 * time.Millisecond,
		},
		{
			name:     "an agent missing a type is not done",
			at:       [][numTypes]int64{{cds: ms(10), eds: ms(30)}, {cds: ms(20)}},
			wantDone: 1, wantNot: 1, wantTypes: "cds,eds", wantP99: 30 * time.Millisecond,
		},
		{
			name:     "types named",
			at:       [][numTypes]int64{{cds: ms(10), eds: ms(30)}, {cds: ms(20)}},
			want:     [numTypes]bool{cds: true},
			wantDone: 2, wantTypes: "cds", wantP99: 20 * time.Millisecond,
		},
		{name: "nothing acked", at: make([][numTypes]int64, 3), wantNot: 3},
		{
			name: "ACKs after until do not count",
			at:   [][numTypes]int64{{cds: ms(10), eds: ms(20)}, {cds: ms(15), eds: ms(50)}, {cds: ms(60), eds: ms(70)}},
			span: span{until: ms(40)},
			// The third agent's types are seen only after until, so
			// they do not add to the types either.
			wantDone: 1, wantNot: 2, wantTypes: "cds,eds", wantP99: 20 * time.Millisecond,
		},
		{
			name:     "a rollout step: the earlier steps' agents are left out",
			at:       [][numTypes]int64{{cds: ms(10), eds: ms(20)}, {cds: ms(110), eds: ms(130)}, {cds: ms(120)}},
			span:     span{since: ms(100), newOnly: true},
			wantDone: 1, wantNot: 1, wantBef: 1, wantTypes: "cds,eds", wantP99: 30 * time.Millisecond,
		},
		{
			name:     "one type before since, one after: the agent is new",
			at:       [][numTypes]int64{{cds: ms(90), eds: ms(105)}},
			span:     span{since: ms(100), newOnly: true},
			want:     [numTypes]bool{cds: true, eds: true},
			wantDone: 1, wantTypes: "cds,eds", wantP99: 5 * time.Millisecond,
		},
		{
			name:     "new-only: the types are those ACKed from since on",
			at:       [][numTypes]int64{{cds: ms(110), eds: ms(10)}, {cds: ms(120), eds: ms(20)}, {eds: ms(30)}},
			span:     span{since: ms(100), newOnly: true},
			wantDone: 2, wantNot: 1, wantTypes: "cds", wantP99: 20 * time.Millisecond,
		},
		{
			name:     "without new-only, earlier ACKs count as at since",
			at:       [][numTypes]int64{{cds: ms(10), eds: ms(20)}, {cds: ms(110), eds: ms(130)}},
			span:     span{since: ms(100)},
			wantDone: 2, wantTypes: "cds,eds", wantP99: 30 * time.Millisecond,
		},
		{
			name:     "until and new-only",
			at:       [][numTypes]int64{{eds: ms(10)}, {eds: ms(110)}, {eds: ms(210)}},
			span:     span{since: ms(100), until: ms(200), newOnly: true},
			wantDone: 1, wantNot: 1, wantBef: 1, wantTypes: "eds", wantP99: 10 * time.Millisecond,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := convergence(tt.at, tt.span, tt.want)
			if r.done != tt.wantDone || r.notDone() != tt.wantNot || r.before != tt.wantBef || strings.Join(r.types, ",") != tt.wantTypes {
				t.Fatalf("done %d not done %d before %d types %v, want %d %d %d %q",
					r.done, r.notDone(), r.before, r.types, tt.wantDone, tt.wantNot, tt.wantBef, tt.wantTypes)
			}
			if r.complete() != (tt.wantNot == 0) {
				t.Fatalf("complete() = %v with %d not done", r.complete(), tt.wantNot)
			}
			line := r.line() // sorts
			if want := fmt.Sprintf("agents=%d done=%d not_done=%d before=%d", len(tt.at), tt.wantDone, tt.wantNot, tt.wantBef); !strings.HasPrefix(line, want) {
				t.Fatalf("line %q, want it to start with %q", line, want)
			}
			if tt.wantDone > 0 {
				if got := percentile(r.latencies, 99); got != tt.wantP99 {
					t.Fatalf("p99 = %v, want %v", got, tt.wantP99)
				}
			}
		})
	}
}

// TestAcksHistory: /acks?version=V has when an agent came to V last, also
// after it went on to another version (a rollout's canary version, once the
// completion pushed the old version's unchanged types again).
func TestAcksHistory(t *testing.T) {
	tests := []struct {
		name     string
		versions []string // ACKed in turn, one per step of time
		version  string
		want     int // index in versions of the ACK reported; -1: none
	}{
		{name: "never", versions: []string{"1", "2"}, version: "3", want: -1},
		{name: "current", versions: []string{"1", "2"}, version: "2", want: 1},
		{name: "repeated ACKs keep the first", versions: []string{"1", "2", "2", "2"}, version: "2", want: 1},
		{name: "went on", versions: []string{"3", "4", "3"}, version: "4", want: 1},
		{name: "came back", versions: []string{"3", "4", "3"}, version: "3", want: 2},
		{name: "forgotten", versions: []string{"1", "2", "3", "4", "5", "6", "7", "8", "9"}, version: "1", want: -1},
		{name: "oldest kept", versions: []string{"1", "2", "3", "4", "5", "6", "7", "8", "9"}, version: "2", want: 1},
	}
	var subscribed [numTypes]bool
	subscribed[eds] = true
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := &agent{id: "t"}
			f := &fleet{agents: []*agent{a}}
			for i, v := range tt.versions {
				a.recordACK(eds, v, subscribed, int64(i+1))
			}
			want := int64(tt.want + 1) // 0: none

			if got := f.acks(tt.version).At[0][eds]; got != want {
				t.Fatalf("ACK of %s at %d, want %d", tt.version, got, want)
			}
			if len(a.acked[eds]) > keptACKs {
				t.Fatalf("%d versions kept, want at most %d", len(a.acked[eds]), keptACKs)
			}
			if got := f.status().Versions["eds"]; got[tt.versions[len(tt.versions)-1]] != 1 || len(got) != 1 {
				t.Fatalf("status versions %v, want only the last one", got)
			}
		})
	}
}

// TestReportCommand runs `fleetload report` against a process whose agents
// ACKed version 4 at times 10 (one agent), 20 (another), and never (a third).
func TestReportCommand(t *testing.T) {
	var subscribed [numTypes]bool
	subscribed[eds] = true
	f := &fleet{agents: []*agent{{id: "a"}, {id: "b"}, {id: "c"}}}
	for i, a := range f.agents {
		a.recordACK(eds, "3", subscribed, 1)
		if i < 2 {
			a.recordACK(eds, "4", subscribed, int64(10*(i+1)))
		}
	}
	srv := httptest.NewServer(f.handler())
	t.Cleanup(srv.Close)
	ep := strings.TrimPrefix(srv.URL, "http://")
	tests := []struct {
		name     string
		args     []string
		wantLine string // prefix
		wantErr  string
	}{
		{
			name:     "until passed: the agents not done are reported, not an error",
			args:     []string{"--since", "5", "--until", "15", "--version", "4"},
			wantLine: "agents=3 done=1 not_done=2 before=0 types=eds p50_ms=0.0",
		},
		{
			name:     "new only: the earlier agent is left out, the one that never ACKed is waited for",
			args:     []string{"--since", "15", "--version", "4", "--new-only", "--wait", "1ms"},
			wantLine: "agents=3 done=1 not_done=1 before=1 types=eds",
			wantErr:  "1 of 3 agents did not get there",
		},
		{name: "until before since", args: []string{"--since", "15", "--until", "5", "--version", "4"}, wantErr: "--until is before --since"},
		{name: "synced with new-only", args: []string{"--since", "15", "--synced", "--new-only"}, wantErr: "not --synced"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out strings.Builder
			err := reportCommand(append([]string{"--endpoints", ep}, tt.args...), &out)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if !strings.HasPrefix(out.String(), tt.wantLine) {
				t.Fatalf("printed %q, want it to start with %q", out.String(), tt.wantLine)
			}
		})
	}
}

func TestProcessCPU(t *testing.T) {
	tests := []struct {
		name    string
		stat    string
		want    float64
		wantErr bool
	}{
		{
			name: "plain",
			stat: "4242 (flotilla-contro) S 1 4242 4242 0 -1 4194560 5000 0 0 0 250 75 0 0 20 0 12 0 100 0 0\n",
			want: 3.25,
		},
		{
			name: "a command name with spaces and parentheses",
			stat: "7 (a) b (c) R 1 7 7 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 1 0 0\n",
			want: 0.03,
		},
		{name: "truncated", stat: "7 (x) R 1 7 7 0", wantErr: true},
		{name: "no command name", stat: "7 x R", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := processCPU(tt.stat)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if err == nil && got != tt.want {
				t.Fatalf("got %v s, want %v", got, tt.want)
			}
		})
	}
}

func TestMachineBusy(t *testing.T) {
	tests := []struct {
		name    string
		stat    string
		want    float64
		wantErr bool
	}{
		{
			// user nice system idle iowait irq softirq steal: idle and iowait are not busy.
			name: "all CPUs line",
			stat: "cpu  100 20 30 9000 500 1 2 3 0 0\ncpu0 50 10 15 4500 250 1 1 2 0 0\nintr 1\n",
			want: 1.56,
		},
		{name: "no cpu line", stat: "intr 1\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := machineBusy(tt.stat)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if err == nil && got != tt.want {
				t.Fatalf("got %v s, want %v", got, tt.want)
			}
		})
	}
}

// TestCPUCommand samples this test's own process: every line holds the
// time, its CPU seconds and the machine's, and the samples do not go back.
func TestCPUCommand(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &lineWriter{want: 3, cancel: cancel}
	if err := cpuCommand(ctx, []string{"--pids", strconv.Itoa(os.Getpid()), "--every", "5ms"}, w); err != nil {
		t.Fatal(err)
	}
	var prev []float64
	for _, l := range w.lines {
		f := strings.Fields(l)
		if len(f) != 3 {
			t.Fatalf("line %q: %d fields, want 3 (time, process, machine)", l, len(f))
		}
		var cur []float64
		for _, s := range f {
			v, err := strconv.ParseFloat(s, 64)
			if err != nil {
				t.Fatalf("line %q: %v", l, err)
			}
			cur = append(cur, v)
		}
		for i := range prev {
			if cur[i] < prev[i] {
				t.Fatalf("line %q went back from %v", l, prev)
			}
		}
		prev = cur
	}
	if err := cpuCommand(ctx, []string{"--pids", "x"}, w); err == nil {
		t.Fatal("--pids x: no error")
	}
}

// lineWriter keeps what is written to it and cancels after want writes.
type lineWriter struct {
	want   int
	cancel func()
	lines  []string
}

func (w *lineWriter) Write(b []byte) (int, error) {
	w.lines = append(w.lines, string(b))
	if len(w.lines) >= w.want {
		w.cancel()
	}
	return len(b), nil
}

// bundleFiles is a bundle with n clusters and TCP listeners, and one listener
// for dc0 only; version is written into one endpoint.
func bundleFiles(t *testing.T, n, version int) []*adminv1.ConfigFile {
	var b strings.Builder
	b.WriteString("clusters:\n")
	for i := range n {
		fmt.Fprintf(&b, "  - name: c%d\n    endpoints: [\"10.0.%d.%d:80\"]\n", i, i, version)
	}
	b.WriteString("listeners:\n")
	for i := range n {
		fmt.Fprintf(&b, "  - name: l%d\n    address: \"127.0.0.1:%d\"\n    tcp: { cluster: c%d }\n", i, 40000+i, i)
	}
	b.WriteString("  - name: dc0\n    address: \"127.0.0.1:41000\"\n    agents: { dc: dc0 }\n    tcp: { cluster: c0 }\n")
	f, err := bundle.Parse("fleet.yaml", []byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	return []*adminv1.ConfigFile{f}
}

// TestFleetAgainstControlPlane runs simulated agents against the real xDS
// server, each on its own connection and ten to a connection: every agent
// syncs, and a new version reaches all of them on the one type it changed.
func TestFleetAgainstControlPlane(t *testing.T) {
	const agents = 30
	for _, perConn := range []int{1, 10} {
		t.Run(fmt.Sprintf("agents per conn %d", perConn), func(t *testing.T) {
			s := xds.New(xds.Options{Logger: slog.New(slog.DiscardHandler)})
			if err := s.SetVersion(1, bundleFiles(t, 5, 1)); err != nil {
				t.Fatal(err)
			}
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			g := grpc.NewServer()
			s.Register(g)
			go g.Serve(lis) //nolint:errcheck // ends with Stop
			t.Cleanup(g.Stop)

			subscribe, _ := parseTypes("cds,eds,lds,rds")
			f, err := newFleet(fleetOptions{
				Server: lis.Addr().String(), Agents: agents, IDPrefix: "t-", Labels: map[string]string{"role": "edge"},
				Subscribe: subscribe, AgentsPerConn: perConn, BackoffMin: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond,
				Logger: slog.New(slog.DiscardHandler),
			})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { defer wg.Done(); f.run(ctx) }()
			t.Cleanup(func() { cancel(); wg.Wait(); f.close() })
			srv := httptest.NewServer(f.handler())
			t.Cleanup(srv.Close)
			ep := strings.TrimPrefix(srv.URL, "http://")

			waitFor(t, "every agent synced", func() bool {
				st, err := sumStatus(context.Background(), []string{ep})
				return err == nil && st.Synced == agents
			})
			since := time.Now().UnixNano()
			if err := s.SetVersion(2, bundleFiles(t, 5, 2)); err != nil {
				t.Fatal(err)
			}
			var r result
			waitFor(t, "every agent acked version 2", func() bool {
				r, err = collectAcks(context.Background(), []string{ep}, "2", span{since: since}, [numTypes]bool{})
				return err == nil && r.done == agents
			})
			// Only the endpoints changed: EDS alone goes to version 2.
			if got := strings.Join(r.types, ","); got != "eds" {
				t.Fatalf("types at version 2: %q, want eds", got)
			}
			if got := s.Agents(map[string]string{"dc": "dc0"}); len(got) != agents/3 {
				t.Fatalf("control plane sees %d agents with dc=dc0, want %d", len(got), agents/3)
			}
		})
	}
}

// waitFor polls cond until it holds or 10s passed.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
