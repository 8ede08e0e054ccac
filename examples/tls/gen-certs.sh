#!/usr/bin/env bash
# Generates the DEMO-ONLY certificates and keys in certs/ that tls.yaml names:
# a demo CA, server certificates for db.example (termination) and db.internal
# (the upstream, for origination), and client certificates for a client
# (mTLS to the listener) and for the proxy (mTLS to the upstream).
# Their private keys are public in this repository: never use them for
# anything but trying Flotilla out. Valid for 100 years, so the compiler's
# golden test of this example stays stable.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p certs
cd certs
days=36500
ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null; }

ec ca
openssl req -x509 -new -key ca.key -days "$days" -subj "/CN=Flotilla demo CA (DEMO ONLY)" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
  -out ca.pem

issue() { # name subject-cn extendedKeyUsage [subjectAltName]
  ec "$1"
  local ext="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=$3"
  [ -n "${4:-}" ] && ext+=$'\n'"subjectAltName=$4"
  openssl req -new -key "$1.key" -subj "/CN=$2" -out "$1.csr"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days "$days" \
    -extfile <(echo "$ext") -out "$1.pem" 2>/dev/null
  rm -f "$1.csr"
}
issue db db.example serverAuth "DNS:db.example,DNS:*.db.example"
issue upstream db.internal serverAuth "DNS:db.internal"
issue client demo-client clientAuth
issue proxy flotilla-proxy clientAuth
rm -f ca.srl
echo "wrote demo-only certificates to $(pwd)"
