"""Part of `make bench`: how the detection engine itself scales with --jobs, in one process.

`bench.py` times `neurocyte detect --jobs 1` against `--jobs 2` as whole commands, which is
what a user waits for. On a short job that figure is capped by the serial start-up: Python's
imports and pyarrow's take about 0.3-0.4 s on this machine, against 1.6 s for a 64-channel
x 240 s file at --jobs 2. This runs the same `detect_recording` (the core of
`neurocyte detect`: learning, windows, the spike table written as Parquet to memory) in one
warm process, alternating --jobs 1 and --jobs 2, so the engine's own scaling can be told
apart from the start-up's. It is not the target's figure; it explains it.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
from bench import HERE, LONG, WIDE, ensure_data, paired_jobs

import neurocyte_cli  # noqa: F401  first: one BLAS thread, as `neurocyte` sets before numpy loads
from neurocyte_shared.science.detection import DetectionParams
from neurocyte_shared.science.detection.windows import LocalRecording, detect_recording
from neurocyte_shared.storage import spikes


def seconds(recording: LocalRecording, jobs: int) -> float:
    started = time.perf_counter()
    with pq.ParquetWriter(io.BytesIO(), spikes.SCHEMA, compression="zstd") as writer:
        for table in detect_recording(recording, DetectionParams(), jobs=jobs):
            writer.write_table(spikes.arrow_table(table))
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "neurocyte-bench")
    ap.add_argument("--pairs", type=int, default=7)
    args = ap.parse_args()
    rows = []
    for dataset in (LONG, WIDE):
        ensure_data(args.data, dataset)
        name = dataset[0]
        recording = LocalRecording((args.data / f"{name}.bin", args.data / f"{name}.json"))
        seconds(recording, 1)  # page the file in and load the kernels: not what is measured
        rows.append(paired_jobs(name, lambda jobs: seconds(recording, jobs), args.pairs, "in one process, "))
    print()
    for row in rows:
        print(f"--jobs 2 vs --jobs 1 in one process (no start-up) on {row['recording']}: {row['speedup']:.2f}x "
              f"(median of paired runs' ratios; median times {row['jobs_1_s']:.2f} s -> {row['jobs_2_s']:.2f} s)")
    path = HERE / "results" / f"jobs-scaling-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps({"when": datetime.now(UTC).isoformat(timespec="seconds"), "rows": rows},
                               indent=2))
    print(f"written {path.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
