package httpproxy

import (
	"strings"

	"github.com/flotilla-proxy/flotilla/agent/httproute"
)

// pathVerdict is what normalizePath decides for a request.
type pathVerdict int

const (
	pathForward  pathVerdict = iota // route and forward the (normalised) path
	pathReject                      // answer 400 (escaped slashes, action Reject)
	pathRedirect                    // answer 307 to the normalised path (UnescapeAndRedirect)
)

// normalizePath applies an http_connection_manager's path normalisation to an escaped
// request target, path and optional "?query" (e.g. "/a/%2e%2e/b?x=%2F"), in Envoy's order:
//
//  1. path_with_escaped_slashes_action, when the path has %2F or %5C (either case):
//     Reject, or decode them to "/" and "\" (forward, or redirect to the result);
//  2. normalize_path: decode the percent-escapes of unreserved characters
//     (ALPHA DIGIT - . _ ~), upper-case the hex digits of the others, then remove "." and
//     ".." segments (RFC 3986 §5.2.4; a ".." above the root is dropped);
//  3. merge_slashes: collapse runs of "/" into one.
//
// The query is kept byte for byte. The result is still an escaped target, to route on and
// to forward. A target whose path does not start with "/" (OPTIONS *) is left alone.
func normalizePath(target string, m *httproute.Manager) (string, pathVerdict) {
	p, query := target, ""
	if i := strings.IndexByte(target, '?'); i >= 0 {
		p, query = target[:i], target[i:]
	}
	if p == "" || p[0] != '/' {
		return target, pathForward
	}
	verdict := pathForward
	if m.EscapedSlashes != httproute.EscapedSlashesKeep && hasEscapedSlash(p) {
		switch m.EscapedSlashes {
		case httproute.EscapedSlashesReject:
			return target, pathReject
		case httproute.EscapedSlashesUnescapeAndRedirect:
			verdict = pathRedirect
		}
		p = unescapeSlashes(p)
	}
	if m.NormalizePath {
		p = removeDotSegments(decodeUnreserved(p))
	}
	if m.MergeSlashes {
		p = mergeSlashes(p)
	}
	if len(p)+len(query) == len(target) && p == target[:len(p)] {
		return target, verdict // unchanged: no allocation
	}
	return p + query, verdict
}

// hasEscapedSlash reports whether p has %2F or %5C in either case.
func hasEscapedSlash(p string) bool {
	for i := 0; i+2 < len(p); i++ {
		if p[i] == '%' && isEscapedSlash(p[i+1], p[i+2]) {
			return true
		}
	}
	return false
}

func isEscapedSlash(h, l byte) bool {
	return (h == '2' && (l == 'f' || l == 'F')) || (h == '5' && (l == 'c' || l == 'C'))
}

// unescapeSlashes decodes %2F to "/" and %5C to "\" (either case).
func unescapeSlashes(p string) string {
	var b strings.Builder
	b.Grow(len(p))
	for i := 0; i < len(p); i++ {
		if p[i] == '%' && i+2 < len(p) && isEscapedSlash(p[i+1], p[i+2]) {
			if p[i+1] == '2' {
				b.WriteByte('/')
			} else {
				b.WriteByte('\\')
			}
			i += 2
			continue
		}
		b.WriteByte(p[i])
	}
	return b.String()
}

// decodeUnreserved decodes the percent-escapes of unreserved characters and upper-cases
// the hex digits of the other escapes (RFC 3986 §6.2.2.1–2); a "%" not followed by two
// hex digits (which net/http does not let through) becomes "%25", so that decoding never
// makes a new escape of it.
func decodeUnreserved(p string) string {
	if strings.IndexByte(p, '%') < 0 {
		return p
	}
	var b strings.Builder
	b.Grow(len(p))
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c != '%' {
			b.WriteByte(c)
			continue
		}
		if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
			b.WriteString("%25")
			continue
		}
		v := unhex(p[i+1])<<4 | unhex(p[i+2])
		if isUnreserved(v) {
			b.WriteByte(v)
		} else {
			const upper = "0123456789ABCDEF"
			b.WriteByte('%')
			b.WriteByte(upper[v>>4])
			b.WriteByte(upper[v&15])
		}
		i += 2
	}
	return b.String()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// removeDotSegments removes the "." and ".." segments of an absolute path (RFC 3986
// §5.2.4): a ".." removes the segment before it, or nothing at the root; a path ending in
// a dot segment keeps its final "/".
func removeDotSegments(p string) string {
	if !strings.Contains(p, "/.") {
		return p
	}
	segs := strings.Split(p[1:], "/")
	out := segs[:0]
	for i, s := range segs {
		last := i == len(segs)-1
		switch s {
		case ".":
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		default:
			out = append(out, s)
			continue
		}
		if last {
			out = append(out, "")
		}
	}
	return "/" + strings.Join(out, "/")
}

// mergeSlashes collapses runs of "/" into one.
func mergeSlashes(p string) string {
	if !strings.Contains(p, "//") {
		return p
	}
	var b strings.Builder
	b.Grow(len(p))
	for i := 0; i < len(p); i++ {
		if p[i] == '/' && i > 0 && p[i-1] == '/' {
			continue
		}
		b.WriteByte(p[i])
	}
	return b.String()
}
