#!/bin/bash
# rvlab: pid 1 of an emulated board, run by `unshare --mount --pid --uts --fork --mount-proc`.
# Makes the board's private filesystem view, starts sshd, and lives until the lab closes the
# lifeline pipe on fd 3 (then the kernel kills every process of the board's pid namespace).
set -eu
B=$RVLAB_BOARD_DIR
S=$RVLAB_SUPPORT_DIR
hostname "$RVLAB_HOSTNAME"
for d in $RVLAB_OVERLAYS; do
    mkdir -p "$B/upper/$d" "$B/work/$d"
    mount -t overlay "rvlab-$d" -o "lowerdir=/$d,upperdir=$B/upper/$d,workdir=$B/work/$d" "/$d"
done
for d in $RVLAB_STATE; do
    mkdir -p "/$d"
    mount --bind "$B/state/$d" "/$d"
done
for d in $RVLAB_FRESH; do
    mount --bind "$B/upper/$d" "/$d"
done
mount -t overlay rvlab-usr-bin -o "lowerdir=$S/usr-bin:/usr/bin" /usr/bin
mount -t overlay rvlab-usr-sbin -o "lowerdir=$S/usr-sbin:/usr/sbin" /usr/sbin
mount --bind "$B/usr-local" /usr/local
mount --bind "$B/run" /run
mount --bind "$B/tmp" /tmp
# The network namespace is the host's: kernel settings must stay read-only for the board.
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
# The kernel's own answer to "which machine" (Linux 6.1 and later) says the flavour's, as uname does.
if [ -e /proc/sys/kernel/arch ] && [ -f /etc/rvlab/arch ]; then mount --bind /etc/rvlab/arch /proc/sys/kernel/arch; fi
mkdir -p /run/sshd /run/rvlab /var/log/rvlab
chmod 0755 /run/sshd
# Every SSH command is recorded here by the ForceCommand (any login user may append).
: >/run/rvlab/ssh-exec.log
chmod 0666 /run/rvlab/ssh-exec.log
/usr/sbin/sshd -D -e -f /etc/ssh/sshd_config 3<&- </dev/null >>/var/log/rvlab/sshd.log 2>&1 &
echo "$!" >/run/rvlab/sshd.pid
# Boot: start the units enabled for multi-user.target, as systemd would.
for u in /etc/systemd/system/multi-user.target.wants/*; do
    [ -e "$u" ] && (systemctl start "${u##*/}" 3<&- </dev/null >>/var/log/rvlab/boot.log 2>&1 &)
done
: >/run/rvlab/booted
read -r -u 3 _ || true
