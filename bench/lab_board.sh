#!/usr/bin/env bash
# Benchmark: the cost of an emulated lab board against its named peer, a bare Debian sshd.
#  1. boot: `lab up --boards 1` + `lab down` (namespaces, overlays, host key, sshd, teardown)
#     vs. ssh-keygen + a bare /usr/sbin/sshd on a loopback address until it answers + kill.
#  2. ssh round trip: `ssh root@board true` into a lab board vs. the same into the bare sshd.
# Prints both times and the ratios (lab / bare: 1.0x means no overhead). Needs root.
#   usage: bench/lab_board.sh [RUNS=10]
set -euo pipefail

RUNS=${1:-10}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" -p rvlab --bin lab
LAB=$CARGO_TARGET_DIR/release/lab
command -v hyperfine >/dev/null || { echo "needs hyperfine: apt-get install hyperfine" >&2; exit 1; }

WORK=$(mktemp -d /tmp/rvlab-bench.XXXXXX)
STATE=$WORK/state
# The bare peer's loopback address: 127.9.x.y from our pid (outside the lab's 127.10-31).
IP="127.9.$((($$ >> 8) & 255)).$((($$ & 255) | 1))"
cleanup() {
    "$LAB" down --state "$STATE" >/dev/null 2>&1 || true
    [[ -f $WORK/sshd.pid ]] && kill "$(cat "$WORK/sshd.pid")" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# The peer: a bare sshd with its own key, root login with a client key, as the lab's boards do,
# and like a freshly installed board a /root holding only /etc/skel's files (the host's own
# ~/.bashrc would otherwise slow down every session).
ssh-keygen -q -t ed25519 -N '' -f "$WORK/client"
mkdir -p "$WORK/home/.ssh"
cp /etc/skel/.bashrc /etc/skel/.profile "$WORK/home/"
BARE_SSHD=(unshare --mount --propagation private sh -c 'mount --bind "$0" /root && exec /usr/sbin/sshd "$@"' "$WORK/home")
cat > "$WORK/bare.sh" <<SH
#!/usr/bin/env bash
# boot a bare sshd on $IP:22 and wait for its banner, then stop it
set -e
rm -f "$WORK/hostkey" "$WORK/hostkey.pub"
ssh-keygen -q -t ed25519 -N '' -f "$WORK/hostkey"
unshare --mount --propagation private sh -c 'mount --bind "\$0" /root && exec /usr/sbin/sshd "\$@"' "$WORK/home" -D -f "$WORK/sshd_config" -o "HostKey=$WORK/hostkey" -o "PidFile=$WORK/sshd.pid" &
pid=\$!
until (exec 3<>/dev/tcp/$IP/22) 2>/dev/null; do sleep 0.005; done
kill \$pid; wait \$pid 2>/dev/null || true
SH
chmod +x "$WORK/bare.sh"
cat > "$WORK/sshd_config" <<CFG
ListenAddress $IP:22
PermitRootLogin prohibit-password
AuthorizedKeysFile $WORK/client.pub
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
StrictModes no
CFG
mkdir -p /run/sshd

echo "== 1. boot + teardown of one board ($RUNS runs each)"
cat > "$WORK/lab.sh" <<SH
#!/usr/bin/env bash
# boot one lab board (lab up waits for its sshd banner), then tear it down
set -e
"$LAB" up --boards 1 --no-registry-host --no-upstream --state "$STATE" --k3s /bin/true >/dev/null
"$LAB" down --state "$STATE" >/dev/null
SH
chmod +x "$WORK/lab.sh"
hyperfine -N --warmup 1 --runs "$RUNS" --export-json "$WORK/boot.json" \
    -n lab "$WORK/lab.sh" \
    -n bare-sshd "$WORK/bare.sh" >/dev/null
read -r LAB_BOOT BARE_BOOT < <(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"]; print(r[0]["mean"], r[1]["mean"])' "$WORK/boot.json")

echo "== 2. ssh round trip (ssh root@host true, $((RUNS * 3)) runs each)"
"$LAB" up --boards 1 --no-registry-host --no-upstream --state "$STATE" --k3s /bin/true >"$WORK/up.txt"
KEY=$(sed -n 's/^ssh key: *//p' "$WORK/up.txt")
KNOWN=$(sed -n 's/^known_hosts: *//p' "$WORK/up.txt")
BOARD=$(awk '$1=="server1"{print $3}' "$WORK/up.txt")
"${BARE_SSHD[@]}" -f "$WORK/sshd_config" -o "HostKey=$WORK/hostkey" -o "PidFile=$WORK/sshd.pid"
until [[ -s $WORK/sshd.pid ]]; do sleep 0.01; done
echo "$IP $(cut -d' ' -f1-2 "$WORK/hostkey.pub")" > "$WORK/known_bare"
SSH="ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"
hyperfine -N --warmup 2 --runs "$((RUNS * 3))" --export-json "$WORK/ssh.json" \
    -n lab "$SSH -i $KEY -o UserKnownHostsFile=$KNOWN root@$BOARD true" \
    -n bare-sshd "$SSH -i $WORK/client -o UserKnownHostsFile=$WORK/known_bare root@$IP true" >/dev/null
read -r LAB_SSH BARE_SSH < <(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"]; print(r[0]["mean"], r[1]["mean"])' "$WORK/ssh.json")

python3 - "$LAB_BOOT" "$BARE_BOOT" "$LAB_SSH" "$BARE_SSH" <<'PY'
import sys
lb, bb, ls, bs = map(float, sys.argv[1:])
print(f"boot+teardown  lab board {lb*1000:7.1f} ms   bare sshd {bb*1000:7.1f} ms   ratio lab/bare {lb/bb:5.2f}x")
print(f"ssh round trip lab board {ls*1000:7.1f} ms   bare sshd {bs*1000:7.1f} ms   ratio lab/bare {ls/bs:5.2f}x")
PY
