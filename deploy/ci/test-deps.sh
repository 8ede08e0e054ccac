#!/usr/bin/env bash
# Installs the real peers the end-to-end tests run beside the agent (nginx as a TLS
# backend, openssl s_client as a client, sshd + ssh-keyscan as a server-first protocol,
# dnsmasq as a DNS server, curl as an HTTP client) from Debian's packages, when they are missing.
# As root with apt-get it installs them; otherwise it says what is missing, and those
# tests skip on a developer's machine (in CI, CI=true makes a missing peer a failure).
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
have nginx   || need+=(nginx-light)
have openssl || need+=(openssl)
have sshd    || need+=(openssh-server)      # a real server-first protocol (SSH banner)
have ssh-keyscan || need+=(openssh-client)
have dnsmasq || need+=(dnsmasq-base)        # a real DNS server behind the UDP proxy
have curl    || need+=(curl)                # HTTP/1.1, h2 over TLS and h2c client of the HTTP listeners

[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "test-deps: missing ${need[*]}; install them (as root: apt-get install ${need[*]}) or the tests that use them skip" >&2
  exit 0
fi
echo "test-deps: installing ${need[*]} from Debian"
# Do not let package scripts start system services (nginx on :80): tests run their own.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && created_policy=1
fi
trap '[ $created_policy -eq 1 ] && rm -f "$policy"' EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
