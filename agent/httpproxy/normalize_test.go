package httpproxy

import (
	"strings"
	"testing"

	"github.com/flotilla-proxy/flotilla/agent/httproute"
)

func TestNormalizePath(t *testing.T) {
	var (
		none   = httproute.Manager{}
		norm   = httproute.Manager{NormalizePath: true}
		merge  = httproute.Manager{MergeSlashes: true}
		both   = httproute.Manager{NormalizePath: true, MergeSlashes: true}
		reject = httproute.Manager{NormalizePath: true, MergeSlashes: true, EscapedSlashes: httproute.EscapedSlashesReject}
		unesc  = httproute.Manager{NormalizePath: true, MergeSlashes: true, EscapedSlashes: httproute.EscapedSlashesUnescapeAndForward}
		redir  = httproute.Manager{NormalizePath: true, MergeSlashes: true, EscapedSlashes: httproute.EscapedSlashesUnescapeAndRedirect}
	)
	tests := []struct {
		name    string
		m       httproute.Manager
		in      string
		want    string
		verdict pathVerdict
	}{
		{"off", none, "/x/../admin//a?b=/../", "/x/../admin//a?b=/../", pathForward},
		{"dot-dot", norm, "/x/../admin", "/admin", pathForward},
		{"dot-dot with query", norm, "/x/../admin/x?next=/../y&a=%2e", "/admin/x?next=/../y&a=%2e", pathForward},
		{"double slash kept without merge", norm, "//admin", "//admin", pathForward},
		{"double slash merged", both, "//admin/x", "/admin/x", pathForward},
		{"merge only", merge, "/a//b///c/./d", "/a/b/c/./d", pathForward},
		{"merge only, query untouched", merge, "/a//b?x=//y", "/a/b?x=//y", pathForward},
		{"unreserved escape", norm, "/%61dmin/x", "/admin/x", pathForward},
		{"unreserved escapes, all kinds", norm, "/%41%7a%30%2D%2e%5F%7E", "/Az0-._~", pathForward},
		{"reserved escape kept, hex upper-cased", norm, "/a%3fb%2fc%20d", "/a%3Fb%2Fc%20d", pathForward},
		{"dot segments", norm, "/a/./b/", "/a/b/", pathForward},
		{"trailing dot", norm, "/a/b/.", "/a/b/", pathForward},
		{"trailing dot-dot", norm, "/a/b/..", "/a/", pathForward},
		{"dot-dot at root", norm, "/..", "/", pathForward},
		{"dot-dots above root", norm, "/../../etc/passwd", "/etc/passwd", pathForward},
		{"escaped dot-dot", norm, "/%2e%2e/", "/", pathForward},
		{"escaped dot-dot mixed case", norm, "/a/%2E./b", "/b", pathForward},
		{"dots in names kept", norm, "/a/..b/.c/d..", "/a/..b/.c/d..", pathForward},
		{"empty segment before dot-dot", both, "/a//../b", "/a/b", pathForward},
		{"escaped slash kept", both, "/a%2F..%2Fadmin", "/a%2F..%2Fadmin", pathForward},
		{"escaped slash rejected", reject, "/a%2fb", "/a%2fb", pathReject},
		{"escaped backslash rejected", reject, "/a%5Cb", "/a%5Cb", pathReject},
		{"no escaped slash, reject mode", reject, "/a/%2e%2e/b?x=%2F", "/b?x=%2F", pathForward},
		{"escaped slash unescaped then normalised", unesc, "/a%2F..%2Fadmin?q=%2F", "/admin?q=%2F", pathForward},
		{"escaped slashes merged", unesc, "/a%2f%2fb", "/a/b", pathForward},
		{"escaped backslash unescaped", unesc, "/a%5cb", `/a\b`, pathForward},
		{"escaped slash redirect", redir, "/a%2Fb?x=1", "/a/b?x=1", pathRedirect},
		{"redirect mode, nothing escaped", redir, "/a/b?x=%2F", "/a/b?x=%2F", pathForward},
		{"asterisk", both, "*", "*", pathForward},
		{"empty query kept", both, "/a/../b?", "/b?", pathForward},
		{"lone percent", norm, "/a%2", "/a%252", pathForward},
		{"stray percent makes no escape", norm, "/%%41a", "/%25Aa", pathForward},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, v := normalizePath(tt.in, &tt.m)
			if got != tt.want || v != tt.verdict {
				t.Errorf("normalizePath(%q) = %q, %d; want %q, %d", tt.in, got, v, tt.want, tt.verdict)
			}
		})
	}
}

// FuzzNormalizePath: any target normalises without panicking, to a path that starts with
// "/" (when the target's did), keeps its query, and has no dot segment left; normalising
// again changes nothing.
func FuzzNormalizePath(f *testing.F) {
	for _, s := range []string{"/x/../admin", "//admin", "/%61dmin", "/a/./b/", "/..", "/%2e%2e/", "/a%2Fb?q=%2F", "/a%5c..%5cb", "*", "/a?b=/../"} {
		f.Add(s, uint8(0))
	}
	f.Fuzz(func(t *testing.T, target string, action uint8) {
		m := &httproute.Manager{NormalizePath: true, MergeSlashes: true, EscapedSlashes: httproute.EscapedSlashesAction(action % 4)}
		got, v := normalizePath(target, m)
		if v == pathReject {
			return
		}
		path, query, hasQuery := strings.Cut(got, "?")
		inPath, inQuery, inHasQuery := strings.Cut(target, "?")
		if query != inQuery || hasQuery != inHasQuery {
			t.Fatalf("normalizePath(%q) = %q: query changed", target, got)
		}
		if !strings.HasPrefix(inPath, "/") {
			if got != target {
				t.Fatalf("normalizePath(%q) = %q: a target without a path changed", target, got)
			}
			return
		}
		if !strings.HasPrefix(path, "/") || strings.Contains(path, "//") {
			t.Fatalf("normalizePath(%q) = %q", target, got)
		}
		for seg := range strings.SplitSeq(path, "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("normalizePath(%q) = %q: dot segment left", target, got)
			}
		}
		if again, _ := normalizePath(got, m); again != got {
			t.Fatalf("normalizePath(%q) = %q, then %q: not idempotent", target, got, again)
		}
	})
}
