#!/bin/bash
# rvlab: sysctl inside an emulated board. Boards share the host's network namespace, so writes
# must not reach the host kernel: they are recorded per board in /run/rvlab/sysctl/<key> (and
# logged to /run/rvlab/sysctl.log); reads show the recorded value, else the kernel's.
set -u
shopt -s nullglob
REC=/run/rvlab/sysctl
[ -d "$REC" ] || mkdir -p "$REC"
quiet=0 names=0 values_only=0 rc=0

key_path() { local k=${1//\//.}; REPLY=/proc/sys/${k//.//}; } # sets REPLY

# A key exists when the kernel has it, or when its module was "loaded" by the board's modprobe.
key_exists() {
    key_path "$1"
    [ -e "$REPLY" ] && return 0
    [[ $1 == net.bridge.* ]] || return 1
    local l
    while read -r l; do [[ " $l " == *" br_netfilter "* ]] && return 0; done 2>/dev/null </run/rvlab/modprobe.log
    return 1
}

show() { # key
    local k=${1//\//.} v kp
    key_path "$k"
    kp=$REPLY
    if [ -f "$REC/$k" ]; then
        read -r v <"$REC/$k"
    elif [ -r "$kp" ]; then
        { read -r v <"$kp"; } 2>/dev/null
    elif key_exists "$k"; then
        v=0
    else
        echo "sysctl: cannot stat $kp: No such file or directory" >&2
        rc=255
        return
    fi
    if ((values_only)); then echo "$v"; elif ((names)); then echo "$k"; else echo "$k = $v"; fi
}

set_kv() { # key=value
    local k=${1%%=*} v=${1#*=}
    k=${k//[[:space:]]/}
    k=${k//\//.}
    v="${v#"${v%%[![:space:]]*}"}"
    v="${v%"${v##*[![:space:]]}"}"
    key_exists "$k" || {
        key_path "$k"
        echo "sysctl: cannot stat $REPLY: No such file or directory" >&2
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
