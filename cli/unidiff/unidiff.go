// Package unidiff renders the difference between two texts as a unified diff,
// line by line, the way `diff -u` does. flotctl uses it to show what an apply
// would change in each listener and cluster before anything is stored.
//
// The texts it compares are small (one rendered resource each), so it finds a
// longest common subsequence of lines with the classic O(len(a)·len(b))
// dynamic programme: simple, exact, and minimal in the number of changed lines.
package unidiff

import (
	"fmt"
	"strconv"
	"strings"
)

// Context is how many unchanged lines surround each change, as in `diff -u`.
const Context = 3

// Diff returns the unified diff that turns a into b, under the headers
// "--- oldName" and "+++ newName", with Context lines around each change.
// Changes closer than 2·Context lines share a hunk. It returns "" when a and b
// have the same lines. A missing final newline is not reported.
func Diff(oldName, newName, a, b string) string {
	ops := edits(splitLines(a), splitLines(b))
	var out strings.Builder
	oldLine, newLine := 1, 1 // line numbers at ops[next]
	next := 0
	for next < len(ops) {
		first := nextChange(ops, next)
		if first < 0 {
			break
		}
		// Extend the hunk while the gap to the next change is short enough
		// that the two contexts would touch.
		last := first
		for k := nextChange(ops, last+1); k >= 0 && k-last-1 <= 2*Context; k = nextChange(ops, last+1) {
			last = k
		}
		lo := max(first-Context, next)
		hi := min(last+Context+1, len(ops))
		for _, o := range ops[next:lo] {
			oldLine, newLine = advance(o, oldLine, newLine)
		}
		if out.Len() == 0 {
			fmt.Fprintf(&out, "--- %s\n+++ %s\n", oldName, newName)
		}
		oldCount, newCount := 0, 0
		for _, o := range ops[lo:hi] {
			if o.kind != '+' {
				oldCount++
			}
			if o.kind != '-' {
				newCount++
			}
		}
		fmt.Fprintf(&out, "@@ -%s +%s @@\n", hunkRange(oldLine, oldCount), hunkRange(newLine, newCount))
		for _, o := range ops[lo:hi] {
			out.WriteByte(o.kind)
			out.WriteString(o.text)
			out.WriteByte('\n')
			oldLine, newLine = advance(o, oldLine, newLine)
		}
		next = hi
	}
	return out.String()
}

// op is one line of the edit script: kept (' '), removed ('-') or added ('+').
type op struct {
	kind byte
	text string
}

// advance moves the old and new line numbers past o.
func advance(o op, oldLine, newLine int) (int, int) {
	if o.kind != '+' {
		oldLine++
	}
	if o.kind != '-' {
		newLine++
	}
	return oldLine, newLine
}

// nextChange returns the index of the first changed line at or after from, or -1.
func nextChange(ops []op, from int) int {
	for k := from; k < len(ops); k++ {
		if ops[k].kind != ' ' {
			return k
		}
	}
	return -1
}

// hunkRange formats one side of a hunk header the way GNU diff does: the count
// is left out when it is 1, and an empty side names the line before it.
func hunkRange(start, count int) string {
	switch count {
	case 0:
		return strconv.Itoa(start-1) + ",0"
	case 1:
		return strconv.Itoa(start)
	default:
		return strconv.Itoa(start) + "," + strconv.Itoa(count)
	}
}

// splitLines splits s into lines without their newlines.
func splitLines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}

// edits returns a shortest edit script from a to b. Where there is a choice,
// removals come before additions, as in diff's output.
func edits(a, b []string) []op {
	// common[i][j] is the length of a longest common subsequence of a[i:] and b[j:].
	common := make([][]int, len(a)+1)
	for i := range common {
		common[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				common[i][j] = common[i+1][j+1] + 1
			} else {
				common[i][j] = max(common[i+1][j], common[i][j+1])
			}
		}
	}
	ops := make([]op, 0, max(len(a), len(b)))
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch {
		case a[i] == b[j]:
			ops = append(ops, op{' ', a[i]})
			i++
			j++
		case common[i+1][j] >= common[i][j+1]:
			ops = append(ops, op{'-', a[i]})
			i++
		default:
			ops = append(ops, op{'+', b[j]})
			j++
		}
	}
	for ; i < len(a); i++ {
		ops = append(ops, op{'-', a[i]})
	}
	for ; j < len(b); j++ {
		ops = append(ops, op{'+', b[j]})
	}
	return ops
}
