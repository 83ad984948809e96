#!/bin/bash
# rvlab: update-ca-trust on an emulated openEuler board. Builds the extracted bundles from the
# system bundle plus /etc/pki/ca-trust/source/anchors/* (what `update-ca-trust extract` does).
set -eu
case ${1:-extract} in
extract | '') ;;
check) echo "rvlab: update-ca-trust check: ok"; exit 0 ;;
*) echo "update-ca-trust: unknown command '$1'" >&2; exit 1 ;;
esac
base=/etc/ssl/certs/ca-certificates.crt
mkdir -p /etc/pki/ca-trust/extracted/pem /etc/pki/tls/certs
{
    [ -r "$base" ] && cat "$base"
    for f in /etc/pki/ca-trust/source/anchors/*; do
        [ -f "$f" ] && { cat "$f"; echo; }
    done
} >/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem.tmp
mv -f /etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem.tmp /etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem
ln -sf /etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem /etc/pki/tls/certs/ca-bundle.crt
