package httpproxy_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/flotilla-proxy/flotilla/agent/httpproxy"
	"github.com/flotilla-proxy/flotilla/agent/httproute"
)

// rawGet sends "GET target" on a new connection exactly as given (no client-side
// cleaning) and returns the response and its body.
func rawGet(t *testing.T, addr, target string) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", target)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", target, err)
	}
	return resp, string(b)
}

// upstreamTarget decodes the echo backend's answer: the request target it saw.
func upstreamTarget(t *testing.T, target string, resp *http.Response, body string) string {
	t.Helper()
	var e echoed
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("GET %s: %d %q: %v", target, resp.StatusCode, body, err)
	}
	return e.Path
}

// TestPrefixRewrite: prefix_rewrite builds the upstream path as a path, so that "//x" is
// never taken for an authority, keeps escapes and the query, gives a rewrite without a
// leading "/" one, and never skips a rewrite silently.
func TestPrefixRewrite(t *testing.T) {
	echo := startEcho(t, "a")
	route := func(name, prefix, rewrite string) *httproute.Route {
		rt := fwd(name, prefix, "c")
		rt.Forward.PrefixRewrite = rewrite
		return rt
	}
	p := startProxy(t, &httpproxy.Config{Listener: "web", Manager: manager(), Table: table(
		route("api", "/api/", "/"),
		route("short", "/short", "/"),
		route("noslash", "/v/", "v2/"),
		route("bad", "/bad/", "/x%zz/"),
		route("exact", "/exact", "/other"),
	)}, nil, cluster{Cluster: httpproxy.Cluster{Name: "c"}, endpoints: []string{addrOf(echo)}})
	tests := []struct {
		target, want string
	}{
		{"/api/foo", "/foo"},
		{"/api/users/42?x=1&y=%2F", "/users/42?x=1&y=%2F"},
		{"/api//internal/admin", "//internal/admin"},
		{"/api/a%2Fb/c%20d", "/a%2Fb/c%20d"},
		{"/short/foo", "//foo"},
		{"/short/users/42", "//users/42"},
		{"/short", "/"},
		{"/short?q=1", "/?q=1"},
		{"/v/x", "/v2/x"},
		{"/exactly", "/otherly"},
	}
	for _, tt := range tests {
		resp, body := rawGet(t, p.addr, tt.target)
		if got := upstreamTarget(t, tt.target, resp, body); got != tt.want {
			t.Errorf("GET %s: upstream saw %q, want %q", tt.target, got, tt.want)
		}
	}
	if resp, body := rawGet(t, p.addr, "/bad/x"); resp.StatusCode != http.StatusInternalServerError {
		t.Errorf("GET /bad/x with an undecodable rewrite: %d %q, want 500", resp.StatusCode, body)
	}
}

// TestPathNormalization: with normalize_path and merge_slashes, a path is routed and
// forwarded normalised, so that a route guarding /admin cannot be walked around with dot
// segments, doubled slashes or escapes; escaped slashes are kept, rejected or redirected
// as path_with_escaped_slashes_action says.
func TestPathNormalization(t *testing.T) {
	echo := startEcho(t, "a")
	deny := &httproute.Route{Name: "deny", Match: httproute.Match{Prefix: "/admin"}, Direct: &httproute.Direct{Status: 403, Body: []byte("no")}}
	tbl := table(deny, fwd("all", "/", "c"))
	be := cluster{Cluster: httpproxy.Cluster{Name: "c"}, endpoints: []string{addrOf(echo)}}
	withPaths := func(norm, merge bool, slashes httproute.EscapedSlashesAction) *httproute.Manager {
		m := manager()
		m.NormalizePath, m.MergeSlashes, m.EscapedSlashes = norm, merge, slashes
		return m
	}
	tests := []struct {
		name     string
		m        *httproute.Manager
		target   string
		status   int
		upstream string // the target the backend saw, for a 200
		location string
	}{
		{"dot-dot to admin", withPaths(true, true, 0), "/x/../admin/x", 403, "", ""},
		{"double slash to admin", withPaths(true, true, 0), "//admin/x", 403, "", ""},
		{"escaped letter to admin", withPaths(true, true, 0), "/%61dmin/x", 403, "", ""},
		{"escaped dot-dot to admin", withPaths(true, true, 0), "/x/%2e%2e/admin", 403, "", ""},
		{"dot segments forwarded normalised", withPaths(true, true, 0), "/a/./b/?q=/../", 200, "/a/b/?q=/../", ""},
		{"absolute form", withPaths(true, true, 0), "http://x/x/../admin/x", 403, "", ""},
		{"absolute form forwarded normalised", withPaths(true, true, 0), "http://x//a/./b?c=/./", 200, "/a/b?c=/./", ""},
		{"asterisk untouched", withPaths(true, true, 0), "*", 404, "", ""},
		{"dot-dot above root", withPaths(true, true, 0), "/../../etc/passwd", 200, "/etc/passwd", ""},
		{"escaped dot-dot", withPaths(true, true, 0), "/%2e%2e/x?y=%2e%2e", 200, "/x?y=%2e%2e", ""},
		{"escaped slash kept", withPaths(true, true, httproute.EscapedSlashesKeep), "/a%2fb", 200, "/a%2Fb", ""},
		{"escaped slash rejected", withPaths(true, true, httproute.EscapedSlashesReject), "/a%2Fb", 400, "", ""},
		{"escaped slash unescaped", withPaths(true, true, httproute.EscapedSlashesUnescapeAndForward), "/x%2F..%2Fadmin", 403, "", ""},
		{"escaped slash redirected", withPaths(true, true, httproute.EscapedSlashesUnescapeAndRedirect), "/a%2Fb?x=%2F", 307, "", "/a/b?x=%2F"},
		{"merge only", withPaths(false, true, 0), "//a//b/./c", 200, "/a/b/./c", ""},
		{"off: forwarded as sent", withPaths(false, false, 0), "/x/../admin/x", 200, "/x/../admin/x", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := startProxy(t, &httpproxy.Config{Listener: "web", Manager: tt.m, Table: tbl}, nil, be)
			resp, body := rawGet(t, p.addr, tt.target)
			if resp.StatusCode != tt.status {
				t.Fatalf("GET %s: %d %q, want %d", tt.target, resp.StatusCode, body, tt.status)
			}
			if tt.upstream != "" {
				if got := upstreamTarget(t, tt.target, resp, body); got != tt.upstream {
					t.Errorf("GET %s: upstream saw %q, want %q", tt.target, got, tt.upstream)
				}
			}
			if got := resp.Header.Get("Location"); got != tt.location {
				t.Errorf("GET %s: Location %q, want %q", tt.target, got, tt.location)
			}
		})
	}
}
