package tlsconf

import (
	"bytes"
	"testing"
)

// FuzzValidateSecret feeds arbitrary certificate and key bytes, as a control plane could
// send them. A secret ValidateSecret accepts must build a Server, and no error may quote
// the key.
func FuzzValidateSecret(f *testing.F) {
	ca := newCA(f, "ca")
	certPEM, keyPEM := ca.issue(f, leafOpts{dns: []string{"a.example"}})
	rsaCert, rsaKey := ca.issue(f, leafOpts{dns: []string{"b.example"}, rsa: true})
	f.Add(certPEM, keyPEM)
	f.Add(rsaCert, rsaKey)
	f.Add(certPEM, rsaKey)
	f.Add(append(certPEM, ca.pem...), keyPEM)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\n"), []byte("-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, chain, key []byte) {
		sec := certSecret("web", chain, key)
		err := ValidateSecret(sec)
		if err != nil {
			if len(key) >= 16 && bytes.Contains([]byte(err.Error()), key) {
				t.Fatalf("error quotes the key: %v", err)
			}
			return
		}
		if _, err := NewServer(sdsServer("web"), SecretMap{"web": sec}); err != nil {
			t.Fatalf("ValidateSecret accepted a secret NewServer refuses: %v", err)
		}
	})
}
