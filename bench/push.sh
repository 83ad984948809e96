#!/usr/bin/env bash
# Benchmark: rvcluster's registry push vs `skopeo copy` (the named peer), same ~200 MB
# linux/riscv64 oci-archive in 3 tar+gzip layers (skopeo keeps them as they are), same real docker-registry on loopback, a fresh empty
# registry for every measured run (so neither side can skip or mount blobs). Prints both times,
# the ratio (skopeo time / rvcluster time: above 1.0x means rvcluster is faster), checks both
# pushed the same manifest digest, and shows that a second push sends 0 bytes.
#   usage: bench/push.sh [TOTAL_MB=200] [RUNS=3]
set -euo pipefail

MB=${1:-200}
RUNS=${2:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --example push
BIN=$CARGO_TARGET_DIR/release/examples/push

WORK=$(mktemp -d /tmp/rvc-bench-push.XXXXXX)
# A loopback address of our own, derived from our pid (127.32-63.x.y).
IP="127.$((32 + ($$ >> 16) % 32)).$((($$ >> 8) & 255)).$(($$ & 255))"
PORT=5000
REG_PID=
stop_registry() {
    if [[ -n $REG_PID ]]; then kill "$REG_PID" 2>/dev/null || true; wait "$REG_PID" 2>/dev/null || true; REG_PID=; fi
}
cleanup() { stop_registry; rm -rf "$WORK"; }
trap cleanup EXIT

start_registry() { # fresh, empty storage
    stop_registry
    rm -rf "$WORK/data"
    cat >"$WORK/config.yml" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $WORK/data
  delete:
    enabled: true
http:
  addr: $IP:$PORT
  secret: rvcluster-bench
YML
    /usr/bin/docker-registry serve "$WORK/config.yml" 2>>"$WORK/registry.log" &
    REG_PID=$!
    until (exec 3<>"/dev/tcp/$IP/$PORT") 2>/dev/null; do
        kill -0 "$REG_PID" 2>/dev/null || { cat "$WORK/registry.log"; exit 1; }
        sleep 0.05
    done
}

now() { date +%s.%N; }
json() { jq -r ".$1"; }

echo "generating a ${MB} MB image in 3 layers..."
DIGEST=$("$BIN" mkimage "$WORK/img.tar" "$MB" 3)
ls -l "$WORK/img.tar" | awk '{printf "archive: %.1f MB, manifest %s\n", $5/1e6, "'"$DIGEST"'"}'

rv_times=() sk_times=()
for i in $(seq 1 "$RUNS"); do
    start_registry
    t0=$(now)
    out=$("$BIN" push "http://$IP:$PORT" "oci-archive:$WORK/img.tar" "bench/rv" "1")
    t1=$(now)
    [[ $(json digest <<<"$out") == "$DIGEST" ]] || { echo "rvcluster pushed another digest: $out"; exit 1; }
    rv_times+=("$(echo "$t1 - $t0" | bc -l)")

    start_registry
    t0=$(now)
    skopeo copy -q --dest-tls-verify=false "oci-archive:$WORK/img.tar" "docker://$IP:$PORT/bench/sk:1"
    t1=$(now)
    sk_times+=("$(echo "$t1 - $t0" | bc -l)")
    sk_digest=$(skopeo inspect --tls-verify=false --override-arch riscv64 "docker://$IP:$PORT/bench/sk:1" | json Digest)
    [[ $sk_digest == "$DIGEST" ]] || { echo "skopeo pushed another digest ($sk_digest): not the same work"; exit 1; }
    printf 'run %d: rvcluster %.2fs  skopeo copy %.2fs\n' "$i" "${rv_times[-1]}" "${sk_times[-1]}"
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
rv=$(median "${rv_times[@]}")
sk=$(median "${sk_times[@]}")
ratio=$(echo "$sk / $rv" | bc -l)
printf 'median: rvcluster %.2fs, skopeo copy %.2fs (%.0f MB/s vs %.0f MB/s)\n' "$rv" "$sk" "$(echo "$MB / $rv" | bc -l)" "$(echo "$MB / $sk" | bc -l)"
printf 'ratio (skopeo / rvcluster): %.2fx  (target >= 1.0x)\n' "$ratio"

# Second push into the same registry and repository: nothing to send.
start_registry
"$BIN" push "http://$IP:$PORT" "oci-archive:$WORK/img.tar" "bench/rv" "1" >/dev/null
out=$("$BIN" push "http://$IP:$PORT" "oci-archive:$WORK/img.tar" "bench/rv" "1")
printf 'second push: planned %s bytes, sent %s bytes, %.2fs\n' "$(json planned_bytes <<<"$out")" "$(json bytes_sent <<<"$out")" "$(json seconds <<<"$out")"
[[ $(json bytes_sent <<<"$out") == 0 ]] || { echo "second push sent bytes"; exit 1; }
