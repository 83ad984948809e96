#!/usr/bin/env bash
# Facts (one round trip each) from 8 real sshd instances in parallel, against the floor of
# 8 parallel `ssh -o BatchMode=yes host true` (OpenSSH) to the same instances in the same run.
# Target: ratio <= 2x.   Usage: bench/ssh_facts.sh [RUNS]
# Then the same against 8 emulated boards of the lab (rvlab: sshd in namespaces, openEuler
# riscv64 look-alikes with emulated systemctl), driven by examples/ssh_bench.rs lab-facts.
source "$(dirname "$0")/ssh_lib.sh"
RUNS=${1:-20}
for i in $(seq 0 7); do start_sshd "$i"; done
build_driver

peer="$WORK/peer.sh"
{
    echo '#!/bin/sh'
    for hp in "${HOSTS[@]}"; do
        printf 'ssh %s -p %s root@%s true &\n' "${SSH_OPTS[*]}" "${hp##*:}" "${hp%:*}"
    done
    echo 'wait'
} > "$peer"
chmod +x "$peer"
# Both must work before they are timed.
"$peer"
"$DRIVER" facts "$WORK/known_hosts" "$WORK/id_ed25519" "${HOSTS[@]}"

# Interleaved runs (the machine is shared; see ssh_interleave.py), medians compared.
python3 "$(dirname "$0")/ssh_interleave.py" "$RUNS" 3 "" \
    "rvcluster-8x-facts=$DRIVER facts $WORK/known_hosts $WORK/id_ed25519 ${HOSTS[*]}" \
    "openssh-8x-true=$peer"
echo "--- lab boards"
"$DRIVER" lab-facts 8 "$RUNS"
