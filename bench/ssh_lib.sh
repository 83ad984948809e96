# Shared helpers for bench/ssh_*.sh: real sshd instances on private loopback addresses
# (127.224-255.x.y, derived from this shell's pid; the test fixture uses 127.192-223 and the
# lab 127.160-191), a client key, and a known_hosts file with their host keys. Needs root.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$(mktemp -d /tmp/rvcluster-bench.XXXXXX)
SSHD_PIDS=()
HOSTS=()

cleanup() {
    for p in "${SSHD_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

need() { command -v "$1" >/dev/null || { echo "missing: $1 (apt-get install $2)" >&2; exit 2; }; }
need ssh openssh-client
need python3 python3
[ -x /usr/sbin/sshd ] || { echo "missing /usr/sbin/sshd (apt-get install openssh-server)" >&2; exit 2; }
mkdir -p /run/sshd

ssh-keygen -q -t ed25519 -N '' -C bench -f "$WORK/id_ed25519"
: > "$WORK/known_hosts"

bench_ip() { # $1: index 0..63
    local pid=$$
    echo "127.$((224 + (pid >> 10) % 32)).$(((pid >> 2) & 255)).$((((pid & 3) * 64) + $1))"
}

free_port() {
    python3 -c 'import socket,sys;s=socket.socket();s.bind((sys.argv[1],0));print(s.getsockname()[1])' "$1"
}

# start_sshd INDEX -> appends "ip:port" to HOSTS
start_sshd() {
    local i=$1 ip port d
    ip=$(bench_ip "$i")
    port=$(free_port "$ip")
    d="$WORK/sshd$i"
    mkdir -p "$d"
    ssh-keygen -q -t ed25519 -N '' -C '' -f "$d/host_ed25519"
    cp "$WORK/id_ed25519.pub" "$d/authorized_keys"
    cat > "$d/sshd_config" <<CFG
ListenAddress $ip:$port
HostKey $d/host_ed25519
PidFile $d/sshd.pid
AuthorizedKeysFile $d/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
LogLevel ERROR
MaxStartups 200:30:400
Subsystem sftp /usr/lib/openssh/sftp-server
CFG
    /usr/sbin/sshd -D -e -f "$d/sshd_config" 2>"$d/log" &
    SSHD_PIDS+=("$!")
    for _ in $(seq 1 500); do
        (exec 3<>"/dev/tcp/$ip/$port") 2>/dev/null && break
        sleep 0.01
    done
    echo "[$ip]:$port $(cut -d' ' -f1,2 "$d/host_ed25519.pub")" >> "$WORK/known_hosts"
    HOSTS+=("$ip:$port")
}

SSH_OPTS=(-F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes -o "UserKnownHostsFile=$WORK/known_hosts"
          -o IdentitiesOnly=yes -i "$WORK/id_ed25519")

build_driver() {
    (cd "$ROOT" && cargo build --quiet --release --example ssh_bench)
    local dir="${CARGO_TARGET_DIR:-$ROOT/target}"
    DRIVER="$dir/release/examples/ssh_bench"
}

