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
# The default zone, as firewalld takes it from its configuration (DefaultZone=, else public);
# `--set-default-zone` writes it there.
CONF=/etc/firewalld/firewalld.conf
default_zone=public
{ while IFS== read -r k v; do [ "$k" = DefaultZone ] && [ -n "$v" ] && default_zone=$v; done <"$CONF"; } 2>/dev/null
permanent=0 zone=$default_zone actions=()
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
    --get-default-zone) echo "$default_zone" ;;
    --list-all-zones)
        # Every zone, as firewalld 2.1 prints them (`print_zone_info`): the name at column 0,
        # "(default, active)" marks, then indented "key: values" lines; a blank line between.
        # One pass over the configuration: each zone's values by "ZONE KIND", any zone it names.
        zones=(block dmz drop external home internal nm-shared public trusted work)
        declare -A vals=()
        while read -r z k v; do
            case " ${zones[*]} " in *" $z "*) ;; *) zones+=("$z") ;; esac
            vals["$z $k"]+="${vals["$z $k"]:+ }$v"
        done <"$file"
        first=1
        for z in "${zones[@]}"; do
            ((first)) || echo
            first=0
            mark=''
            [ "$z" = "$default_zone" ] && mark=' (default, active)'
            [ "$z" != "$default_zone" ] && [ -n "${vals["$z source"]:-}" ] && mark=' (active)'
            target=default
            [ "$z" = trusted ] && target=ACCEPT
            printf '%s%s\n  target: %s\n  ingress-priority: 0\n  egress-priority: 0\n  icmp-block-inversion: no\n  interfaces: \n' "$z" "$mark" "$target"
            printf '  sources: %s\n  services: %s\n  ports: %s\n' "${vals["$z source"]:-}" "${vals["$z service"]:-}" "${vals["$z port"]:-}"
            printf '  protocols: \n  forward: yes\n  masquerade: no\n  forward-ports: \n  source-ports: \n  icmp-blocks: \n  rich rules: \n'
        done
        ;;
    --set-default-zone=*)
        default_zone=${a#*=}
        if [ -f "$CONF" ] && grep -q '^DefaultZone=' "$CONF"; then
            sed -i "s|^DefaultZone=.*|DefaultZone=$default_zone|" "$CONF"
        else
            echo "DefaultZone=$default_zone" >>"$CONF"
        fi
        changed=1
        ;;
    *) echo "usage: see firewall-cmd(1) (rvlab emulation: $a not supported)" >&2; exit 2 ;;
    esac
done
if ((queried)); then
    if ((rc == 0)); then echo yes; else echo no; fi
    exit $rc
fi
((changed)) && echo success
exit 0
