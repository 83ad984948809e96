#!/bin/bash
# rvlab: `ip` inside an emulated board. Boards share the host's network namespace, so links must
# not be made or deleted for real: the board's links are files /run/rvlab/net/links/<dev>
# (`key=value` lines: index, type, mtu, mac, optional master), written by k3s-sim (cni0,
# flannel.1, a veth per pod sandbox) and listed here with `lo`. Emulated: `ip [-o] link
# [show|list] [DEV]`, `ip link delete|del DEV`, `ip netns [show|list]` (none), and the host's
# IPv4 routes read only (`ip route [show] [default]`, from /proc/net/route). Anything else
# is refused (exit 2) so nothing reaches the host.
set -u
shopt -s nullglob
L=/run/rvlab/net/links
oneline=0
while [ $# -gt 0 ]; do
    case $1 in
    -o | -oneline | --oneline) oneline=1 ;;
    -*) ;;
    *) break ;;
    esac
    shift
done
obj=${1:-}
shift || true

get() { sed -n "s/^$2=//p" "$L/$1"; }

show_link() { # dev
    local d=$1 idx type mtu mac master flags state name line1 line2 extra=""
    if [ "$d" = lo ]; then
        line1="1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000"
        line2="    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00"
    else
        idx=$(get "$d" index) type=$(get "$d" type) mtu=$(get "$d" mtu) mac=$(get "$d" mac) master=$(get "$d" master)
        name=$d state=UP
        [ "$type" = vxlan ] && state=UNKNOWN
        [ "$type" = veth ] && name="$d@if2"
        [ -n "$master" ] && extra=" master $master"
        line1="$idx: $name: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu $mtu qdisc noqueue$extra state $state mode DEFAULT group default"
        line2="    link/ether $mac brd ff:ff:ff:ff:ff:ff"
    fi
    if ((oneline)); then
        printf '%s\\%s\n' "$line1" "$line2"
    else
        printf '%s\n%s\n' "$line1" "$line2"
    fi
}

all_links() {
    echo lo
    for f in "$L"/*; do echo "$(sed -n 's/^index=//p' "$f") ${f##*/}"; done | sort -n | cut -d' ' -f2
}

case $obj in
l | li | lin | link)
    verb=${1:-show}
    shift || true
    case $verb in
    show | list | sh | ls)
        [ "${1:-}" = dev ] && shift
        if [ -n "${1:-}" ]; then
            if [ "$1" != lo ] && [ ! -f "$L/$1" ]; then
                echo "Device \"$1\" does not exist." >&2
                exit 1
            fi
            show_link "$1"
        else
            for d in $(all_links); do show_link "$d"; done
        fi
        ;;
    delete | del)
        [ "${1:-}" = dev ] && shift
        d=${1:-}
        if [ -z "$d" ]; then
            echo "Not enough information: \"dev\" argument is required." >&2
            exit 255
        fi
        if [ "$d" = lo ]; then
            echo "RTNETLINK answers: Operation not supported" >&2
            exit 2
        fi
        if [ ! -f "$L/$d" ]; then
            echo "Cannot find device \"$d\"" >&2
            exit 1
        fi
        rm -f "$L/$d"
        # a bridge's ports lose their master
        for f in "$L"/*; do sed -i "/^master=$d\$/d" "$f"; done
        ;;
    *)
        echo "rvlab: \`ip link $verb\` is not emulated on boards (show, delete)" >&2
        exit 2
        ;;
    esac
    ;;
r | ro | rou | rout | route)
    # Read only, from the shared network namespace's table (/proc/net/route): `ip route
    # [show|list] [default]`, as iproute2 prints IPv4 routes. Changing routes is refused.
    case ${1:-show} in
    show | list | sh | ls) shift || true ;;
    default) ;;
    *)
        echo "rvlab: \`ip route $1\` is not emulated on boards (read only: show)" >&2
        exit 2
        ;;
    esac
    want=${1:-}
    # Builtins only (every facts command asks for the default route).
    hexip() { printf -v ip '%d.%d.%d.%d' "0x${1:6:2}" "0x${1:4:2}" "0x${1:2:2}" "0x${1:0:2}"; }
    bits() { local m=$(( 0x${1:6:2}<<24 | 0x${1:4:2}<<16 | 0x${1:2:2}<<8 | 0x${1:0:2} )); n=0; while (( m & 0x80000000 )); do n=$((n+1)); m=$(( (m<<1) & 0xffffffff )); done; }
    {
        read -r _
        while read -r dev dst gw flags _ _ metric mask _; do
            if [ "$dst" = 00000000 ] && [ "$mask" = 00000000 ]; then
                hexip "$gw"
                line="default via $ip dev $dev"
                [ "$metric" != 0 ] && line="$line metric $metric"
            else
                [ "$want" = default ] && continue
                hexip "$dst"
                bits "$mask"
                line="$ip/$n dev $dev scope link"
            fi
            echo "$line"
        done
    } </proc/net/route
    ;;
netns)
    case ${1:-show} in
    show | list) ;;
    *)
        echo "rvlab: \`ip netns $1\` is not emulated on boards" >&2
        exit 2
        ;;
    esac
    ;;
*)
    echo "rvlab: \`ip $obj\` is not emulated on boards (boards share the host's network namespace): link, netns, route show" >&2
    exit 2
    ;;
esac
