"""Load run: N recordings uploaded at once to a running local stack (`neurocyte up`), then:
time from upload to email (p50, p95), dead-lettered messages, duplicate emails, and peak
memory per service process. Not a test: it prints its figures and writes them under results/.

    .venv/bin/neurocyte up --detectors 2
    .venv/bin/python benchmarks/load.py --recordings 20
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from neurocyte_cli import local as L
from neurocyte_cli.commands.submit import submit_files
from neurocyte_cli.ui import _outputs
from neurocyte_shared.messaging import aws
from neurocyte_shared.science.synthetic import SyntheticSpec, write_recording


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the most resident memory the process has had."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recordings", type=int, default=20)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--timeout", type=float, default=1800.0)
    a = ap.parse_args()
    local = L.Local.from_env()
    outputs = _outputs(local)
    folder = Path(tempfile.mkdtemp(prefix="neurocyte-load-"))
    files = []
    for i in range(a.recordings):  # different seeds: different content, so none is a duplicate
        b, j, _ = write_recording(folder, f"load{i:02d}", SyntheticSpec(n_channels=a.channels, duration_s=a.seconds,
                                                                       seed=100 + i, network_burst_every_s=6.0))
        files.append((b, j))
    print(f"{a.recordings} recordings of {a.channels} channels x {a.seconds:g} s; uploading all at once ...")
    started: dict[str, float] = {}

    def upload(i: int) -> str:
        t0 = time.time()
        rid = submit_files(list(files[i]), email=f"load{i:02d}@example.org", name=f"load{i:02d}", check=False)
        started[rid] = t0
        return rid

    with ThreadPoolExecutor(max_workers=a.recordings) as pool:
        rids = list(pool.map(upload, range(a.recordings)))
    arrived: dict[str, float] = {}
    deadline = time.time() + a.timeout
    while len(arrived) < len(rids) and time.time() < deadline:
        mail = L.inbox(local)
        for rid in rids:
            if rid not in arrived and any(rid in json.dumps(m) for m in mail):
                arrived[rid] = time.time()
                print(f"  {len(arrived):>2}/{len(rids)} {rid}: email after {arrived[rid] - started[rid]:.1f} s")
        time.sleep(1.0)
    mail = L.inbox(local)
    per_rid = {rid: sum(1 for m in mail if rid in json.dumps(m)) for rid in rids}
    sqs = aws.client("sqs")
    dead = {k: int(sqs.get_queue_attributes(QueueUrl=v, AttributeNames=["ApproximateNumberOfMessages"])
                   ["Attributes"]["ApproximateNumberOfMessages"])
            for k, v in outputs.items() if k.endswith("DeadLetterQueueUrl")}
    memory = {name: round(peak_rss_mb(L._read_pid(local, name)), 1)
              for name, alive in L.running(local).items() if alive and name != "localstack"}
    lat = np.array([arrived[r] - started[r] for r in arrived])
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"), "recordings": len(rids),
        "channels": a.channels, "seconds": a.seconds, "emails": len(arrived),
        "p50_s": float(np.percentile(lat, 50)) if lat.size else None,
        "p95_s": float(np.percentile(lat, 95)) if lat.size else None,
        "dead_lettered": sum(dead.values()), "duplicates": sum(max(0, n - 1) for n in per_rid.values()),
        "peak_rss_mb": memory,
    }
    print(json.dumps(result, indent=2))
    out = Path(__file__).resolve().parent / "results" / f"load-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
