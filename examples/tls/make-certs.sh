#!/usr/bin/env bash
# Makes a private certificate authority and the certificates a small repr farm
# needs, with the openssl command line:
#   ca.pem / ca.key           the authority (keep ca.key offline in real use)
#   server.pem / server.key   the scheduler's certificate, for the names given
#   client-NAME.pem / .key    one client certificate per principal (mTLS)
#
# Usage: examples/tls/make-certs.sh OUTDIR [SERVER_NAME ...] -- [CLIENT ...]
#   examples/tls/make-certs.sh certs repr.example.com 10.0.0.5 -- ci alice worker-1
# Server names that look like IP addresses become IP SANs, the rest DNS SANs;
# 127.0.0.1 and localhost are always included. Keys are RSA 2048 in PKCS#8,
# which Bazel's --tls_client_key requires.
set -euo pipefail
out=${1:?usage: make-certs.sh OUTDIR [SERVER_NAME ...] -- [CLIENT ...]}
shift
servers=() clients=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do servers+=("$1"); shift; done
[ $# -gt 0 ] && shift
clients=("$@")
days=${DAYS:-365}
mkdir -p "$out"
cd "$out"
umask 077

key() { openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null; }

if [ ! -f ca.key ]; then
  key ca.key
  openssl req -x509 -new -key ca.key -sha256 -days "$days" -subj "/CN=repr farm CA" -out ca.pem
fi

san="IP:127.0.0.1,DNS:localhost"
for s in ${servers[@]+"${servers[@]}"}; do
  if [[ "$s" =~ ^[0-9.]+$ || "$s" == *:* ]]; then san="$san,IP:$s"; else san="$san,DNS:$s"; fi
done

sign() { # NAME SUBJECT EXTENSIONS
  key "$1.key"
  openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
  printf '%b' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days "$days" -sha256 -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}

sign server "/CN=${servers[0]:-localhost}" "subjectAltName=$san\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n"
for c in ${clients[@]+"${clients[@]}"}; do
  sign "client-$c" "/CN=$c" "subjectAltName=URI:repr://$c\nextendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n"
done
chmod 644 ./*.pem
echo "made in $out:" ./*.pem
