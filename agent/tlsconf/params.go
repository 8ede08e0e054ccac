package tlsconf

import (
	"crypto/tls"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/flotilla-proxy/flotilla/agent/fieldcheck"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// params is a parsed TlsParameters, ready to copy into a tls.Config.
type params struct {
	minVersion, maxVersion uint16
	cipherSuites           []uint16
	curves                 []tls.CurveID
}

// tls12Suites maps the OpenSSL/BoringSSL names Envoy uses to Go's TLS 1.0-1.2 suites.
// Go's insecure suites (3DES, RC4, CBC-SHA256) are left out on purpose.
var tls12Suites = map[string]uint16{
	"ECDHE-ECDSA-AES128-GCM-SHA256": tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	"ECDHE-RSA-AES128-GCM-SHA256":   tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	"ECDHE-ECDSA-AES256-GCM-SHA384": tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	"ECDHE-RSA-AES256-GCM-SHA384":   tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	"ECDHE-ECDSA-CHACHA20-POLY1305": tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	"ECDHE-RSA-CHACHA20-POLY1305":   tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	"ECDHE-ECDSA-AES128-SHA":        tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
	"ECDHE-RSA-AES128-SHA":          tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
	"ECDHE-ECDSA-AES256-SHA":        tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
	"ECDHE-RSA-AES256-SHA":          tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
	"AES128-GCM-SHA256":             tls.TLS_RSA_WITH_AES_128_GCM_SHA256,
	"AES256-GCM-SHA384":             tls.TLS_RSA_WITH_AES_256_GCM_SHA384,
	"AES128-SHA":                    tls.TLS_RSA_WITH_AES_128_CBC_SHA,
	"AES256-SHA":                    tls.TLS_RSA_WITH_AES_256_CBC_SHA,
}

// tls13Suites are the TLS 1.3 suites, which Go always enables together.
var tls13Suites = []string{"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}

// curves maps Envoy's ecdh_curves names (OpenSSL's, with their aliases) to Go's groups.
var curves = map[string]tls.CurveID{
	"X25519":             tls.X25519,
	"P-256":              tls.CurveP256,
	"prime256v1":         tls.CurveP256,
	"P-384":              tls.CurveP384,
	"secp384r1":          tls.CurveP384,
	"P-521":              tls.CurveP521,
	"secp521r1":          tls.CurveP521,
	"X25519MLKEM768":     tls.X25519MLKEM768,
	"SecP256r1MLKEM768":  tls.SecP256r1MLKEM768,
	"SecP384r1MLKEM1024": tls.SecP384r1MLKEM1024,
}

// versions maps Envoy's protocol enum to Go's; TLS_AUTO is absent (the side's default).
var versions = map[tlsv3.TlsParameters_TlsProtocol]uint16{
	tlsv3.TlsParameters_TLSv1_0: tls.VersionTLS10,
	tlsv3.TlsParameters_TLSv1_1: tls.VersionTLS11,
	tlsv3.TlsParameters_TLSv1_2: tls.VersionTLS12,
	tlsv3.TlsParameters_TLSv1_3: tls.VersionTLS13,
}

// parseParams parses TlsParameters. defaultMax is Envoy's default maximum version for the
// side: TLS 1.3 for servers, TLS 1.2 for clients. The default minimum is TLS 1.2.
func parseParams(tp *tlsv3.TlsParameters, path string, defaultMax uint16) (params, error) {
	p := params{minVersion: tls.VersionTLS12, maxVersion: defaultMax}
	if tp == nil {
		return p, nil
	}
	if err := fieldcheck.Only(tp, path, "tls_minimum_protocol_version", "tls_maximum_protocol_version", "cipher_suites", "ecdh_curves"); err != nil {
		return p, err
	}
	var ok bool
	if v := tp.GetTlsMinimumProtocolVersion(); v != tlsv3.TlsParameters_TLS_AUTO {
		if p.minVersion, ok = versions[v]; !ok {
			return p, fmt.Errorf("%s.tls_minimum_protocol_version: unknown version %d", path, v)
		}
	}
	if v := tp.GetTlsMaximumProtocolVersion(); v != tlsv3.TlsParameters_TLS_AUTO {
		if p.maxVersion, ok = versions[v]; !ok {
			return p, fmt.Errorf("%s.tls_maximum_protocol_version: unknown version %d", path, v)
		}
	}
	if p.minVersion > p.maxVersion {
		return p, fmt.Errorf("%s: tls_minimum_protocol_version %s is above tls_maximum_protocol_version %s",
			path, tls.VersionName(p.minVersion), tls.VersionName(p.maxVersion))
	}
	tls13 := 0
	for i, entry := range tp.GetCipherSuites() {
		// BoringSSL's "[A|B]" groups suites of equal preference; Go orders suites itself.
		for _, name := range strings.Split(strings.Trim(entry, "[]"), "|") {
			if id, ok := tls12Suites[name]; ok {
				p.cipherSuites = append(p.cipherSuites, id)
				continue
			}
			if slices.Contains(tls13Suites, name) {
				tls13++
				continue
			}
			return p, fmt.Errorf("%s.cipher_suites[%d]: %q is not a cipher suite flotilla-agent supports (TLS 1.2: %s)",
				path, i, name, strings.Join(slices.Sorted(maps.Keys(tls12Suites)), ", "))
		}
	}
	if tls13 > 0 && tls13 != len(tls13Suites) {
		return p, fmt.Errorf("%s.cipher_suites: Go always enables all three TLS 1.3 suites (%s); list all of them or none",
			path, strings.Join(tls13Suites, ", "))
	}
	if tls13 > 0 && len(p.cipherSuites) == 0 && p.minVersion < tls.VersionTLS13 {
		return p, fmt.Errorf("%s.cipher_suites lists only TLS 1.3 suites, but tls_minimum_protocol_version allows older versions, for which Go would use its default suites; set tls_minimum_protocol_version to TLSv1_3", path)
	}
	for i, name := range tp.GetEcdhCurves() {
		id, ok := curves[name]
		if !ok {
			return p, fmt.Errorf("%s.ecdh_curves[%d]: %q is not a group flotilla-agent supports (%s)",
				path, i, name, strings.Join(slices.Sorted(maps.Keys(curves)), ", "))
		}
		p.curves = append(p.curves, id)
	}
	return p, nil
}

// apply copies the parameters into a tls.Config.
func (p params) apply(c *tls.Config) {
	c.MinVersion, c.MaxVersion = p.minVersion, p.maxVersion
	c.CipherSuites = p.cipherSuites
	c.CurvePreferences = p.curves
}
