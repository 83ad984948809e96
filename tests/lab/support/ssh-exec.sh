#!/bin/bash
# rvlab: sshd's ForceCommand on every board. Records one line per command a client runs over
# SSH (an exec request: time, user, the command's first 80 characters) in
# /run/rvlab/ssh-exec.log, then runs the command exactly as sshd would have without a
# ForceCommand: the login shell with -c. Lets tests count remote round trips per board.
# Builtins only: it runs before every remote command (the benchmarks' ssh floor included).
if [ -n "${SSH_ORIGINAL_COMMAND+x}" ]; then
    c=${SSH_ORIGINAL_COMMAND:0:80}
    printf '%s %s %s\n' "$EPOCHREALTIME" "${USER:-?}" "${c//[$'\n\t']/ }" >>/run/rvlab/ssh-exec.log 2>/dev/null
    exec "${SHELL:-/bin/sh}" -c "$SSH_ORIGINAL_COMMAND"
fi
exec "${SHELL:-/bin/sh}" -l
