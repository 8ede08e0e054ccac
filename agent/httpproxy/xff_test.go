package httpproxy

import (
	"net/netip"
	"testing"
)

func TestTrustedClient(t *testing.T) {
	tests := []struct {
		values []string
		n      int
		want   string // "" for none
	}{
		{[]string{"203.0.113.1"}, 1, "203.0.113.1"},
		{[]string{"198.51.100.1, 203.0.113.1"}, 1, "203.0.113.1"},
		{[]string{"198.51.100.1, 203.0.113.1"}, 2, "198.51.100.1"},
		{[]string{"198.51.100.1", "203.0.113.1"}, 2, "198.51.100.1"},
		{[]string{"198.51.100.1,,  203.0.113.1 "}, 2, "198.51.100.1"},
		{[]string{"203.0.113.1:4711"}, 1, "203.0.113.1"},
		{[]string{"[2001:db8::1]:443, ::ffff:192.0.2.1"}, 1, "192.0.2.1"},
		{[]string{"[2001:db8::1]:443, ::ffff:192.0.2.1"}, 2, "2001:db8::1"},
		{[]string{"unknown"}, 1, ""},
		{[]string{"203.0.113.1"}, 2, ""},
		{nil, 1, ""},
	}
	for _, tt := range tests {
		a, ok := trustedClient(tt.values, tt.n)
		got := ""
		if ok {
			got = a.String()
		}
		if got != tt.want {
			t.Errorf("trustedClient(%q, %d) = %q, want %q", tt.values, tt.n, got, tt.want)
		}
	}
}

// FuzzTrustedClient: any X-Forwarded-For a client sends gives an address or none, never a
// panic, and the address is a valid unmapped one.
func FuzzTrustedClient(f *testing.F) {
	f.Add("198.51.100.1, 203.0.113.1", 1)
	f.Add(",,,", 2)
	f.Add("[::1]:80", 1)
	f.Fuzz(func(t *testing.T, v string, n int) {
		if n <= 0 || n > 64 {
			return
		}
		a, ok := trustedClient([]string{v, v}, n)
		if ok && (!a.IsValid() || a.Is4In6() || a != netip.MustParseAddr(a.String())) {
			t.Fatalf("trustedClient(%q, %d) = %v", v, n, a)
		}
	})
}
