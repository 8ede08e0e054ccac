package tlsconf

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/flotilla-proxy/flotilla/agent/fieldcheck"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// validator is a parsed CertificateValidationContext: how to check a peer's certificate.
type validator struct {
	roots  *x509.CertPool // trusted_ca; nil when system roots or no chain check
	system bool           // system_root_certs: verify against the host's roots
	sans   []sanMatcher   // at least one must match one SAN of the leaf
	hashes [][]byte       // SHA-256 of the leaf's DER
	spkis  [][]byte       // SHA-256 of the leaf's SubjectPublicKeyInfo
}

// verifiesChain reports whether the validator checks the peer's chain against roots.
func (v *validator) verifiesChain() bool { return v.roots != nil || v.system }

// parseValidation parses a CertificateValidationContext. upstream allows
// system_root_certs, which only makes sense for verifying servers.
func parseValidation(vc *tlsv3.CertificateValidationContext, path string, upstream bool) (*validator, error) {
	if vc.GetCrl() != nil {
		return nil, fmt.Errorf("%s.crl is not supported by flotilla-agent yet (no revocation lists)", path)
	}
	if err := fieldcheck.Only(vc, path, "trusted_ca", "system_root_certs", "verify_certificate_spki",
		"verify_certificate_hash", "match_typed_subject_alt_names", "match_subject_alt_names"); err != nil {
		return nil, err
	}
	v := &validator{}
	if vc.GetTrustedCa() != nil {
		if vc.GetSystemRootCerts() != nil {
			return nil, fmt.Errorf("%s: trusted_ca and system_root_certs are mutually exclusive", path)
		}
		data, err := dataSource(vc.GetTrustedCa(), path+".trusted_ca")
		if err != nil {
			return nil, err
		}
		cas, err := parseCertsPEM(data, path+".trusted_ca")
		if err != nil {
			return nil, err
		}
		v.roots = x509.NewCertPool()
		for _, c := range cas {
			v.roots.AddCert(c)
		}
	}
	if src := vc.GetSystemRootCerts(); src != nil {
		if !upstream {
			return nil, fmt.Errorf("%s.system_root_certs is not supported by flotilla-agent for client certificates; send trusted_ca", path)
		}
		if err := fieldcheck.Only(src, path+".system_root_certs"); err != nil {
			return nil, err
		}
		v.system = true
	}
	for i, h := range vc.GetVerifyCertificateHash() {
		b, err := hex.DecodeString(strings.ReplaceAll(h, ":", ""))
		if err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("%s.verify_certificate_hash[%d]: want the hex SHA-256 of a certificate (64 hex digits, colons allowed)", path, i)
		}
		v.hashes = append(v.hashes, b)
	}
	for i, h := range vc.GetVerifyCertificateSpki() {
		b, err := base64.StdEncoding.DecodeString(h)
		if err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("%s.verify_certificate_spki[%d]: want the base64 SHA-256 of a SubjectPublicKeyInfo", path, i)
		}
		v.spkis = append(v.spkis, b)
	}
	for i, m := range vc.GetMatchTypedSubjectAltNames() {
		p := fmt.Sprintf("%s.match_typed_subject_alt_names[%d]", path, i)
		if err := fieldcheck.Only(m, p, "san_type", "matcher"); err != nil {
			return nil, err
		}
		switch m.GetSanType() {
		case tlsv3.SubjectAltNameMatcher_DNS, tlsv3.SubjectAltNameMatcher_URI,
			tlsv3.SubjectAltNameMatcher_IP_ADDRESS, tlsv3.SubjectAltNameMatcher_EMAIL:
		default:
			return nil, fmt.Errorf("%s.san_type: %s is not supported by flotilla-agent (DNS, URI, IP_ADDRESS or EMAIL)", p, m.GetSanType())
		}
		sm, err := parseStringMatcher(m.GetMatcher(), p+".matcher")
		if err != nil {
			return nil, err
		}
		v.sans = append(v.sans, sanMatcher{typ: m.GetSanType(), m: sm})
	}
	for i, m := range vc.GetMatchSubjectAltNames() {
		sm, err := parseStringMatcher(m, fmt.Sprintf("%s.match_subject_alt_names[%d]", path, i))
		if err != nil {
			return nil, err
		}
		v.sans = append(v.sans, sanMatcher{m: sm})
	}
	if len(v.sans) > 0 && !v.verifiesChain() {
		return nil, fmt.Errorf("%s: subject alt name matchers need trusted_ca or system_root_certs (a SAN on an untrusted certificate proves nothing)", path)
	}
	return v, nil
}

// checkIdentity applies the SAN matchers and the certificate pins to the peer's leaf.
func (v *validator) checkIdentity(leaf *x509.Certificate) error {
	if len(v.hashes) > 0 || len(v.spkis) > 0 {
		pinned := false
		if len(v.hashes) > 0 {
			sum := sha256.Sum256(leaf.Raw)
			pinned = containsBytes(v.hashes, sum[:])
		}
		if !pinned && len(v.spkis) > 0 {
			sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
			pinned = containsBytes(v.spkis, sum[:])
		}
		if !pinned {
			return errors.New("certificate matches no verify_certificate_hash or verify_certificate_spki")
		}
	}
	if len(v.sans) == 0 {
		return nil
	}
	for _, m := range v.sans {
		if m.match(leaf) {
			return nil
		}
	}
	return errors.New("certificate matches no subject alt name matcher")
}

func containsBytes(list [][]byte, b []byte) bool {
	for _, x := range list {
		if bytes.Equal(x, b) {
			return true
		}
	}
	return false
}

// verifyServer checks an upstream's certificate after a handshake in which crypto/tls
// verified nothing (InsecureSkipVerify): the chain against the roots, the host name when
// checkName is set, then the identity.
func (v *validator) verifyServer(cs tls.ConnectionState, checkName bool) error {
	certs := cs.PeerCertificates
	if len(certs) == 0 {
		return errors.New("tlsconf: upstream sent no certificate")
	}
	leaf := certs[0]
	if checkName && cs.ServerName == "" {
		return errors.New("tlsconf: auto_sni_san_validation: no server name to validate the certificate against")
	}
	if v.verifiesChain() {
		opts := x509.VerifyOptions{Roots: v.roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
		if len(certs) > 1 {
			opts.Intermediates = x509.NewCertPool()
			for _, c := range certs[1:] {
				opts.Intermediates.AddCert(c)
			}
		}
		if checkName {
			opts.DNSName = cs.ServerName
		}
		if _, err := leaf.Verify(opts); err != nil {
			return fmt.Errorf("tlsconf: upstream certificate: %w", err)
		}
	} else if checkName {
		if err := leaf.VerifyHostname(cs.ServerName); err != nil {
			return fmt.Errorf("tlsconf: upstream certificate: %w", err)
		}
	}
	if err := v.checkIdentity(leaf); err != nil {
		return fmt.Errorf("tlsconf: upstream %w", err)
	}
	return nil
}

// sanMatcher matches one SAN type (0: any type, for match_subject_alt_names).
type sanMatcher struct {
	typ tlsv3.SubjectAltNameMatcher_SanType
	m   stringMatcher
}

// match reports whether any SAN of the certificate of the matcher's type matches.
func (s sanMatcher) match(c *x509.Certificate) bool {
	anyType := s.typ == tlsv3.SubjectAltNameMatcher_SAN_TYPE_UNSPECIFIED
	if anyType || s.typ == tlsv3.SubjectAltNameMatcher_DNS {
		for _, n := range c.DNSNames {
			if s.m.kind == matchExact {
				// Envoy matches an exact DNS name against wildcard SANs too,
				// case-insensitively.
				if dnsNameMatch(s.m.value, n) {
					return true
				}
			} else if s.m.match(n) {
				return true
			}
		}
	}
	if anyType || s.typ == tlsv3.SubjectAltNameMatcher_URI {
		for _, u := range c.URIs {
			if s.m.match(u.String()) {
				return true
			}
		}
	}
	if anyType || s.typ == tlsv3.SubjectAltNameMatcher_IP_ADDRESS {
		for _, ip := range c.IPAddresses {
			if s.m.match(ip.String()) {
				return true
			}
		}
	}
	if anyType || s.typ == tlsv3.SubjectAltNameMatcher_EMAIL {
		for _, e := range c.EmailAddresses {
			if s.m.match(e) {
				return true
			}
		}
	}
	return false
}

// dnsNameMatch matches a DNS name against a certificate SAN that may be a one-label
// wildcard ("*.example.com"), case-insensitively, as Envoy does.
func dnsNameMatch(name, san string) bool {
	if strings.EqualFold(name, san) {
		return true
	}
	suffix, ok := strings.CutPrefix(san, "*")
	if !ok || !strings.HasPrefix(suffix, ".") {
		return false
	}
	label, rest, ok := strings.Cut(name, ".")
	return ok && label != "" && strings.EqualFold("."+rest, suffix)
}

type matchKind int

const (
	matchExact matchKind = iota
	matchPrefix
	matchSuffix
	matchContains
	matchRegex
)

// stringMatcher is a parsed envoy.type.matcher.v3.StringMatcher.
type stringMatcher struct {
	kind       matchKind
	value      string
	ignoreCase bool
	re         *regexp.Regexp
}

func parseStringMatcher(m *matcherv3.StringMatcher, path string) (stringMatcher, error) {
	if m == nil {
		return stringMatcher{}, fmt.Errorf("%s is required", path)
	}
	if err := fieldcheck.Only(m, path, "exact", "prefix", "suffix", "safe_regex", "contains", "ignore_case"); err != nil {
		return stringMatcher{}, err
	}
	sm := stringMatcher{ignoreCase: m.GetIgnoreCase()}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		sm.kind, sm.value = matchExact, p.Exact
	case *matcherv3.StringMatcher_Prefix:
		sm.kind, sm.value = matchPrefix, p.Prefix
	case *matcherv3.StringMatcher_Suffix:
		sm.kind, sm.value = matchSuffix, p.Suffix
	case *matcherv3.StringMatcher_Contains:
		sm.kind, sm.value = matchContains, p.Contains
	case *matcherv3.StringMatcher_SafeRegex:
		rp := path + ".safe_regex"
		if err := fieldcheck.Only(p.SafeRegex, rp, "regex"); err != nil {
			return stringMatcher{}, err
		}
		if sm.ignoreCase {
			return stringMatcher{}, fmt.Errorf("%s.ignore_case has no effect on safe_regex; use (?i) in the regex", path)
		}
		// RE2 syntax, as in Envoy; the whole string must match.
		re, err := regexp.Compile(`^(?:` + p.SafeRegex.GetRegex() + `)$`)
		if err != nil {
			return stringMatcher{}, fmt.Errorf("%s.regex: %w", rp, err)
		}
		sm.kind, sm.re = matchRegex, re
	default:
		return stringMatcher{}, fmt.Errorf("%s: one of exact, prefix, suffix, contains or safe_regex is required", path)
	}
	return sm, nil
}

func (m stringMatcher) match(s string) bool {
	v := m.value
	if m.ignoreCase {
		s, v = strings.ToLower(s), strings.ToLower(v)
	}
	switch m.kind {
	case matchExact:
		return s == v
	case matchPrefix:
		return strings.HasPrefix(s, v)
	case matchSuffix:
		return strings.HasSuffix(s, v)
	case matchContains:
		return strings.Contains(s, v)
	default:
		return m.re.MatchString(s)
	}
}
