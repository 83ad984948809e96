#!/bin/bash
# rvlab: firewall-cmd on an emulated openEuler board. Keeps firewalld's permanent configuration in
# /etc/firewalld/rvlab-permanent and the runtime one in /run/rvlab/firewalld/runtime, as lines
# "<zone> <port|source|service> <value>". Filters nothing (the boards share the host's network).
set -u
PERM=/etc/firewalld/rvlab-permanent
RUN=/run/rvlab/firewalld/runtime
[ -d /etc/firewalld ] && [ -d /run/rvlab/firewalld ] || mkdir -p /etc/firewalld /run/rvlab/firewalld
[ -f "$PERM" ] || : >"$PERM"
# The daemon is there (firewalld.sh: its pid file, its name): builtins only, every call asks.
running() {
    local p='' a=''
    { read -r p </run/rvlab/firewalld/pid; } 2>/dev/null || return 1
    { IFS= read -r -d '' a <"/proc/$p/cmdline"; } 2>/dev/null
    [ "$a" = firewalld ]
}
# Is the line "$1" in file "$2" (a read loop: no grep process).
has_line() {
    local l
    while IFS= read -r l; do [ "$l" = "$1" ] && return 0; done <"$2"
    return 1
}
permanent=0 zone=public actions=()
for a in "$@"; do
    case $a in
    --permanent) permanent=1 ;;
    --zone=*) zone=${a#--zone=} ;;
    *) actions+=("$a") ;;
    esac
done
if [ "${actions[0]:-}" = --state ]; then
    if running; then echo running; exit 0; else echo "not running"; exit 252; fi
fi
if ! running; then
    echo "FirewallD is not running"
    exit 252
fi
[ -f "$RUN" ] || cp "$PERM" "$RUN"
file=$RUN
((permanent)) && file=$PERM
rc=0 changed=0 queried=0
for a in "${actions[@]}"; do
    case $a in
    --reload | --complete-reload) cp "$PERM" "$RUN"; changed=1 ;;
    --add-*=* | --remove-*=* | --query-*=*)
        op=${a#--}
        op=${op%%-*}
        kind=${a#--*-}
        kind=${kind%%=*}
        val=${a#*=}
        line="$zone $kind $val"
        case $op in
        add) has_line "$line" "$file" || echo "$line" >>"$file"; changed=1 ;;
        remove) grep -vxF "$line" "$file" >"$file.tmp"; mv -f "$file.tmp" "$file"; changed=1 ;;
        query) queried=1; has_line "$line" "$file" || rc=1 ;;
        esac
        ;;
    --list-ports | --list-sources | --list-services)
        kind=${a#--list-}
        kind=${kind%s}
        # (a read loop, not awk: every facts command lists these)
        out='' sep=''
        while read -r z k v; do
            if [ "$z" = "$zone" ] && [ "$k" = "$kind" ]; then out+=$sep$v; sep=' '; fi
        done <"$file"
        printf '%s\n' "$out"
        ;;
    --list-all)
        echo "$zone"
        for k in service port source; do
            printf '  %ss: %s\n' "$k" "$(awk -v z="$zone" -v k="$k" '$1==z && $2==k {printf "%s%s", sep, $3; sep=" "}' "$file")"
        done
        ;;
    --get-default-zone) echo public ;;
    *) echo "usage: see firewall-cmd(1) (rvlab emulation: $a not supported)" >&2; exit 2 ;;
    esac
done
if ((queried)); then
    if ((rc == 0)); then echo yes; else echo no; fi
    exit $rc
fi
((changed)) && echo success
exit 0
