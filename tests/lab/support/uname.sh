#!/bin/bash
# rvlab: uname inside an emulated board. The machine comes from the board flavour (/etc/rvlab/arch);
# everything else is the running kernel's.
{ read -r arch </etc/rvlab/arch; } 2>/dev/null || arch=riscv64 # (builtins: every facts command asks)
[ -n "$arch" ] || arch=riscv64
s=0 n=0 r=0 v=0 m=0 p=0 i=0 o=0 any=0
for a in "$@"; do
    case $a in
    --all) s=1 n=1 r=1 v=1 m=1 p=1 i=1 o=1 ;;
    --kernel-name) s=1 ;; --nodename) n=1 ;; --kernel-release) r=1 ;; --kernel-version) v=1 ;;
    --machine) m=1 ;; --processor) p=1 ;; --hardware-platform) i=1 ;; --operating-system) o=1 ;;
    --version) echo "uname (GNU coreutils) 9.4"; exit 0 ;;
    --help) echo "Usage: uname [OPTION]..."; exit 0 ;;
    -*)
        f=${a#-}
        while [ -n "$f" ]; do
            case ${f:0:1} in
            a) s=1 n=1 r=1 v=1 m=1 p=1 i=1 o=1 ;; s) s=1 ;; n) n=1 ;; r) r=1 ;; v) v=1 ;;
            m) m=1 ;; p) p=1 ;; i) i=1 ;; o) o=1 ;;
            *) echo "uname: invalid option -- '${f:0:1}'" >&2; exit 1 ;;
            esac
            f=${f:1}
        done
        ;;
    *) echo "uname: extra operand '$a'" >&2; exit 1 ;;
    esac
done
[ $((s + n + r + v + m + p + i + o)) -eq 0 ] && s=1
out=()
((s)) && out+=(Linux)
((n)) && { read -r l </proc/sys/kernel/hostname; out+=("$l"); }
((r)) && { read -r l </proc/sys/kernel/osrelease; out+=("$l"); }
((v)) && { IFS= read -r l </proc/sys/kernel/version; out+=("$l"); }
((m)) && out+=("$arch")
((p)) && out+=("$arch")
((i)) && out+=("$arch")
((o)) && out+=(GNU/Linux)
echo "${out[*]}"
