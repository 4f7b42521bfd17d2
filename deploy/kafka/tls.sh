#!/usr/bin/env bash
# Makes a private certificate authority and a broker certificate for the
# test broker's TLS listeners, with openssl:
#
#   bash deploy/kafka/tls.sh DIR [HOST ...]
#
# DIR gets ca.pem (the CA certificate clients trust: kafka.security.
# ssl_ca_location), ca.key (the CA's key, mode 0600), broker.pem (the
# broker's key and certificate chain in one PEM file, mode 0600, what
# start.sh's KAFKA_TLS_DIR expects) and broker.crt. The broker certificate
# names every HOST (default: 127.0.0.1 and localhost) as a subject
# alternative name, so clients verify the broker's name as well as its CA.
# Existing files are kept: run it again with a new DIR for new ones.
set -euo pipefail

die() { echo "$(basename "$0"): $*" >&2; exit 1; }
[ $# -ge 1 ] || die "usage: $0 DIR [HOST ...]"
dir="$1"; shift
hosts=("$@")
[ ${#hosts[@]} -gt 0 ] || hosts=(127.0.0.1 localhost)
command -v openssl >/dev/null || die "openssl is not installed (apt-get install openssl)"
mkdir -p "$dir"
umask 077

if [ ! -s "$dir/ca.pem" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 825 -sha256 \
        -subj "/CN=hermes-rs test CA" \
        -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null \
        || die "cannot create the CA in $dir"
fi

if [ ! -s "$dir/broker.pem" ]; then
    san=""
    for h in "${hosts[@]}"; do
        if [[ "$h" =~ ^[0-9.]+$ || "$h" == *:* ]]; then
            san="${san:+$san,}IP:$h"
        else
            san="${san:+$san,}DNS:$h"
        fi
    done
    openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=${hosts[0]}" \
        -keyout "$dir/broker.key" -out "$dir/broker.csr" 2>/dev/null \
        || die "cannot create the broker key in $dir"
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$san" >"$dir/broker.ext"
    openssl x509 -req -in "$dir/broker.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
        -CAcreateserial -days 825 -sha256 -extfile "$dir/broker.ext" \
        -out "$dir/broker.crt" 2>/dev/null \
        || die "cannot sign the broker certificate in $dir"
    # Kafka's PEM key store: an unencrypted PKCS#8 key, then the chain.
    openssl pkcs8 -topk8 -nocrypt -in "$dir/broker.key" -out "$dir/broker.p8" \
        || die "cannot convert the broker key"
    cat "$dir/broker.p8" "$dir/broker.crt" "$dir/ca.pem" >"$dir/broker.pem"
    rm -f "$dir/broker.csr" "$dir/broker.ext" "$dir/broker.key" "$dir/broker.p8"
fi
chmod 644 "$dir/ca.pem" "$dir/broker.crt"
echo "TLS files in $dir: ca.pem (trust this), broker.pem (broker key + chain) for ${hosts[*]}"
