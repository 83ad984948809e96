#!/bin/bash
# rvlab: sysctl inside an emulated board. Boards share the host's network namespace, so writes
# must not reach the host kernel: they are recorded per board in /run/rvlab/sysctl/<key> (and
# logged to /run/rvlab/sysctl.log); reads show the recorded value, else the kernel's.
set -u
shopt -s nullglob
REC=/run/rvlab/sysctl
mkdir -p "$REC"
quiet=0 names=0 values_only=0 rc=0

key_path() { local k=${1//\//.}; printf '/proc/sys/%s' "${k//.//}"; }

# A key exists when the kernel has it, or when its module was "loaded" by the board's modprobe.
key_exists() {
    [ -e "$(key_path "$1")" ] && return 0
    [[ $1 == net.bridge.* ]] && grep -qw br_netfilter /run/rvlab/modprobe.log 2>/dev/null
}

show() { # key
    local k=${1//\//.} v
    if [ -f "$REC/$k" ]; then
        v=$(cat "$REC/$k")
    elif [ -r "$(key_path "$k")" ]; then
        v=$(cat "$(key_path "$k")" 2>/dev/null)
    elif key_exists "$k"; then
        v=0
    else
        echo "sysctl: cannot stat $(key_path "$k"): No such file or directory" >&2
        rc=255
        return
    fi
    if ((values_only)); then echo "$v"; elif ((names)); then echo "$k"; else echo "$k = $v"; fi
}

set_kv() { # key=value
    local k=${1%%=*} v=${1#*=}
    k=$(echo "$k" | tr -d '[:space:]')
    k=${k//\//.}
    v="${v#"${v%%[![:space:]]*}"}"
    v="${v%"${v##*[![:space:]]}"}"
    key_exists "$k" || {
        echo "sysctl: cannot stat $(key_path "$k"): No such file or directory" >&2
        rc=255
        return
    }
    printf '%s\n' "$v" >"$REC/$k"
    echo "$k = $v" >>/run/rvlab/sysctl.log
    ((quiet)) || echo "$k = $v"
}

load_file() {
    local f=$1 line
    [ -r "$f" ] || { echo "sysctl: cannot open \"$f\": No such file or directory" >&2; rc=255; return; }
    while IFS= read -r line || [ -n "$line" ]; do
        line="${line#"${line%%[![:space:]]*}"}"
        case $line in '' | \#* | \;*) continue ;; esac
        line=${line#-}
        [[ $line == *=* ]] && set_kv "$line"
    done <"$f"
}

system() {
    declare -A seen=()
    local d f b
    for d in /etc/sysctl.d /run/sysctl.d /usr/local/lib/sysctl.d /usr/lib/sysctl.d /lib/sysctl.d; do
        for f in "$d"/*.conf; do
            b=${f##*/}
            [ -n "${seen[$b]+x}" ] && continue
            seen[$b]=$f
        done
    done
    for b in $(printf '%s\n' "${!seen[@]}" | sort); do
        ((quiet)) || echo "* Applying ${seen[$b]} ..."
        load_file "${seen[$b]}"
    done
    if [ -f /etc/sysctl.conf ]; then
        ((quiet)) || echo "* Applying /etc/sysctl.conf ..."
        load_file /etc/sysctl.conf
    fi
}

args=("$@")
i=0
while ((i < ${#args[@]})); do
    a=${args[i]}
    case $a in
    -q | --quiet) quiet=1 ;;
    -n | --values) values_only=1 ;;
    -N | --names) names=1 ;;
    -e | --ignore) ;;
    -w | --write) ;;
    --system) system ;;
    -p | --load) 
        if ((i + 1 < ${#args[@]})) && [[ ${args[i+1]} != -* ]]; then i=$((i + 1)); load_file "${args[i]}"; else load_file /etc/sysctl.conf; fi
        ;;
    -p* ) load_file "${a#-p}" ;;
    --load=*) load_file "${a#--load=}" ;;
    -a | --all | -A | -X) echo "rvlab sysctl: listing all keys is not emulated" >&2 ;;
    -*) ;;
    *=*) set_kv "$a" ;;
    *) show "$a" ;;
    esac
    i=$((i + 1))
done
exit $rc
