package store

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/flotilla-proxy/flotilla/controlplane/bundle"
	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
)

// files parses YAML documents into config files named f0.yaml, f1.yaml, ….
func files(t testing.TB, docs ...string) []*adminv1.ConfigFile {
	t.Helper()
	var out []*adminv1.ConfigFile
	for i, d := range docs {
		f, err := bundle.Parse("f"+strconv.Itoa(i)+".yaml", []byte(d))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, f)
	}
	return out
}

// cluster is a one-cluster bundle whose content depends on port.
func cluster(port string) string {
	return "clusters: [{name: pacs, endpoints: ['192.0.2.3:" + port + "']}]\n"
}

func openTemp(t *testing.T) (*Bolt, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "data", "flotilla.db")
	s, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func ptr(n uint64) *uint64 { return &n }

func apply(t *testing.T, s Store, p ApplyParams) (*adminv1.VersionInfo, bool) {
	t.Helper()
	info, unchanged, err := s.Apply(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	return info, unchanged
}

func numbers(infos []*adminv1.VersionInfo) []uint64 {
	var out []uint64
	for _, i := range infos {
		out = append(out, i.GetNumber())
	}
	return out
}

func TestApplyAndGet(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)

	if _, err := s.Get(ctx, 0); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(0) on empty store: err = %v, want ErrNotFound", err)
	}
	if infos, err := s.List(ctx, 0); err != nil || len(infos) != 0 {
		t.Errorf("List on empty store = %v, %v", infos, err)
	}

	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	f1 := files(t, cluster("1"))
	v1, unchanged := apply(t, s, ApplyParams{Files: f1, Author: "ana", Message: "first", Now: now})
	if unchanged || v1.GetNumber() != 1 || v1.GetHash() != Hash(f1) || v1.GetAuthor() != "ana" ||
		v1.GetMessage() != "first" || !v1.GetCreatedAt().AsTime().Equal(now) || v1.GetRollbackOf() != 0 {
		t.Errorf("first apply = %v unchanged=%v", v1, unchanged)
	}

	// Equal content, spread over files differently: unchanged, latest returned.
	same := files(t, "", cluster("1"))
	got, unchanged := apply(t, s, ApplyParams{Files: same, Author: "bo", Message: "again"})
	if !unchanged || !proto.Equal(got, v1) {
		t.Errorf("equal apply = %v unchanged=%v, want v1 unchanged", got, unchanged)
	}

	before := time.Now()
	f2 := files(t, cluster("2"))
	v2, unchanged := apply(t, s, ApplyParams{Files: f2, Author: "bo", Message: "second"})
	if unchanged || v2.GetNumber() != 2 || v2.GetCreatedAt().AsTime().Before(before.Truncate(time.Second)) {
		t.Errorf("second apply = %v unchanged=%v", v2, unchanged)
	}

	tests := []struct {
		n     uint64
		info  *adminv1.VersionInfo
		files []*adminv1.ConfigFile
	}{
		{0, v2, f2},
		{1, v1, f1},
		{2, v2, f2},
	}
	for _, tt := range tests {
		v, err := s.Get(ctx, tt.n)
		if err != nil {
			t.Fatalf("Get(%d): %v", tt.n, err)
		}
		want := &adminv1.Version{Info: tt.info, Files: tt.files}
		if !proto.Equal(v, want) {
			t.Errorf("Get(%d) = %v, want %v", tt.n, v, want)
		}
	}
	if _, err := s.Get(ctx, 3); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(3): err = %v, want ErrNotFound", err)
	}

	// Back to the first content is a new version, not "unchanged": only the
	// latest counts.
	v3, unchanged := apply(t, s, ApplyParams{Files: f1})
	if unchanged || v3.GetNumber() != 3 || v3.GetHash() != v1.GetHash() {
		t.Errorf("re-apply of v1 content = %v unchanged=%v", v3, unchanged)
	}
}

func TestExpectVersion(t *testing.T) {
	s, _ := openTemp(t)
	ctx := context.Background()
	tests := []struct {
		name    string
		content string
		expect  *uint64
		want    uint64 // number of the returned version; 0 for a conflict
		latest  uint64 // for a conflict
	}{
		{"empty store expected but wrong", "1", ptr(1), 0, 0},
		{"empty store", "1", ptr(0), 1, 0},
		{"stale", "2", ptr(0), 0, 1},
		{"current", "2", ptr(1), 2, 0},
		{"no expectation", "3", nil, 3, 0},
		{"conflict wins over unchanged", "3", ptr(2), 0, 3},
		{"unchanged with matching expectation", "3", ptr(3), 3, 0},
		{"ahead", "4", ptr(9), 0, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info, _, err := s.Apply(ctx, ApplyParams{Files: files(t, cluster(tt.content)), ExpectVersion: tt.expect})
			if tt.want != 0 {
				if err != nil || info.GetNumber() != tt.want {
					t.Fatalf("Apply = %v, %v; want version %d", info, err, tt.want)
				}
				return
			}
			var ce *ConflictError
			if !errors.As(err, &ce) || ce.Expected != *tt.expect || ce.Latest != tt.latest {
				t.Fatalf("err = %v, want conflict expected %d latest %d", err, *tt.expect, tt.latest)
			}
		})
	}
	err := (&ConflictError{Expected: 4, Latest: 5}).Error()
	if err != "latest version is 5, not 4 as expected" {
		t.Errorf("ConflictError = %q", err)
	}
}

func TestList(t *testing.T) {
	s, _ := openTemp(t)
	ctx := context.Background()
	for i := range 5 {
		apply(t, s, ApplyParams{Files: files(t, cluster(strconv.Itoa(i+1))), Message: "v" + strconv.Itoa(i+1)})
	}
	tests := []struct {
		limit int
		want  []uint64
	}{
		{0, []uint64{5, 4, 3, 2, 1}},
		{-1, []uint64{5, 4, 3, 2, 1}},
		{1, []uint64{5}},
		{3, []uint64{5, 4, 3}},
		{5, []uint64{5, 4, 3, 2, 1}},
		{50, []uint64{5, 4, 3, 2, 1}},
	}
	for _, tt := range tests {
		infos, err := s.List(ctx, tt.limit)
		if err != nil {
			t.Fatal(err)
		}
		if got := numbers(infos); !slices.Equal(got, tt.want) {
			t.Errorf("List(%d) = %v, want %v", tt.limit, got, tt.want)
		}
	}
	// List returns the same infos as Get, without the files.
	infos, _ := s.List(ctx, 0)
	for _, info := range infos {
		v, err := s.Get(ctx, info.GetNumber())
		if err != nil || !proto.Equal(v.GetInfo(), info) {
			t.Errorf("List info %v != Get info %v (%v)", info, v.GetInfo(), err)
		}
	}
}

func TestRollback(t *testing.T) {
	s, _ := openTemp(t)
	ctx := context.Background()
	f1 := files(t, cluster("1"))
	apply(t, s, ApplyParams{Files: f1})
	apply(t, s, ApplyParams{Files: files(t, cluster("2"))})

	old, err := s.Get(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	v3, unchanged := apply(t, s, ApplyParams{Files: old.GetFiles(), Author: "ops", Message: "undo", RollbackOf: 1})
	if unchanged || v3.GetNumber() != 3 || v3.GetRollbackOf() != 1 || v3.GetHash() != Hash(f1) {
		t.Errorf("rollback = %v unchanged=%v", v3, unchanged)
	}
	got, err := s.Get(ctx, 3)
	if err != nil || got.GetInfo().GetRollbackOf() != 1 || got.GetInfo().GetMessage() != "undo" {
		t.Errorf("stored rollback = %v, %v", got.GetInfo(), err)
	}

	if _, _, err := s.Apply(ctx, ApplyParams{Files: files(t, cluster("9")), RollbackOf: 7}); !errors.Is(err, ErrNotFound) {
		t.Errorf("rollback of a missing version: err = %v, want ErrNotFound", err)
	}
	if infos, _ := s.List(ctx, 0); len(infos) != 3 {
		t.Errorf("failed rollback stored something: %v", numbers(infos))
	}
}

func TestReopen(t *testing.T) {
	ctx := context.Background()
	s, path := openTemp(t)
	for i := range 3 {
		apply(t, s, ApplyParams{Files: files(t, cluster(strconv.Itoa(i+1))), Author: "ana"})
	}
	before, err := s.List(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	latest, err := s.Get(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, 0); err == nil {
		t.Error("Get after Close succeeded")
	}

	s2, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s2.Close() })
	after, err := s2.List(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Fatalf("after reopen %d versions, want %d", len(after), len(before))
	}
	for i := range before {
		if !proto.Equal(before[i], after[i]) {
			t.Errorf("version info %d changed: %v → %v", i, before[i], after[i])
		}
	}
	got, err := s2.Get(ctx, 0)
	if err != nil || !proto.Equal(got, latest) {
		t.Errorf("latest after reopen = %v, %v", got, err)
	}
	// Numbering continues, and equal content is still detected.
	if _, unchanged := apply(t, s2, ApplyParams{Files: latest.GetFiles()}); !unchanged {
		t.Error("latest content not detected as unchanged after reopen")
	}
	if info, _ := apply(t, s2, ApplyParams{Files: files(t, cluster("8"))}); info.GetNumber() != 4 {
		t.Errorf("after reopen new version is %d, want 4", info.GetNumber())
	}
}

func TestOpenLocked(t *testing.T) {
	_, path := openTemp(t)
	start := time.Now()
	s, err := OpenBolt(path)
	if err == nil {
		s.Close()
		t.Fatal("second open of a locked file succeeded")
	}
	if !strings.Contains(err.Error(), "locked by another process") || !strings.Contains(err.Error(), path) {
		t.Errorf("err = %v, want a clear lock error naming the file", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("open took %v, want about 1s", d)
	}
}

func TestConcurrentApplies(t *testing.T) {
	s, _ := openTemp(t)
	ctx := context.Background()
	const n = 20
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		got  []uint64
		errs []error
	)
	for i := range n {
		content := files(t, cluster(strconv.Itoa(1000+i))) // distinct per goroutine
		wg.Go(func() {
			info, unchanged, err := s.Apply(ctx, ApplyParams{Files: content})
			mu.Lock()
			defer mu.Unlock()
			if err != nil || unchanged {
				errs = append(errs, err)
				return
			}
			got = append(got, info.GetNumber())
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("errors: %v", errs)
	}
	slices.Sort(got)
	for i, num := range got {
		if num != uint64(i+1) {
			t.Fatalf("numbers = %v, want 1..%d each once", got, n)
		}
	}
	infos, err := s.List(ctx, 0)
	if err != nil || len(infos) != n || infos[0].GetNumber() != n {
		t.Errorf("List = %v, %v", numbers(infos), err)
	}
}

func TestCanceledContext(t *testing.T) {
	s, _ := openTemp(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := s.Apply(ctx, ApplyParams{Files: files(t, cluster("1"))}); !errors.Is(err, context.Canceled) {
		t.Errorf("Apply: err = %v", err)
	}
	if _, err := s.Get(ctx, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("Get: err = %v", err)
	}
	if _, err := s.List(ctx, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("List: err = %v", err)
	}
}

func TestHash(t *testing.T) {
	a := cluster("1")
	b := "listeners: [{name: l, address: ':1', agents: {dc: ams, role: edge}, tcp: {cluster: pacs}}]\n"
	bSwapped := "listeners: [{name: l, address: ':1', agents: {role: edge, dc: ams}, tcp: {cluster: pacs}}]\n"
	h := Hash(files(t, a, b))
	tests := []struct {
		name  string
		files []*adminv1.ConfigFile
		same  bool
	}{
		{"file order", files(t, b, a), true},
		{"one file", files(t, a+b), true},
		{"map key order", files(t, a, bSwapped), true},
		{"empty files added", files(t, "", a, "# c", b), true},
		{"content changed", files(t, cluster("2"), b), false},
		{"listener removed", files(t, a), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Hash(tt.files); (got == h) != tt.same {
				t.Errorf("Hash = %s, base %s, want same=%v", got, h, tt.same)
			}
		})
	}
	// Renaming files does not change the hash.
	renamed := files(t, a, b)
	renamed[0].Path, renamed[1].Path = "x/y.yaml", "z.json"
	if Hash(renamed) != h {
		t.Error("file names change the hash")
	}
	if len(h) != 64 || strings.Trim(h, "0123456789abcdef") != "" {
		t.Errorf("hash %q is not hex SHA-256", h)
	}
}

func TestDecodeInfoSkipsFiles(t *testing.T) {
	v := &adminv1.Version{
		Files: files(t, cluster("1")),
		Info:  &adminv1.VersionInfo{Number: 7, Hash: "h", Author: "a"},
	}
	data, err := proto.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	info, err := decodeInfo(data)
	if err != nil || !proto.Equal(info, v.GetInfo()) {
		t.Errorf("decodeInfo = %v, %v", info, err)
	}
	if _, err := decodeInfo(data[:len(data)-1]); err == nil {
		t.Error("truncated data decoded")
	}
	if _, err := decodeInfo(nil); err == nil {
		t.Error("empty data decoded")
	}
}
