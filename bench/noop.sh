#!/usr/bin/env bash
# Benchmark: the whole operations a user runs on N emulated boards (1 server, N-1 agents, no
# registry), against the SSH floor measured in the same run, interleaved (A B C A B C ...):
#   no-op `rvcluster plan`            vs  N parallel `ssh root@board true` (fresh connections)
#   no-op `rvcluster apply --no-wait` vs  the same floor
#   first `rvcluster apply --no-wait` on wiped boards  vs  N parallel `scp` of the same k3s binary
# Prints medians, the ratios, and time(32)/time(8) for ours and the floor; for the first apply also
# the CPU on the controller and on the whole machine (the lab's boards all share this machine's
# cores, so at 32 boards their side is part of the wall time). Targets (README):
# no-op plan and apply <= 1.5x the floor at every N; first apply <= 1.2x scp; scaling no worse
# than the floor's. Needs root and .ci/install-deps.
#   usage: bench/noop.sh [RUNS=5] [SIZES="8 32"]
set -euo pipefail

RUNS=${1:-5}
SIZES=${2:-"8 32"}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" -p rvcluster -p rvlab -p k3s-sim --bins
REL=$CARGO_TARGET_DIR/release
RV=$REL/rvcluster
LAB=$REL/lab
K3S=$REL/k3s
WORK=$(mktemp -d /tmp/rvcluster-bench-noop.XXXXXX)
[ -n "${KEEP:-}" ] && echo "work dir: $WORK"
STATE=$WORK/state
cleanup() {
    "$LAB" down --state "$STATE" >/dev/null 2>&1 || true
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

declare -A PLAN FLOOR APPLY FIRST SCPT CPU_FIRST CPU_SCP
median() { python3 -c 'import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }

for N in $SIZES; do
    echo "== $N boards (1 server, $((N - 1)) agents), $RUNS interleaved runs"
    "$LAB" up --boards "$N" --no-registry-host --no-upstream --k3s "$K3S" --state "$STATE" >"$WORK/up.txt"
    KEY=$(sed -n 's/^ssh key: *//p' "$WORK/up.txt")
    KNOWN=$(sed -n 's/^known_hosts: *//p' "$WORK/up.txt")
    awk '$2=="server"||$2=="agent"{print $3}' "$WORK/up.txt" >"$WORK/ips"
    SSH=(ssh -i "$KEY" -o UserKnownHostsFile="$KNOWN" -o StrictHostKeyChecking=yes -o BatchMode=yes -o ControlMaster=no -o ControlPath=none)
    SCP=(scp -q -i "$KEY" -o UserKnownHostsFile="$KNOWN" -o StrictHostKeyChecking=yes -o BatchMode=yes)
    cd "$STATE"
    cat >"$WORK/floor.sh" <<SH
#!/usr/bin/env bash
xargs -P $N -I{} ${SSH[*]} root@{} true <"$WORK/ips"
SH
    cat >"$WORK/scp.sh" <<SH
#!/usr/bin/env bash
xargs -P $N -I{} ${SCP[*]} "$K3S" root@{}:/tmp/k3s-scp-copy <"$WORK/ips"
SH
    # A board as rvcluster first finds it: no k3s, no config, no state, no kernel module or
    # sysctl file, firewalld without the k3s ports (so the first apply runs every phase).
    cat >"$WORK/wipe.sh" <<SH
#!/usr/bin/env bash
xargs -P $N -I{} ${SSH[*]} root@{} 'systemctl stop k3s k3s-agent >/dev/null 2>&1; rm -rf /usr/local/bin/k3s /usr/local/bin/kubectl /usr/local/bin/crictl /usr/local/bin/ctr /etc/rancher/* /etc/systemd/system/k3s* /var/lib/rancher/* /var/lib/rvcluster/* /etc/modules-load.d/rvcluster-k3s.conf /etc/sysctl.d/90-rvcluster-k3s.conf /tmp/k3s-scp-copy; systemctl daemon-reload; if systemctl is-active --quiet firewalld; then firewall-cmd --permanent --remove-port=6443/tcp --remove-port=8472/udp --remove-port=10250/tcp && firewall-cmd --permanent --zone=trusted --remove-source=10.42.0.0/16 --remove-source=10.43.0.0/16 && firewall-cmd --reload; fi >/dev/null' <"$WORK/ips"
SH
    cat >"$WORK/first.sh" <<SH
#!/usr/bin/env bash
"$RV" -q apply "$STATE/cluster.kdl" --no-wait --skip-closure-check >/dev/null
SH
    chmod +x "$WORK"/*.sh
    # First apply vs scp of the binary, each on wiped boards.
    python3 "$ROOT/bench/ssh_interleave.py" "$RUNS" 1 "$WORK/wipe.sh" \
        "first-apply=$WORK/first.sh" "parallel-scp=$WORK/scp.sh" | tee "$WORK/first-$N.txt"
    "$RV" -q apply cluster.kdl --no-wait --skip-closure-check >/dev/null
    python3 "$ROOT/bench/ssh_interleave.py" "$RUNS" 1 "" \
        "noop-plan=$RV -q plan cluster.kdl --skip-closure-check" \
        "noop-apply=$RV -q apply cluster.kdl --no-wait --skip-closure-check" \
        "ssh-true=$WORK/floor.sh" | tee "$WORK/noop-$N.txt"
    med() { sed -n "s/^$1: median \([0-9.]*\) ms.*/\1/p" "$2"; }
    PLAN[$N]=$(med noop-plan "$WORK/noop-$N.txt")
    APPLY[$N]=$(med noop-apply "$WORK/noop-$N.txt")
    FLOOR[$N]=$(med ssh-true "$WORK/noop-$N.txt")
    FIRST[$N]=$(med first-apply "$WORK/first-$N.txt")
    SCPT[$N]=$(med parallel-scp "$WORK/first-$N.txt")
    cpu() { sed -n "s/^$1: cpu controller \([0-9]*\) ms, whole machine \([0-9]*\) ms.*/\1 \2/p" "$2"; }
    CPU_FIRST[$N]=$(cpu first-apply "$WORK/first-$N.txt")
    CPU_SCP[$N]=$(cpu parallel-scp "$WORK/first-$N.txt")
    cd "$ROOT"
    "$LAB" down --state "$STATE" >/dev/null
done

echo
echo "== summary (medians, ms; ratio = ours / peer)"
printf '%-6s %-12s %-12s %-12s %-10s %-10s %-12s %-12s %-10s\n' boards noop-plan noop-apply ssh-floor plan/x apply/x first-apply scp first/x
for N in $SIZES; do
    python3 - "$N" "${PLAN[$N]}" "${APPLY[$N]}" "${FLOOR[$N]}" "${FIRST[$N]}" "${SCPT[$N]}" <<'PY'
import sys
n, p, a, f, fi, s = sys.argv[1], *map(float, sys.argv[2:])
print(f"{n:<6} {p:<12.1f} {a:<12.1f} {f:<12.1f} {p/f:<10.2f} {a/f:<10.2f} {fi:<12.1f} {s:<12.1f} {fi/s:<10.2f}")
PY
done
echo
echo "== first apply vs scp: CPU (medians, ms): on the controller (rvcluster / the ssh+scp clients)"
echo "   and on the whole machine (all cores; on the lab that includes every board's side)"
printf '%-6s %-12s %-12s %-10s %-12s %-12s %-10s\n' boards ctl-ours ctl-scp ctl/x all-ours all-scp all/x
for N in $SIZES; do
    python3 - "$N" ${CPU_FIRST[$N]} ${CPU_SCP[$N]} <<'PY'
import sys
n, co, mo, cs, ms = sys.argv[1], *map(float, sys.argv[2:])
print(f"{n:<6} {co:<12.0f} {cs:<12.0f} {co/cs:<10.2f} {mo:<12.0f} {ms:<12.0f} {mo/ms:<10.2f}")
PY
done
set -- $SIZES
if [ $# -ge 2 ]; then
    A=$1; B=${!#}
    python3 - "$A" "$B" "${PLAN[$A]}" "${PLAN[$B]}" "${APPLY[$A]}" "${APPLY[$B]}" "${FLOOR[$A]}" "${FLOOR[$B]}" <<'PY'
import sys
a, b = sys.argv[1], sys.argv[2]
pa, pb, aa, ab, fa, fb = map(float, sys.argv[3:])
print(f"scaling time({b})/time({a}): plan {pb/pa:.2f}, apply {ab/aa:.2f}, ssh floor {fb/fa:.2f}")
PY
fi
