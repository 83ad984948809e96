#!/bin/sh
# rvlab: firewalld daemon stand-in on an emulated openEuler board (configuration lives with
# firewall-cmd; nothing is filtered). Runs until stopped.
mkdir -p /run/rvlab/firewalld
[ -f /etc/firewalld/rvlab-permanent ] && cp /etc/firewalld/rvlab-permanent /run/rvlab/firewalld/runtime
exec sleep infinity
