#!/usr/bin/env python3
"""Time shell commands round-robin (A B C A B C ...) so that load from other processes on a
shared machine hits every command alike, then print each command's median and mean and the
ratio of the first command's median to each other's (ours / peer).
Usage: ssh_interleave.py RUNS WARMUP PREPARE NAME=CMD [NAME=CMD ...]   (PREPARE may be '')"""
import statistics
import subprocess
import sys
import time

runs, warmup, prepare = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
cmds = [a.split("=", 1) for a in sys.argv[4:]]
times = {name: [] for name, _ in cmds}
for i in range(warmup + runs):
    for name, cmd in cmds:
        if prepare:
            subprocess.run(prepare, shell=True, check=True)
        t = time.perf_counter()
        subprocess.run(cmd, shell=True, check=True, stdout=subprocess.DEVNULL)
        if i >= warmup:
            times[name].append(time.perf_counter() - t)
for name, _ in cmds:
    ts = times[name]
    print(f"{name}: median {statistics.median(ts)*1000:.1f} ms, mean {statistics.mean(ts)*1000:.1f} ms, "
          f"min {min(ts)*1000:.1f} ms ({len(ts)} runs)")
ours = cmds[0][0]
for name, _ in cmds[1:]:
    print(f"ratio {ours}/{name} = {statistics.median(times[ours]) / statistics.median(times[name]):.2f}x (medians)")
