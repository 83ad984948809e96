#!/usr/bin/env python3
"""Time shell commands round-robin (A B C A B C ...) so that load from other processes on a
shared machine hits every command alike, then print each command's median and mean and the
ratio of the first command's median to each other's (ours / peer). Also the CPU each run took,
as medians: on the controller (user+sys of the command and every process it waited for: rvcluster,
or ssh/scp clients) and on the whole machine (busy time of all cores from /proc/stat, which on the
emulated lab includes every board's sshd and commands).
Usage: ssh_interleave.py RUNS WARMUP PREPARE NAME=CMD [NAME=CMD ...]   (PREPARE may be '')"""
import statistics
import subprocess
import sys
import os
import time


def busy():
    """CPU-seconds all cores spent busy since boot (/proc/stat: every field but idle and iowait)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def children_cpu():
    r = os.times()
    return r.children_user + r.children_system

runs, warmup, prepare = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
cmds = [a.split("=", 1) for a in sys.argv[4:]]
times = {name: [] for name, _ in cmds}
ctl = {name: [] for name, _ in cmds}
machine = {name: [] for name, _ in cmds}
for i in range(warmup + runs):
    for name, cmd in cmds:
        if prepare:
            subprocess.run(prepare, shell=True, check=True)
        c0, b0, t = children_cpu(), busy(), time.perf_counter()
        subprocess.run(cmd, shell=True, check=True, stdout=subprocess.DEVNULL)
        t, b, c = time.perf_counter() - t, busy() - b0, children_cpu() - c0
        if i >= warmup:
            times[name].append(t)
            ctl[name].append(c)
            machine[name].append(b)
for name, _ in cmds:
    ts = times[name]
    print(f"{name}: median {statistics.median(ts)*1000:.1f} ms, mean {statistics.mean(ts)*1000:.1f} ms, "
          f"min {min(ts)*1000:.1f} ms ({len(ts)} runs)")
    print(f"{name}: cpu controller {statistics.median(ctl[name])*1000:.0f} ms, "
          f"whole machine {statistics.median(machine[name])*1000:.0f} ms (medians)")
ours = cmds[0][0]
for name, _ in cmds[1:]:
    print(f"ratio {ours}/{name} = {statistics.median(times[ours]) / statistics.median(times[name]):.2f}x (medians)")
