#!/usr/bin/env bash
# Benchmark: the simulator's containerd-like pull (`k3s crictl pull`, riscv64 from a multi-arch
# index: manifest list, manifest, config, layer, digests verified) against skopeo copying the
# same riscv64 image (`skopeo copy --override-arch riscv64 docker://... dir:`), both from a real
# docker-registry on loopback seeded by seed-upstream. Prints both means and the ratio.
# Needs: docker-registry, skopeo, hyperfine, the k3s-sim binaries (cargo build -p k3s-sim).
set -euo pipefail
BIN=${BIN:-${CARGO_TARGET_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)/target}/debug}
IP=${IP:-127.163.250.1}
W=$(mktemp -d /tmp/k3s-sim-bench.XXXXXX)
cleanup() { [ -n "${SRV:-}" ] && kill "$SRV" 2>/dev/null; [ -n "${REG:-}" ] && kill "$REG" 2>/dev/null; wait 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s/data\nhttp:\n  addr: %s:5000\n' "$W" "$IP" > "$W/config.yml"
/usr/bin/docker-registry serve "$W/config.yml" >/dev/null 2>&1 & REG=$!
for _ in $(seq 100); do curl -fs "http://$IP:5000/v2/" >/dev/null && break; sleep 0.1; done
t0=$(date +%s%N); "$BIN/seed-upstream" "http://$IP:5000" >/dev/null; t1=$(date +%s%N)
echo "seed-upstream: $(grep -c . <(sed '/^#/d;/^$/d' "$(dirname "$0")/../../../fixtures/upstream/images.txt")) images in $(( (t1 - t0) / 1000000 )) ms"
R="$W/root"; mkdir -p "$R/etc/rvlab"
printf 'node-ip 127.163.250.2\nsync-ms 1000\n' > "$R/etc/rvlab/sim.conf"
echo "docker.io http://$IP:5000" > "$R/etc/rvlab/upstream.conf"
mkdir -p "$R/etc/rancher/k3s"; echo 'disable: [traefik, metrics-server, local-storage, coredns]' > "$R/etc/rancher/k3s/config.yaml"
RVLAB_SIM_TEST_ROOT=$R "$BIN/k3s" server --node-name bench >"$W/k3s.log" 2>&1 & SRV=$!
for _ in $(seq 100); do [ -f "$R/run/k3s/containerd/rvlab-runtime.json" ] && break; sleep 0.1; done
IMG=rancher/local-path-provisioner:v0.0.32
hyperfine -N --warmup 3 --runs 30 --export-csv "$W/h.csv" \
  -n k3s-sim "env RVLAB_SIM_TEST_ROOT=$R $BIN/k3s crictl pull $IMG" \
  -n skopeo "skopeo copy --src-tls-verify=false --override-arch riscv64 --override-os linux docker://$IP:5000/$IMG dir:$W/skopeo-out" >/dev/null
# csv: command,mean,stddev,... (seconds)
awk -F, -v img="$IMG" 'NR>1 {m[$1]=$2} END {printf "pull %s (riscv64 from an index): k3s-sim %.1f ms, skopeo %.1f ms, ratio k3s-sim/skopeo = %.2f\n", img, m["k3s-sim"]*1000, m["skopeo"]*1000, m["k3s-sim"]/m["skopeo"]}' "$W/h.csv"
