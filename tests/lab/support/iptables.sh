#!/bin/bash
# rvlab: iptables-save / iptables-restore (and the ip6tables ones) inside an emulated board.
# Boards share the host's network namespace, so the board's rules are a text file in
# iptables-save format, /run/rvlab/net/iptables.rules (ip6tables.rules for IPv6), which k3s-sim
# fills with its KUBE-/FLANNEL- chains. `-save` prints it (empty tables when none), `-restore`
# replaces it with stdin. `iptables -S` prints its rules; anything else is refused (exit 2).
set -u
D=/run/rvlab/net
mkdir -p "$D"
prog=${0##*/}
case $prog in
ip6tables*) F=$D/ip6tables.rules ;;
*) F=$D/iptables.rules ;;
esac
empty() { printf '*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n'; }
case $prog in
*-save)
    if [ -s "$F" ]; then cat "$F"; else empty; fi
    ;;
*-restore)
    t=$(mktemp "$D/.restore.XXXXXX")
    cat >"$t" && mv "$t" "$F"
    ;;
*)
    if [ "${1:-}" = -S ]; then
        { if [ -s "$F" ]; then cat "$F"; else empty; fi; } | sed -n 's/^:\([A-Z][A-Z]*\) \([A-Z][A-Z]*\) .*/-P \1 \2/p; s/^:\([^ ]*\) - .*/-N \1/p; /^-A /p'
    else
        echo "rvlab: \`$prog $*\` is not emulated on boards (boards share the host's network namespace): -S, $prog-save, $prog-restore" >&2
        exit 2
    fi
    ;;
esac
