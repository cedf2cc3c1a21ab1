"""`python measure.py REPORT.json CMD...`: run CMD, then write its wall seconds, its own peak
resident memory, its exit code and the CPU time the hypervisor stole from this machine
meanwhile (steal, from /proc/stat: a virtual machine's cores are not all ours when the host is
busy, and a run that lost a third of its CPU says little about the code) to REPORT.json;
CMD's stdout and stderr pass through.

Why a process of its own: a child's ru_maxrss starts from its parent's peak (Linux carries
the parent's high-water mark across the exec), so a command started by the bench, which holds
hundreds of MB of ground truth by the end, would report the bench's memory instead of its own.
Started from this small process, it reports its own."""

import json
import os
import subprocess
import sys
import time


def stolen_s() -> float:
    """Core-seconds stolen from this machine since boot (0 where /proc/stat has no steal)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()  # "cpu user nice system idle iowait irq softirq steal ..."
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


report, cmd = sys.argv[1], sys.argv[2:]
stolen = stolen_s()
started = time.perf_counter()
proc = subprocess.Popen(cmd)
_, status, usage = os.wait4(proc.pid, 0)
seconds = time.perf_counter() - started
stolen = stolen_s() - stolen
code = os.waitstatus_to_exitcode(status)
with open(report, "w") as f:
    json.dump({"seconds": seconds, "peak_mb": usage.ru_maxrss / 1024.0, "exit_code": code,
               "cpu_s": usage.ru_utime + usage.ru_stime, "steal_share": stolen / (seconds * os.cpu_count())}, f)
sys.exit(code)
