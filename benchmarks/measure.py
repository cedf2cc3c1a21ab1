"""`python measure.py REPORT.json CMD...`: run CMD, then write its wall seconds, its own peak
resident memory and its exit code to REPORT.json; CMD's stdout and stderr pass through.

Why a process of its own: a child's ru_maxrss starts from its parent's peak (Linux carries
the parent's high-water mark across the exec), so a command started by the bench, which holds
hundreds of MB of ground truth by the end, would report the bench's memory instead of its own.
Started from this small process, it reports its own."""

import json
import os
import subprocess
import sys
import time

report, cmd = sys.argv[1], sys.argv[2:]
started = time.perf_counter()
proc = subprocess.Popen(cmd)
_, status, usage = os.wait4(proc.pid, 0)
seconds = time.perf_counter() - started
code = os.waitstatus_to_exitcode(status)
with open(report, "w") as f:
    json.dump({"seconds": seconds, "peak_mb": usage.ru_maxrss / 1024.0, "exit_code": code}, f)
sys.exit(code)
