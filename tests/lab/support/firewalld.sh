#!/bin/bash
# rvlab: firewalld daemon stand-in on an emulated openEuler board (configuration lives with
# firewall-cmd; nothing is filtered). Runs until stopped; its pid file and its name
# (`firewalld`, in /proc/PID/cmdline) are how firewall-cmd finds it running, as the real one
# finds the daemon on D-Bus.
mkdir -p /run/rvlab/firewalld
[ -f /etc/firewalld/rvlab-permanent ] && cp /etc/firewalld/rvlab-permanent /run/rvlab/firewalld/runtime
echo $$ >/run/rvlab/firewalld/pid
exec -a firewalld sleep infinity
