"""`python benchmarks/jobs_pairs.py [--pairs 30] [--wide]`: only `make bench`'s `--jobs 2`
against `--jobs 1` comparison of the whole `neurocyte detect` command, with as many pairs as
asked, on the 64-channel x 240 s file (and with --wide the 1024-channel one).

Why: that figure moves by about +-0.1 from one bench to the next on this machine, and the
whole bench takes 15 minutes; 30 pairs on 64 channels take about 3. Same runs, same pairing and
the same printed line as bench.py; the JSON goes to benchmarks/results/jobs-pairs-*.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from bench import (
    HERE,
    LONG,
    STOLEN,
    WIDE,
    _percent,
    ensure_data,
    jobs_line,
    use_compiled_kernels,
    whole_command_jobs,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "neurocyte-bench")
    ap.add_argument("--pairs", type=int, default=30)
    ap.add_argument("--wide", action="store_true", help="the 1024-channel file too (about 14 s a pair)")
    args = ap.parse_args()
    use_compiled_kernels()
    datasets = [LONG, WIDE] if args.wide else [LONG]
    args.data.mkdir(parents=True, exist_ok=True)
    for dataset in datasets:
        ensure_data(args.data, dataset)
    rows = whole_command_jobs(args.data, tuple(d[0] for d in datasets), args.pairs)
    print()
    for row in rows:
        print(jobs_line(row))
        print(
            f"  pairs at 1.7x or more: {sum(a / b >= 1.7 for a, b in zip(row['jobs_1_runs_s'], row['jobs_2_runs_s']))}"
            f" of {len(row['jobs_1_runs_s'])}"
        )
    print(f"CPU time the hypervisor stole from this machine during the runs: {_percent(STOLEN)}")
    path = HERE / "results" / f"jobs-pairs-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(
        json.dumps(
            {"when": datetime.now(UTC).isoformat(timespec="seconds"), "pairs": args.pairs, "rows": rows}, indent=2
        )
    )
    print(f"written {path.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
