#!/usr/bin/env bash
# Upload of a 100 MiB file to one real sshd: rvcluster (stream + sha256 check on the host +
# atomic rename) against OpenSSH `scp` of the same file to the same host, in the same run.
# Target: ratio <= 1.2x.   Usage: bench/ssh_upload.sh [RUNS]
source "$(dirname "$0")/ssh_lib.sh"
RUNS=${1:-10}
need scp openssh-client
start_sshd 0
build_driver
hp=${HOSTS[0]}
ip=${hp%:*}
port=${hp##*:}
head -c $((100 * 1024 * 1024)) /dev/urandom > "$WORK/payload"
mkdir -p "$WORK/dest"

hyperfine --style basic --warmup 1 --runs "$RUNS" --export-json "$WORK/upload.json" \
    --prepare "rm -f $WORK/dest/scp $WORK/dest/rv; sync" \
    -n "scp-100MiB" "scp ${SSH_OPTS[*]} -q -P $port $WORK/payload root@$ip:$WORK/dest/scp" \
    -n "rvcluster-100MiB" "$DRIVER upload $WORK/known_hosts $WORK/id_ed25519 $hp $WORK/payload $WORK/dest/rv" >&2
cmp "$WORK/payload" "$WORK/dest/rv"
cmp "$WORK/payload" "$WORK/dest/scp"
ratio "$WORK/upload.json" rvcluster-100MiB scp-100MiB
