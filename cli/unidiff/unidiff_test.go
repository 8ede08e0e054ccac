package unidiff

import "testing"

func TestDiff(t *testing.T) {
	tests := []struct {
		name string
		a, b string
		want string
	}{
		{name: "equal", a: "a\nb\n", b: "a\nb\n", want: ""},
		{name: "both empty", a: "", b: "", want: ""},
		{
			name: "added from nothing",
			a:    "",
			b:    "name: echo\nport: 1\n",
			want: "--- old\n+++ new\n@@ -0,0 +1,2 @@\n+name: echo\n+port: 1\n",
		},
		{
			name: "removed entirely",
			a:    "name: echo\n",
			b:    "",
			want: "--- old\n+++ new\n@@ -1 +0,0 @@\n-name: echo\n",
		},
		{
			name: "one line changed in the middle keeps three lines of context",
			a:    "1\n2\n3\n4\n5\n6\n7\n8\n9\n",
			b:    "1\n2\n3\n4\nfive\n6\n7\n8\n9\n",
			want: "--- old\n+++ new\n@@ -2,7 +2,7 @@\n 2\n 3\n 4\n-5\n+five\n 6\n 7\n 8\n",
		},
		{
			name: "distant changes make two hunks",
			a:    "a\n1\n2\n3\n4\n5\n6\n7\n8\nb\n",
			b:    "A\n1\n2\n3\n4\n5\n6\n7\n8\nB\n",
			want: "--- old\n+++ new\n@@ -1,4 +1,4 @@\n-a\n+A\n 1\n 2\n 3\n@@ -7,4 +7,4 @@\n 6\n 7\n 8\n-b\n+B\n",
		},
		{
			name: "changes six lines apart share a hunk",
			a:    "a\n1\n2\n3\n4\n5\n6\nb\n",
			b:    "A\n1\n2\n3\n4\n5\n6\nB\n",
			want: "--- old\n+++ new\n@@ -1,8 +1,8 @@\n-a\n+A\n 1\n 2\n 3\n 4\n 5\n 6\n-b\n+B\n",
		},
		{
			name: "insertion at the end without a final newline",
			a:    "x\ny",
			b:    "x\ny\nz",
			want: "--- old\n+++ new\n@@ -1,2 +1,3 @@\n x\n y\n+z\n",
		},
		{
			name: "removals come before additions",
			a:    "k: 1\nl: 2\n",
			b:    "k: 3\nl: 4\n",
			want: "--- old\n+++ new\n@@ -1,2 +1,2 @@\n-k: 1\n-l: 2\n+k: 3\n+l: 4\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Diff("old", "new", tt.a, tt.b); got != tt.want {
				t.Errorf("Diff() =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}
