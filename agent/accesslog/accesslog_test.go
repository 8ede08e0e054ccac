package accesslog

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var plus1 = time.FixedZone("", 3600)

// entries used by the golden tests.
var (
	tcpEntry = Entry{
		Start:                 time.Date(2026, 11, 21, 10, 4, 0, 123_456_789, plus1),
		Duration:              1502 * time.Millisecond,
		Client:                netip.MustParseAddrPort("192.0.2.1:51234"),
		Server:                netip.MustParseAddrPort("127.0.0.1:443"),
		Protocol:              "TCP",
		Status:                StatusOK,
		BytesSent:             1024,
		BytesReceived:         517,
		Upstream:              netip.MustParseAddrPort("10.0.0.7:8443"),
		UpstreamBytesSent:     517,
		UpstreamBytesReceived: 1024,
		UpstreamConnectTime:   2500 * time.Microsecond,
		SNI:                   "db.playnice.example",
		Listener:              "edge-443",
		Cluster:               "playnice",
		FilterChain:           "sni-playnice",
	}
	// A UDP session on a dual-stack listener that found no upstream.
	udpEntry = Entry{
		Start:         time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Duration:      30 * time.Millisecond,
		Client:        netip.MustParseAddrPort("[2001:db8::1]:53000"),
		Server:        netip.MustParseAddrPort("[::ffff:127.0.0.1]:53"),
		Protocol:      "UDP",
		Status:        StatusBadGateway,
		BytesReceived: 40,
		Listener:      "dns",
	}
	// A client-chosen SNI that tries to break the line.
	hostileEntry = Entry{
		Start:    time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Client:   netip.MustParseAddrPort("192.0.2.9:1"),
		Protocol: "TCP",
		Status:   StatusBadRequest,
		SNI:      "a\"b\\c\nd\x01é\xff",
	}
)

func TestFormatGolden(t *testing.T) {
	const all = `$remote_addr $remote_port $server_addr $server_port $protocol $status $bytes_sent ` +
		`$bytes_received $session_time $upstream_addr $upstream_bytes_sent $upstream_bytes_received ` +
		`$upstream_connect_time $ssl_preread_server_name ${listener}/${cluster}/$filter_chain ` +
		`$start_time [$time_local] $time_iso8601 $msec`
	tests := []struct {
		name   string
		format string
		entry  *Entry
		want   string
	}{
		{"default tcp", DefaultFormat, &tcpEntry,
			`192.0.2.1 [21/Nov/2026:10:04:01 +0100] TCP 200 1024 517 1.502 "10.0.0.7:8443" "db.playnice.example"`},
		{"default udp", DefaultFormat, &udpEntry,
			`2001:db8::1 [02/Jan/2026:03:04:05 +0000] UDP 502 0 40 0.030 "-" "-"`},
		{"default hostile sni", DefaultFormat, &hostileEntry,
			`192.0.2.9 [02/Jan/2026:03:04:05 +0000] TCP 400 0 0 0.000 "-" "a\x22b\x5Cc\x0Ad\x01\xC3\xA9\xFF"`},
		{"every variable tcp", all, &tcpEntry,
			`192.0.2.1 51234 127.0.0.1 443 TCP 200 1024 517 1.502 10.0.0.7:8443 517 1024 0.002 ` +
				`db.playnice.example edge-443/playnice/sni-playnice 2026-11-21T10:04:00.123+01:00 ` +
				`[21/Nov/2026:10:04:01 +0100] 2026-11-21T10:04:01+01:00 1795251841.625`},
		{"every variable udp", all, &udpEntry,
			`2001:db8::1 53000 127.0.0.1 53 UDP 502 0 40 0.030 - 0 0 - - dns/-/- 2026-01-02T03:04:05.000Z ` +
				`[02/Jan/2026:03:04:05 +0000] 2026-01-02T03:04:05+00:00 1767323045.030`},
		{"literal only", "connection", &tcpEntry, "connection"},
		{"json tcp", "json", &tcpEntry,
			`{"start_time":"2026-11-21T10:04:00.123+01:00","remote_addr":"192.0.2.1","remote_port":51234,` +
				`"server_addr":"127.0.0.1","server_port":443,"protocol":"TCP","status":200,"bytes_sent":1024,` +
				`"bytes_received":517,"session_time":1.502,"upstream_addr":"10.0.0.7:8443",` +
				`"upstream_bytes_sent":517,"upstream_bytes_received":1024,"upstream_connect_time":0.002,` +
				`"ssl_preread_server_name":"db.playnice.example","listener":"edge-443","cluster":"playnice",` +
				`"filter_chain":"sni-playnice"}`},
		{"json udp", "json", &udpEntry,
			`{"start_time":"2026-01-02T03:04:05.000Z","remote_addr":"2001:db8::1","remote_port":53000,` +
				`"server_addr":"127.0.0.1","server_port":53,"protocol":"UDP","status":502,"bytes_sent":0,` +
				`"bytes_received":40,"session_time":0.030,"upstream_addr":"",` +
				`"upstream_bytes_sent":0,"upstream_bytes_received":0,"upstream_connect_time":0.000,` +
				`"ssl_preread_server_name":"","listener":"dns","cluster":"","filter_chain":""}`},
		{"json hostile sni", "json", &hostileEntry,
			`{"start_time":"2026-01-02T03:04:05.000Z","remote_addr":"192.0.2.9","remote_port":1,` +
				`"server_addr":"","server_port":0,"protocol":"TCP","status":400,"bytes_sent":0,` +
				`"bytes_received":0,"session_time":0.000,"upstream_addr":"",` +
				`"upstream_bytes_sent":0,"upstream_bytes_received":0,"upstream_connect_time":0.000,` +
				`"ssl_preread_server_name":"a\"b\\c\nd\u0001é\ufffd","listener":"","cluster":"","filter_chain":""}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := ParseFormat(tt.format)
			if err != nil {
				t.Fatalf("ParseFormat: %v", err)
			}
			if got := string(f.Append(nil, tt.entry)); got != tt.want {
				t.Errorf("line\n got: %s\nwant: %s", got, tt.want)
			}
			if tt.format == "json" && !json.Valid([]byte(tt.want)) {
				t.Errorf("golden line is not valid JSON")
			}
		})
	}
}

// TestJSONKeysAndTypes decodes a JSON line and checks every key is there with a stable type,
// whatever is absent from the entry.
func TestJSONKeysAndTypes(t *testing.T) {
	f, err := ParseFormat("json")
	if err != nil {
		t.Fatal(err)
	}
	numbers := map[string]bool{
		"remote_port": true, "server_port": true, "status": true, "bytes_sent": true,
		"bytes_received": true, "session_time": true, "upstream_bytes_sent": true,
		"upstream_bytes_received": true, "upstream_connect_time": true,
	}
	for _, e := range []*Entry{&tcpEntry, &udpEntry, &hostileEntry, {}} {
		var m map[string]any
		if err := json.Unmarshal(f.Append(nil, e), &m); err != nil {
			t.Fatalf("line for %+v: %v", e, err)
		}
		if len(m) != len(jsonFields) {
			t.Errorf("%d keys, want %d", len(m), len(jsonFields))
		}
		for _, v := range jsonFields {
			key := variableNames[v]
			val, ok := m[key]
			if !ok {
				t.Errorf("key %q missing", key)
				continue
			}
			if _, isNum := val.(float64); isNum != numbers[key] {
				t.Errorf("key %q has %T", key, val)
			}
		}
	}
}

func TestParseFormatErrors(t *testing.T) {
	tests := []struct {
		format string
		want   string // in the error
	}{
		{"", "empty"},
		{"$remote_addr $upstream_status", "unknown variable $upstream_status"},
		{"$nope", "$nope"},
		{"${hostname}", "$hostname"},
		{"$remote_addr $", "'$' at offset 13"},
		{"$ remote_addr", "'$' at offset 0"},
		{"${remote_addr", "missing '}'"},
		{"${}", "'$' at offset 0"},
		{"JSON", "'JSON'"}, // not an error: a literal; checked below
	}
	for _, tt := range tests {
		t.Run(tt.format, func(t *testing.T) {
			f, err := ParseFormat(tt.format)
			if tt.format == "JSON" {
				if err != nil || f.String() != "JSON" || string(f.Append(nil, &tcpEntry)) != "JSON" {
					t.Fatalf("a format without variables is a literal: %v, %v", f, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseFormat(%q) succeeded", tt.format)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
		})
	}
}

func mustFormat(t testing.TB, s string) *Format {
	t.Helper()
	f, err := ParseFormat(s)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func readLines(t testing.TB, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.TrimSuffix(string(b), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func TestCloseFlushesToFile(t *testing.T) {
	f := mustFormat(t, DefaultFormat)
	path := filepath.Join(t.TempDir(), "access.log")
	if err := os.WriteFile(path, []byte("earlier line\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := New(path, f)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []*Entry{&tcpEntry, &udpEntry, &hostileEntry} {
		l.Log(e)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	want := []string{
		"earlier line", // appended, not truncated
		string(f.Append(nil, &tcpEntry)),
		string(f.Append(nil, &udpEntry)),
		string(f.Append(nil, &hostileEntry)),
	}
	if got := readLines(t, path); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("file:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	l.Log(&tcpEntry)
	if l.Dropped() != 1 {
		t.Errorf("a line logged after Close: dropped %d, want 1", l.Dropped())
	}
}

func TestNewPaths(t *testing.T) {
	f := mustFormat(t, "json")
	tests := []struct {
		name    string
		path    string
		wantErr bool
	}{
		{"empty is stdout", "", false},
		{"dash is stdout", "-", false},
		{"stdout", "stdout", false},
		{"missing directory", filepath.Join(t.TempDir(), "no", "such", "dir", "access.log"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := New(tt.path, f)
			if tt.wantErr {
				if err == nil {
					l.Close()
					t.Fatal("New succeeded")
				}
				if !strings.Contains(err.Error(), "access log") {
					t.Errorf("error %q lacks context", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if l.out != os.Stdout || l.file != nil {
				t.Errorf("New(%q) does not write to stdout", tt.path)
			}
			if err := l.Reopen(); err != nil {
				t.Errorf("Reopen on stdout: %v", err)
			}
			if err := l.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			if _, err := os.Stdout.Stat(); err != nil {
				t.Errorf("Close closed stdout: %v", err)
			}
		})
	}
}

func TestReopenAfterRotation(t *testing.T) {
	f := mustFormat(t, "json")
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	l, err := New(path, f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	l.Log(&tcpEntry)
	if err := os.Rename(path, path+".1"); err != nil { // what logrotate does
		t.Fatal(err)
	}
	if err := l.Reopen(); err != nil {
		t.Fatalf("Reopen: %v", err)
	}
	l.Log(&udpEntry)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got, want := readLines(t, path+".1"), []string{string(f.Append(nil, &tcpEntry))}; len(got) != 1 || got[0] != want[0] {
		t.Errorf("rotated file %q, want %q", got, want)
	}
	if got, want := readLines(t, path), []string{string(f.Append(nil, &udpEntry))}; len(got) != 1 || got[0] != want[0] {
		t.Errorf("new file %q, want %q", got, want)
	}
	if err := l.Reopen(); err == nil {
		t.Error("Reopen after Close succeeded")
	}
}

func TestReopenFailureKeepsOldFile(t *testing.T) {
	f := mustFormat(t, "json")
	dir := filepath.Join(t.TempDir(), "logs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "access.log")
	l, err := New(path, f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	moved := filepath.Join(filepath.Dir(dir), "moved")
	if err := os.Rename(dir, moved); err != nil {
		t.Fatal(err)
	}
	if err := l.Reopen(); err == nil {
		t.Fatal("Reopen succeeded with the directory gone")
	}
	l.Log(&tcpEntry)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readLines(t, filepath.Join(moved, "access.log")); len(got) != 1 {
		t.Errorf("old file has %d lines, want 1", len(got))
	}
}

func TestConcurrentLog(t *testing.T) {
	const goroutines, perGoroutine = 16, 500
	f := mustFormat(t, "json")
	path := filepath.Join(t.TempDir(), "access.log")
	l, err := New(path, f)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range perGoroutine {
				e := tcpEntry
				e.Client = netip.AddrPortFrom(e.Client.Addr(), uint16(g))
				e.BytesSent = int64(i)
				l.Log(&e)
			}
		})
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, path)
	if got := uint64(len(lines)) + l.Dropped(); got != goroutines*perGoroutine {
		t.Fatalf("%d lines written + %d dropped, want %d logged", len(lines), l.Dropped(), goroutines*perGoroutine)
	}
	// Every line is whole: none interleaved with another.
	seen := map[[2]int64]bool{}
	for _, line := range lines {
		var m struct {
			Port      int64 `json:"remote_port"`
			BytesSent int64 `json:"bytes_sent"`
		}
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		k := [2]int64{m.Port, m.BytesSent}
		if seen[k] {
			t.Fatalf("line %q written twice", line)
		}
		seen[k] = true
	}
}

// blockingWriter blocks every Write until release is closed, like a stuck disk or pipe.
type blockingWriter struct {
	started chan struct{} // closed at the first Write
	once    sync.Once
	release chan struct{}
	mu      sync.Mutex
	buf     bytes.Buffer
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.started) })
	<-w.release
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func TestDropWhenWriterBlocks(t *testing.T) {
	const logged = QueueLines + 2000
	f := mustFormat(t, DefaultFormat)
	w := &blockingWriter{started: make(chan struct{}), release: make(chan struct{})}
	l := NewWriter(w, f)
	released := false
	t.Cleanup(func() {
		if !released {
			close(w.release)
		}
		l.Close()
	})

	l.Log(&tcpEntry)
	select {
	case <-w.started:
	case <-time.After(5 * time.Second):
		t.Fatal("the writer was never called")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range logged - 1 {
			l.Log(&tcpEntry)
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Log blocked on a stuck writer")
	}
	if l.Dropped() == 0 {
		t.Fatalf("nothing dropped with %d lines queued behind a stuck writer", logged)
	}
	if l.Dropped() > logged-QueueLines {
		t.Errorf("dropped %d of %d: the queue of %d was not used", l.Dropped(), logged, QueueLines)
	}

	close(w.release)
	released = true
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(&w.buf)
	var written uint64
	want := string(f.Append(nil, &tcpEntry))
	for sc.Scan() {
		if sc.Text() != want {
			t.Fatalf("line %q, want %q", sc.Text(), want)
		}
		written++
	}
	if written+l.Dropped() != logged {
		t.Errorf("%d written + %d dropped, want %d logged", written, l.Dropped(), logged)
	}
}

func TestLogDoesNotAllocate(t *testing.T) {
	l := NewWriter(io.Discard, mustFormat(t, "json"))
	t.Cleanup(func() { l.Close() })
	for range 100 { // warm the pool
		l.Log(&tcpEntry)
	}
	if n := testing.AllocsPerRun(1000, func() { l.Log(&tcpEntry) }); n > 0.05 {
		t.Errorf("Log allocates %.2f times per line", n)
	}
}

func BenchmarkLogJSON(b *testing.B) {
	l := NewWriter(io.Discard, mustFormat(b, "json"))
	b.Cleanup(func() { l.Close() })
	b.ReportAllocs()
	for b.Loop() {
		l.Log(&tcpEntry)
	}
	b.ReportMetric(float64(l.Dropped())/float64(b.N), "dropped/op")
}

func BenchmarkLogJSONParallel(b *testing.B) {
	l := NewWriter(io.Discard, mustFormat(b, "json"))
	b.Cleanup(func() { l.Close() })
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.Log(&tcpEntry)
		}
	})
	b.ReportMetric(float64(l.Dropped())/float64(b.N), "dropped/op")
}

func BenchmarkLogFormat(b *testing.B) {
	l := NewWriter(io.Discard, mustFormat(b, DefaultFormat))
	b.Cleanup(func() { l.Close() })
	b.ReportAllocs()
	for b.Loop() {
		l.Log(&tcpEntry)
	}
}

// FuzzParseFormat checks that any format string either fails to parse or prints every entry
// without panicking, and that a variable-free format prints itself.
func FuzzParseFormat(f *testing.F) {
	for _, s := range []string{DefaultFormat, "json", "combined", "$", "${", "${}", "$$remote_addr", "a$remote_port}b", "${cluster}x", "$http_", "$sent_http_x_y $request"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fm, err := ParseFormat(s)
		if err != nil {
			return
		}
		httpEntry := Entry{Method: "GET", RequestURI: "/\"x\xff", Protocol: "HTTP/1.1", RequestHeader: http.Header{"X-Y": {"a\nb"}}}
		for _, e := range []*Entry{&tcpEntry, &udpEntry, &hostileEntry, {}, &httpEntry} {
			line := fm.Append(nil, e)
			if s == "json" && !json.Valid(line) {
				t.Fatalf("invalid JSON line %q", line)
			}
			if !strings.Contains(s, "$") && s != "json" && s != "combined" && string(line) != s {
				t.Fatalf("literal format %q printed %q", s, line)
			}
		}
	})
}
