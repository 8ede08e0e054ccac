package httproute

import (
	"net/http"
	"regexp"
	"testing"
)

// FuzzSelect routes arbitrary authorities and request targets (as clients send them) and
// builds rewrites and redirects from them: nothing may panic, and the indexed and unindexed
// lookups agree.
func FuzzSelect(f *testing.F) {
	vhs := []*VirtualHost{
		vhost("exact", "www.foo.com"), vhost("port", "foo.com:8080"), vhost("suffix", "*.foo.com"),
		vhost("prefix", "foo.*"), vhost("v6", "[::1]"), vhost("default", "*"),
	}
	for _, vh := range vhs {
		vh.Routes = []*Route{
			{Match: Match{Prefix: "/a?b"}, Redirect: &Redirect{PrefixRewrite: "/z", Scheme: "https", Port: 8443}},
			{Match: Match{Regex: regexp.MustCompile(`^(?:/v[0-9]+/.*)$`)}, Forward: &Forward{PrefixRewrite: "/x"}},
			{Match: Match{Prefix: "/API", CaseInsensitive: true, Headers: []HeaderMatch{{Name: "X", Kind: HeaderContains, Contains: "ab", IgnoreCase: true}}}, Forward: &Forward{PrefixRewrite: "/"}},
			{Match: Match{Prefix: "/"}, Redirect: &Redirect{Path: "/p?q", Host: "h:1"}},
		}
	}
	indexed, scanned := table(true, vhs...), table(false, vhs...)
	f.Add("www.foo.com:80", "/a?b=1", "aB")
	f.Add("[::1]:443", "http://h/API/x", "xAbx")
	f.Add("FOO.com:8080", "/v2/x?", "")
	f.Fuzz(func(t *testing.T, host, target, hv string) {
		req := &Request{Authority: host, Path: target, Method: "GET", Scheme: "http", Header: http.Header{"X": {hv}}}
		vh, rt := indexed.Select(req)
		if vh2, _ := scanned.Select(req); vh != vh2 {
			t.Fatalf("indexed %v, scanned %v for %q", vh, vh2, host)
		}
		if rt == nil {
			return
		}
		rt.RewritePath(target)
		if rt.Redirect != nil {
			p, q := splitPath(target)
			rt.Redirect.Location("http", host, p, q, rt.Match.Prefix)
		}
	})
}
