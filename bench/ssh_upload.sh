#!/usr/bin/env bash
# Upload of a 100 MiB file to one real sshd: rvcluster (stream + sha256 check on the host +
# atomic rename) against OpenSSH `scp` of the same file to the same host, in the same run.
# Two rvcluster variants: `upload` (hashes the local file first) and `upload_pinned` (digest
# known from the lock file, as for content-addressed artifacts). Target: ratio <= 1.2x.
# Note: on one machine the host's sha256 competes with both SSH ends for the same cores; on a
# board it runs on the board's cores, overlapped with the transfer.
# Usage: bench/ssh_upload.sh [RUNS]
source "$(dirname "$0")/ssh_lib.sh"
RUNS=${1:-10}
need scp openssh-client
start_sshd 0
build_driver
hp=${HOSTS[0]}
ip=${hp%:*}
port=${hp##*:}
head -c $((100 * 1024 * 1024)) /dev/urandom > "$WORK/payload"
sha=$(sha256sum < "$WORK/payload" | cut -d' ' -f1)
mkdir -p "$WORK/dest"
D=$WORK/dest

# Each must work (and produce the same bytes) before it is timed.
scp "${SSH_OPTS[@]}" -q -P "$port" "$WORK/payload" "root@$ip:$D/scp" && cmp "$WORK/payload" "$D/scp"
"$DRIVER" upload "$WORK/known_hosts" "$WORK/id_ed25519" "$hp" "$WORK/payload" "$D/rv" && cmp "$WORK/payload" "$D/rv"
"$DRIVER" upload "$WORK/known_hosts" "$WORK/id_ed25519" "$hp" "$WORK/payload" "$D/pin" "$sha" && cmp "$WORK/payload" "$D/pin"

# Interleaved runs (the machine is shared; see ssh_interleave.py), medians compared.
python3 "$(dirname "$0")/ssh_interleave.py" "$RUNS" 1 "rm -f $D/scp $D/rv $D/pin" \
    "rvcluster-upload=$DRIVER upload $WORK/known_hosts $WORK/id_ed25519 $hp $WORK/payload $D/rv" \
    "scp=scp ${SSH_OPTS[*]} -q -P $port $WORK/payload root@$ip:$D/scp"
python3 "$(dirname "$0")/ssh_interleave.py" "$RUNS" 1 "rm -f $D/scp $D/rv $D/pin" \
    "rvcluster-upload-pinned=$DRIVER upload $WORK/known_hosts $WORK/id_ed25519 $hp $WORK/payload $D/pin $sha" \
    "scp=scp ${SSH_OPTS[*]} -q -P $port $WORK/payload root@$ip:$D/scp"
