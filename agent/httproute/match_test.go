package httproute

import (
	"fmt"
	"net/http"
	"regexp"
	"testing"
)

// table builds an indexed Table from name → domains.
func table(indexed bool, vhs ...*VirtualHost) *Table {
	t := &Table{Name: "t", VirtualHosts: vhs}
	if indexed {
		t.Index()
	}
	return t
}

func vhost(name string, domains ...string) *VirtualHost {
	return &VirtualHost{Name: name, Domains: domains}
}

// TestVirtualHostPrecedence follows Envoy's documented domain search order: exact, longest
// suffix wildcard, longest prefix wildcard, "*"; a wildcard never matches the empty string.
func TestVirtualHostPrecedence(t *testing.T) {
	vhs := []*VirtualHost{
		vhost("exact", "www.foo.com"),
		vhost("suffix", "*.foo.com"),
		vhost("longsuffix", "*-bar.foo.com"),
		vhost("prefix", "foo.*"),
		vhost("longprefix", "foo-bar.*"),
		vhost("default", "*"),
		vhost("upper", "API.Example.COM"),
		vhost("v6", "[::1]"),
	}
	tests := []struct {
		host, want string
	}{
		{"www.foo.com", "exact"},
		{"WWW.Foo.Com", "exact"},
		{"www.foo.com:8080", "exact"},
		{"api.foo.com", "suffix"},
		{"baz-bar.foo.com", "longsuffix"},
		{"-bar.foo.com", "suffix"}, // "*-bar" needs a non-empty match; "*." takes it
		{".foo.com", "default"},    // "*.foo.com" needs a non-empty match too
		{"foo.com", "prefix"},
		{"foo.org", "prefix"},
		{"foo-bar.org", "longprefix"},
		{"foo.", "default"},
		{"bar.org", "default"},
		{"api.example.com", "upper"},
		{"[::1]:443", "v6"},
		{"[::1]", "v6"},
		{"", "default"},
	}
	for _, indexed := range []bool{true, false} {
		tbl := table(indexed, vhs...)
		for _, tt := range tests {
			got := tbl.VirtualHost(tt.host)
			if got == nil || got.Name != tt.want {
				t.Errorf("indexed=%v VirtualHost(%q) = %v, want %s", indexed, tt.host, got, tt.want)
			}
		}
	}
}

// TestVirtualHostPorts: the port is ignored unless a domain names one; then a domain with
// the port wins and the others still match without it.
func TestVirtualHostPorts(t *testing.T) {
	tbl := table(true, vhost("a8080", "a.example:8080"), vhost("a", "a.example"), vhost("wild", "*.example"))
	tests := []struct{ host, want string }{
		{"a.example:8080", "a8080"},
		{"a.example:80", "a"},
		{"a.example", "a"},
		{"b.example:8080", "wild"},
		{"A.EXAMPLE:8080", "a8080"},
	}
	for _, tt := range tests {
		if got := tbl.VirtualHost(tt.host); got == nil || got.Name != tt.want {
			t.Errorf("VirtualHost(%q) = %v, want %s", tt.host, got, tt.want)
		}
	}
	ignore := &Table{VirtualHosts: []*VirtualHost{vhost("a8080", "a.example:8080"), vhost("a", "a.example")}, IgnorePort: true}
	ignore.Index()
	if got := ignore.VirtualHost("a.example:8080"); got == nil || got.Name != "a" {
		t.Errorf("IgnorePort: VirtualHost(a.example:8080) = %v, want a", got)
	}
	if got := table(true, vhost("a", "a.example")).VirtualHost("b.example"); got != nil {
		t.Errorf("no default: VirtualHost(b.example) = %v, want nil", got)
	}
}

func TestSelectRoutes(t *testing.T) {
	route := func(name string, m Match) *Route { return &Route{Name: name, Match: m, Direct: &Direct{Status: 200}} }
	vh := vhost("vh", "*")
	vh.Routes = []*Route{
		route("exact", Match{Path: "/exact"}),
		route("exactci", Match{Path: "/CI", CaseInsensitive: true}),
		route("regex", Match{Regex: regexp.MustCompile(`^(?:/v[0-9]+/.*)$`)}),
		route("grpc", Match{Prefix: "/", GRPC: true}),
		route("post-api", Match{Prefix: "/api", Headers: []HeaderMatch{{Name: ":method", Kind: HeaderExact, Exact: "POST"}}}),
		route("canary", Match{Prefix: "/api", Headers: []HeaderMatch{
			{Name: "X-Canary", Kind: HeaderExact, Exact: "1"},
			{Name: "X-Foo", Kind: HeaderPresent, Present: true},
		}}),
		route("notbar", Match{Prefix: "/api", Headers: []HeaderMatch{{Name: "X-Bar", Kind: HeaderPrefix, Prefix: "a", Invert: true}}}),
		route("api", Match{Prefix: "/api"}),
		route("query", Match{Prefix: "/q?x=1"}),
		route("noauth", Match{Prefix: "/", Headers: []HeaderMatch{{Name: "Authorization", Kind: HeaderPresent, Present: false}}}),
		route("scheme", Match{Prefix: "/", Headers: []HeaderMatch{{Name: ":scheme", Kind: HeaderExact, Exact: "https"}}}),
		route("missing-as-empty", Match{Prefix: "/empty", Headers: []HeaderMatch{{Name: "X-Empty", Kind: HeaderRegex, Regex: regexp.MustCompile(`^(?:)$`), MissingAsEmpty: true}}}),
		route("ignore-case", Match{Prefix: "/ci", Headers: []HeaderMatch{{Name: "X-Ci", Kind: HeaderContains, Contains: "abc", IgnoreCase: true}}}),
	}
	tbl := table(true, vh)
	tests := []struct {
		name   string
		method string
		path   string
		scheme string
		header http.Header
		want   string // "" for no route
	}{
		{"exact", "GET", "/exact", "http", nil, "exact"},
		{"exact ignores query", "GET", "/exact?a=b", "http", nil, "exact"},
		{"exact is case sensitive", "GET", "/Exact", "http", http.Header{"Authorization": {"x"}}, ""},
		{"exact case insensitive", "GET", "/ci", "http", nil, "exactci"},
		{"regex full match", "GET", "/v2/users?x", "http", nil, "regex"},
		{"regex anchored", "GET", "/x/v2/users", "http", http.Header{"Authorization": {"x"}}, ""},
		{"grpc", "POST", "/pkg.Svc/Call", "http", http.Header{"Content-Type": {"application/grpc+proto"}}, "grpc"},
		{"not grpc", "POST", "/pkg.Svc/Call", "http", http.Header{"Content-Type": {"application/grpcx"}, "Authorization": {"x"}}, ""},
		{"method", "POST", "/api/x", "http", nil, "post-api"},
		{"headers all", "GET", "/api/x", "http", http.Header{"X-Canary": {"1"}, "X-Foo": {""}, "X-Bar": {"abc"}}, "canary"},
		{"headers one missing", "GET", "/api/x", "http", http.Header{"X-Canary": {"1"}, "X-Bar": {"abc"}}, "api"},
		{"inverted absent fails", "GET", "/api/x", "http", nil, "api"},
		{"inverted present", "GET", "/api/x", "http", http.Header{"X-Bar": {"zzz"}}, "notbar"},
		{"multi values joined", "GET", "/api/x", "http", http.Header{"X-Canary": {"1", "2"}, "X-Foo": {""}, "X-Bar": {"a"}}, "api"},
		{"prefix into query", "GET", "/q?x=1&y", "http", nil, "query"},
		{"absolute form", "GET", "http://h/api/x", "http", nil, "api"},
		{"present false", "GET", "/other", "http", nil, "noauth"},
		{"scheme", "GET", "/other", "https", http.Header{"Authorization": {"x"}}, "scheme"},
		{"no route", "GET", "/other", "http", http.Header{"Authorization": {"x"}}, ""},
		{"missing as empty", "GET", "/empty", "http", http.Header{"Authorization": {"x"}}, "missing-as-empty"},
		{"present but not empty", "GET", "/empty", "http", http.Header{"Authorization": {"x"}, "X-Empty": {"1"}}, ""},
		{"ignore case contains", "GET", "/ci/x", "http", http.Header{"Authorization": {"x"}, "X-Ci": {"xxABcx"}}, "ignore-case"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := tt.header
			if h == nil {
				h = http.Header{}
			}
			gotVH, got := tbl.Select(&Request{Authority: "example.com", Path: tt.path, Method: tt.method, Scheme: tt.scheme, Header: h})
			if gotVH != vh {
				t.Fatalf("virtual host = %v", gotVH)
			}
			name := ""
			if got != nil {
				name = got.Name
			}
			if name != tt.want {
				t.Errorf("route = %q, want %q", name, tt.want)
			}
		})
	}
	if vh, r := table(true, vhost("a", "a")).Select(&Request{Authority: "b", Path: "/"}); vh != nil || r != nil {
		t.Errorf("no virtual host: got %v %v", vh, r)
	}
}

func TestSelectDoesNotAllocate(t *testing.T) {
	vh := vhost("api", "api.example.com", "*.example.com")
	vh.Routes = []*Route{
		{Match: Match{Path: "/healthz"}},
		{Match: Match{Regex: regexp.MustCompile(`^(?:/v[0-9]+/.*)$`)}},
		{Match: Match{Prefix: "/api", Headers: []HeaderMatch{{Name: ":method", Kind: HeaderRegex, Regex: regexp.MustCompile(`^(?:GET|POST)$`)}, {Name: "X-Canary", Kind: HeaderExact, Exact: "1"}}}},
		{Match: Match{Prefix: "/"}},
	}
	tbl := table(true, vhost("other", "other.example.com"), vh, vhost("default", "*"))
	req := &Request{Authority: "www.example.com:8443", Path: "/api/users?id=3", Method: "GET", Scheme: "https",
		Header: http.Header{"X-Canary": {"1"}, "User-Agent": {"test"}}}
	var got *Route
	allocs := testing.AllocsPerRun(1000, func() { _, got = tbl.Select(req) })
	if got != vh.Routes[2] {
		t.Fatalf("route = %+v", got)
	}
	if allocs != 0 {
		t.Errorf("Select allocates %v times per call, want 0", allocs)
	}
}

func BenchmarkSelect(b *testing.B) {
	var vhs []*VirtualHost
	for _, d := range []string{"a.example.com", "b.example.com", "c.example.com", "*.example.org", "www.*"} {
		v := vhost(d, d)
		v.Routes = []*Route{{Match: Match{Prefix: "/"}}}
		vhs = append(vhs, v)
	}
	vh := vhost("api", "api.example.com")
	for _, p := range []string{"/a", "/b", "/c", "/d", "/e", "/f", "/g", "/api"} {
		vh.Routes = append(vh.Routes, &Route{Match: Match{Prefix: p + "/"}})
	}
	vhs = append(vhs, vh)
	tbl := table(true, vhs...)
	req := &Request{Authority: "api.example.com", Path: "/api/users/1?x=y", Method: "GET", Scheme: "http", Header: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		if _, r := tbl.Select(req); r == nil {
			b.Fatal("no route")
		}
	}
}

func TestPickCluster(t *testing.T) {
	f := &Forward{Clusters: []WeightedCluster{{Name: "a", Weight: 90}, {Name: "zero", Weight: 0}, {Name: "b", Weight: 10}}, TotalWeight: 100}
	counts := map[string]int{}
	for r := uint32(0); r < 1000; r++ {
		counts[f.PickCluster(r).Name]++
	}
	if counts["a"] != 900 || counts["b"] != 100 || counts["zero"] != 0 {
		t.Errorf("counts = %v, want a:900 b:100", counts)
	}
	if got := (&Forward{Clusters: []WeightedCluster{{Name: "only"}}}).PickCluster(7); got.Name != "only" {
		t.Errorf("single cluster: %v", got)
	}
	if got := (&Forward{}).PickCluster(1); got != nil {
		t.Errorf("no cluster: %v", got)
	}
	// TotalWeight unset: computed.
	f.TotalWeight = 0
	if got := f.PickCluster(95); got.Name != "b" {
		t.Errorf("computed total: %v", got)
	}
}

func TestRewritePath(t *testing.T) {
	tests := []struct {
		name  string
		match Match
		rw    string
		in    string
		want  string
	}{
		{"prefix", Match{Prefix: "/api/"}, "/", "/api/users?x=1", "/users?x=1"},
		{"prefix keeps rest", Match{Prefix: "/api"}, "/v2", "/api/users", "/v2/users"},
		{"prefix double slash like envoy", Match{Prefix: "/api"}, "/", "/api/users", "//users"},
		{"path replaced", Match{Path: "/old"}, "/new", "/old?q", "/new?q"},
		{"regex replaces whole path", Match{Regex: regexp.MustCompile(`^(?:/v[0-9]/.*)$`)}, "/x", "/v1/a/b", "/x"},
		{"case insensitive prefix", Match{Prefix: "/API", CaseInsensitive: true}, "/b", "/api/c", "/b/c"},
		{"no rewrite", Match{Prefix: "/api"}, "", "/api/users?x", "/api/users?x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &Route{Match: tt.match, Forward: &Forward{PrefixRewrite: tt.rw}}
			if got := r.RewritePath(tt.in); got != tt.want {
				t.Errorf("RewritePath(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
	if got := (&Route{Redirect: &Redirect{}}).RewritePath("/a"); got != "/a" {
		t.Errorf("redirect route: %q", got)
	}
}

func TestLocation(t *testing.T) {
	tests := []struct {
		name                      string
		r                         Redirect
		scheme, host, path, query string
		prefix                    string
		want                      string
	}{
		{"https redirect", Redirect{Scheme: "https"}, "http", "example.com", "/a", "x=1", "/", "https://example.com/a?x=1"},
		{"https drops port 80", Redirect{Scheme: "https"}, "http", "example.com:80", "/a", "", "/", "https://example.com/a"},
		{"https keeps other port", Redirect{Scheme: "https"}, "http", "example.com:8080", "/a", "", "/", "https://example.com:8080/a"},
		{"port redirect", Redirect{Scheme: "https", Port: 8443}, "http", "example.com:80", "/a", "", "/", "https://example.com:8443/a"},
		{"port 443 left out", Redirect{Scheme: "https", Port: 443}, "http", "example.com:8080", "/", "", "/", "https://example.com/"},
		{"host", Redirect{Host: "new.example"}, "http", "old.example:8080", "/a", "", "/", "http://new.example:8080/a"},
		{"host with port", Redirect{Host: "new.example:9000"}, "http", "old.example:8080", "/a", "", "/", "http://new.example:9000/a"},
		{"path", Redirect{Path: "/p"}, "http", "h", "/a/b", "q=1", "/", "http://h/p?q=1"},
		{"path with query", Redirect{Path: "/p?z=2"}, "http", "h", "/a", "q=1", "/", "http://h/p?z=2"},
		{"prefix rewrite", Redirect{PrefixRewrite: "/new/"}, "http", "h", "/old/x", "", "/old/", "http://h/new/x"},
		{"strip query", Redirect{StripQuery: true}, "https", "h", "/a", "q=1", "/", "https://h/a"},
		{"ipv6", Redirect{Scheme: "https"}, "http", "[::1]:80", "/", "", "/", "https://[::1]/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.r.Location(tt.scheme, tt.host, tt.path, tt.query, tt.prefix); got != tt.want {
				t.Errorf("Location = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestSplitHostPort(t *testing.T) {
	tests := []struct{ in, host, port string }{
		{"a.example", "a.example", ""},
		{"a.example:80", "a.example", "80"},
		{"a.example:", "a.example", ""},
		{"[::1]:80", "[::1]", "80"},
		{"[::1]", "[::1]", ""},
		{"::1", "::1", ""},
		{"a:b", "a:b", ""},
	}
	for _, tt := range tests {
		if h, p := splitHostPort(tt.in); h != tt.host || p != tt.port {
			t.Errorf("splitHostPort(%q) = %q, %q; want %q, %q", tt.in, h, p, tt.host, tt.port)
		}
	}
}

// BenchmarkSelectManyHosts: 1,000 virtual hosts with an exact and a suffix wildcard domain
// each; the request matches a wildcard.
func BenchmarkSelectManyHosts(b *testing.B) {
	var vhs []*VirtualHost
	for i := range 1000 {
		v := vhost(fmt.Sprint(i), fmt.Sprintf("h%d.example.com", i), fmt.Sprintf("*.h%d.example.org", i))
		v.Routes = []*Route{{Match: Match{Prefix: "/"}}}
		vhs = append(vhs, v)
	}
	tbl := table(true, vhs...)
	req := &Request{Authority: "www.h999.example.org:443", Path: "/x", Method: "GET", Scheme: "https", Header: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		if vh, _ := tbl.Select(req); vh == nil || vh.Name != "999" {
			b.Fatal("wrong host")
		}
	}
}
