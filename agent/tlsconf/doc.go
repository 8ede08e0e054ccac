// Package tlsconf turns Envoy's TLS transport-socket resources into crypto/tls
// configurations for the agent: a DownstreamTlsContext (a listener filter chain's
// envoy.transport_sockets.tls) becomes a Server, an UpstreamTlsContext (a cluster's) a
// Client, and SDS Secrets (certificates with their keys, and validation contexts with
// trusted CAs and subject-alt-name matchers) fill in what the contexts name. It depends on
// nothing in the agent: protos and a Secrets lookup in, *tls.Config out.
//
// The agent supports a documented subset of the Envoy API. Every field outside it is
// rejected with an error that names the field by its path relative to the context or the
// Secret (for example "common_tls_context.tls_params.cipher_suites[1]: ..."), so a caller
// only prefixes its own path (the listener, the filter chain) and sends the result as a
// NACK. Errors never carry key material, and the package does not log.
//
// # Life of a TLS config
//
// The xDS client receives Secrets and checks each one with ValidateSecret. When the runtime
// builds a config graph it asks SecretNames which secrets a context needs (for the SDS
// subscription), then builds a Server per TLS filter chain with NewServer and a Client per
// TLS cluster with NewClient. A secret that has not arrived yet yields an error wrapping
// ErrMissingSecret: Envoy would keep such a listener warming, the runtime may wait for SDS
// rather than NACK. Servers and Clients are immutable; a rotated certificate means a new
// graph with new Servers, and connections keep the one they started with.
//
// # Termination and per-SNI certificates
//
// Envoy selects a filter chain by SNI, and each chain carries its own DownstreamTlsContext,
// so per-SNI certificates mostly fall out of filter-chain matching. One context may also
// carry several certificates: the Server then picks, per ClientHello, the certificates
// whose DNS SANs (the Subject CN when a certificate has none) match the SNI exactly, then
// those that match it by a "*." wildcard of one label, then all of them; within that group
// the first certificate the client supports (key type, signature schemes), else the
// group's first. require_client_certificate with a validation context is mTLS.
//
// # Origination
//
// A Client verifies an upstream the way Envoy does: the chain against trusted_ca (or the
// system roots with system_root_certs), then the identity against
// match_typed_subject_alt_names, verify_certificate_hash and verify_certificate_spki. Like
// Envoy, a trusted_ca without SAN matchers checks the chain only, not the host name; set
// SAN matchers or auto_sni_san_validation (which checks the certificate against the SNI
// sent) to pin the identity. A context without any validation context verifies nothing,
// as in Envoy; the Flotilla compiler should always emit one.
//
// Envoy passes the client's SNI upstream with auto_sni, which lives in the cluster's HTTP
// protocol options and works on HTTP Host headers only. Flotilla's TCP equivalent: when
// the UpstreamTlsContext has no sni and the listener peeked a ClientHello (tls_inspector),
// the agent passes the downstream SNI to Client.Config, which sends it upstream. A non-empty
// sni in the context is fixed and wins.
//
// # Differences from Envoy worth knowing
//
//   - Go always enables all three TLS 1.3 cipher suites, so cipher_suites may name TLS 1.3
//     suites only by listing all three; the TLS 1.2 suites are mapped from their
//     OpenSSL/BoringSSL names ("ECDHE-ECDSA-AES128-GCM-SHA256", "[A|B]" groups allowed).
//     Go chooses the order itself.
//   - A client offering ALPN protocols none of which the server lists gets a handshake
//     without ALPN, as with Envoy (Go alone would refuse it).
//   - Go checks the extended key usage of client certificates (clientAuth) during mTLS.
//   - disable_stateful_session_resumption and full_scan_certs_on_sni_mismatch are accepted
//     and change nothing: Go servers keep no session-ID cache, and the certificate choice
//     above always scans every certificate.
//   - Upstream session resumption keeps up to max_session_keys sessions in one LRU cache
//     per cluster (64 when unset; 0 disables it).
package tlsconf
