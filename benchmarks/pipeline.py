"""`make bench-pipeline`: the size labs record, through the local stack, against the same job on
one machine, in one run (a benchmark, not a test).

    .venv/bin/python benchmarks/pipeline.py            # 1024 ch x 300 s x 20 kHz int16: 12.3 GB
    .venv/bin/python benchmarks/pipeline.py --quick    # 1024 ch x 64 s: 2.6 GB

Generates the recording once, with known spikes (`synthetic.write_recording`, in
/tmp/neurocyte-bench; reused), then:
  1. `neurocyte detect FILE --jobs 2` (the whole job on one machine), timed with its peak RSS;
  2. `neurocyte submit FILE --email ... --reprocess` into the local stack as `neurocyte up`
     starts it with a user's defaults (started here if it is not running), timed to the
     manifest (upload) and to the result email (upload to email);
and prints side by side: upload time, upload-to-email time, the standalone time, their ratio;
the floor this machine sets (the upload plus one read of it back through LocalStack, no work);
each stage's busy time (the sum of its handlers' seconds for this recording, from the services'
logs) and throughput; each service's peak RSS (VmHWM: since the process started; a stack started
here has run nothing else); whether the pipeline's spike table has the standalone's rows, and
its summary the same figures. Writes benchmarks/results/pipeline-<time>.json."""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from neurocyte_cli import local as L

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NEUROCYTE = ROOT / ".venv" / "bin" / "neurocyte"
DATA = Path("/tmp/neurocyte-bench")


def recording(seconds: float) -> tuple[Path, Path]:
    from neurocyte_shared.science.synthetic import SyntheticSpec, write_recording

    name = f"pipeline_1024ch_{seconds:g}s"
    bin_path, json_path = DATA / f"{name}.bin", DATA / f"{name}.json"
    if not (bin_path.exists() and json_path.exists()):
        print(f"generating {name} (1024 channels x {seconds:g} s x 20 kHz, known spikes) ...", flush=True)
        write_recording(DATA, name, SyntheticSpec(n_channels=1024, duration_s=seconds, n_units=300, pitch_um=17.5,
                                                  seed=5))
    return bin_path, json_path


def measured(cmd: list[str]) -> tuple[float, float, str]:
    """(seconds, peak RSS MB, stdout) of a command, from measure.py."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "m.json"
        proc = subprocess.run([sys.executable, str(HERE / "measure.py"), str(report), *cmd], capture_output=True,
                              text=True)
        if proc.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
        m = json.loads(report.read_text())
    return m["seconds"], m["peak_mb"], m["cpu_s"], proc.stdout


def _proc(local: L.Local, name: str) -> dict[str, str]:
    """Service (or LocalStack) -> the text of /proc/<its pid>/<name>, for those still running."""
    out = {}
    for pid_file in sorted(local.pids.glob("*.pid")):
        try:
            out[pid_file.stem] = Path(f"/proc/{int(pid_file.read_text().strip())}/{name}").read_text()
        except (OSError, ValueError):
            continue
    return out


def peak_rss_mb(local: L.Local) -> dict[str, float]:
    out = {}
    for service, status in _proc(local, "status").items():
        kb = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), None)
        if kb is not None:
            out[service] = kb / 1024
    return out


def cpu_seconds(local: L.Local) -> dict[str, float]:
    """Per process of the stack (LocalStack included): user + system CPU seconds since it started,
    its waited-for children included."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for service, stat in _proc(local, "stat").items():
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state is fields[0]
        out[service] = (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / tick
    return out


def stage_busy(local: L.Local, rid: str) -> dict[str, dict]:
    """Per service, from its logs: handler seconds summed over this recording's messages, and the
    span from its first message's start to its last's end."""
    busy: dict[str, float] = defaultdict(float)
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for log in (local.home / "logs").glob("*.log"):
        for line in log.read_text(errors="replace").splitlines():
            if '"handled"' not in line or rid not in line:
                continue
            e = json.loads(line)
            service = e.get("service", log.stem.rsplit("-", 1)[0])
            end = datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp()
            busy[service] += e["seconds"]
            first[service] = min(first.get(service, end - e["seconds"]), end - e["seconds"])
            last[service] = max(last.get(service, end), end)
    return {s: {"busy_s": round(busy[s], 2), "span_s": round(last[s] - first[s], 2)} for s in busy}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="64 s (2.6 GB) instead of 300 s (12.3 GB)")
    args = ap.parse_args()
    seconds = 64.0 if args.quick else 300.0
    DATA.mkdir(parents=True, exist_ok=True)
    bin_path, json_path = recording(seconds)
    size_gb = (bin_path.stat().st_size + json_path.stat().st_size) / 1e9
    os.environ["NEUROCYTE_KERNELS"] = "aot"  # what `neurocyte detect` runs after `make setup`

    print(f"standalone: neurocyte detect --jobs 2 on {size_gb:.1f} GB ...", flush=True)
    out = DATA / "pipeline_standalone.parquet"
    alone_s, alone_mb, alone_cpu, _ = measured([str(NEUROCYTE), "detect", str(bin_path), str(json_path), "--jobs", "2",
                                     "--out", str(out)])

    local = L.Local.from_env()
    started_here = not (L.localstack_healthy(local) and any(L.running(local).values()))
    if started_here:
        subprocess.run([str(NEUROCYTE), "up"], check=True)
    try:
        email = f"bench-{uuid.uuid4().hex[:6]}@lab.org"
        print(f"pipeline: neurocyte submit {bin_path.name} ...", flush=True)
        cpu_before = cpu_seconds(local)
        t0 = time.perf_counter()
        proc = subprocess.run([str(NEUROCYTE), "submit", str(bin_path), str(json_path), "--email", email,
                               "--reprocess"], capture_output=True, text=True, check=True)
        upload_s = time.perf_counter() - t0
        cpu_uploaded = cpu_seconds(local)
        rid = proc.stdout.strip().splitlines()[-1].strip()
        deadline = time.monotonic() + 3600
        while not L.mail_to(local, email):
            if time.monotonic() > deadline:
                raise SystemExit("no email within an hour")
            time.sleep(0.5)
        email_s = time.perf_counter() - t0
        cpu_after = cpu_seconds(local)
        time.sleep(2)  # the last handler's log line follows the email by milliseconds
        stages = stage_busy(local, rid)
        rss = peak_rss_mb(local)
        same = compare(rid, out)
        print("floor: reading the upload back once through LocalStack ...", flush=True)
        cpu_read = cpu_seconds(local)
        read_s = read_back(local, rid)
        read_cpu = cpu_seconds(local)["localstack"] - cpu_read["localstack"]
    finally:
        if started_here:
            subprocess.run([str(NEUROCYTE), "down"], check=False)

    samples = 1024 * seconds * 20_000
    to_email = email_s - upload_s
    print()
    print(f"recording: 1024 ch x {seconds:g} s x 20 kHz int16, {size_gb:.2f} GB")
    print(f"{'':34} {'seconds':>9}")
    print(f"{'standalone neurocyte detect -j 2':34} {alone_s:>9.1f}   (peak RSS {alone_mb:.0f} MB)")
    print(f"{'upload (neurocyte submit)':34} {upload_s:>9.1f}   ({size_gb * 1e3 / upload_s:.0f} MB/s)")
    print(f"{'upload to email':34} {email_s:>9.1f}   {email_s / alone_s:.1f}x the standalone run")
    print(f"{'manifest to email':34} {to_email:>9.1f}   {to_email / alone_s:.1f}x")
    upload_ls = cpu_uploaded["localstack"] - cpu_before.get("localstack", 0.0)
    floor = upload_s + read_s
    print(f"{'floor: upload + one read back':34} {floor:>9.1f}   {floor / alone_s:.1f}x   (the read {read_s:.1f} s; "
          f"LocalStack CPU s: {upload_ls:.0f} taking the upload, {read_cpu:.0f} serving the read)")
    print("stage          busy s   span s   throughput (busy)")
    order = ("ingest", "chunker", "detector", "aggregator", "notifier")
    for s, v in sorted(stages.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)):
        rate = f"{samples / v['busy_s'] / 1e6:.1f} M samples/s" if v["busy_s"] else "-"
        print(f"{s:<14} {v['busy_s']:>6.1f}   {v['span_s']:>6.1f}   {rate}")
    cpu = {k: round(cpu_after[k] - cpu_before.get(k, 0.0), 1) for k in cpu_after}
    print(f"CPU seconds from upload to email (2 cores x {email_s:.0f} s = {2 * email_s:.0f} available; "
          f"standalone used {alone_cpu:.0f}): " + ", ".join(f"{k} {v:.0f}" for k, v in cpu.items())
          + f"; total {sum(cpu.values()):.0f} (the upload's client not counted)")
    print("peak RSS (MB): " + ", ".join(f"{k} {v:.0f}" for k, v in rss.items() if k != "localstack"))
    print(f"spike table: pipeline {same['pipeline_rows']:,} rows, standalone {same['standalone_rows']:,}; "
          f"same rows: {same['same_rows']}")
    result = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "machine": platform.platform(),
              "cpus": os.cpu_count(), "seconds_recorded": seconds, "size_gb": size_gb, "standalone_s": alone_s,
              "standalone_peak_mb": alone_mb, "standalone_cpu_s": alone_cpu, "cpu_s": cpu,
              "upload_s": upload_s, "upload_to_email_s": email_s,
              "ratio": email_s / alone_s, "manifest_to_email_s": to_email,
              "floor": {"read_back_s": read_s, "upload_plus_read_s": floor, "ratio": floor / alone_s,
                        "localstack_cpu_upload_s": round(upload_ls, 1), "localstack_cpu_read_s": round(read_cpu, 1)},
              "stages": stages, "peak_rss_mb": rss, "spikes": same,
              "recording_id": rid}
    path = HERE / "results" / f"pipeline-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"written {path.relative_to(ROOT)}")


def _stack_s3(local: L.Local) -> tuple:
    """(an S3 client on the local stack, the stack's outputs)."""
    from neurocyte_shared.messaging import aws

    local.use()
    return aws.client("s3"), L.stack_outputs(local)


def read_back(local: L.Local, rid: str) -> float:
    """Seconds to GET the recording's upload once from LocalStack and drop it: the least any
    design that keeps the upload in S3 must add to the upload on this machine, before any
    processing (the chunker reads it once today)."""
    from neurocyte_shared.storage import s3io

    s3, outputs = _stack_s3(local)
    bucket = outputs["UploadBucketName"]
    keys = [k for k in s3io.list_keys(s3, bucket, "") if rid in k and not k.endswith(".json")]
    t0 = time.perf_counter()
    for key in keys:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        while body.read(16 << 20):
            pass
    return time.perf_counter() - t0


def compare(rid: str, standalone: Path) -> dict:
    """The pipeline's published spike table against the standalone run's."""
    import pyarrow.parquet as pq

    from neurocyte_shared.storage import s3io

    s3, outputs = _stack_s3(L.Local.from_env())
    bucket = outputs["DataBucketName"]
    key = next(k for k in s3io.list_keys(s3, bucket, "recordings/") if f"/{rid}/results/" in k
               and k.endswith("/spikes.parquet"))
    ours = pq.read_table(io.BytesIO(s3io.get_bytes(s3, bucket, key)))
    alone = pq.read_table(standalone)

    def rows(t) -> set:
        return set(zip(t["sample_index"].to_numpy().tolist(), t["channel_index"].to_numpy().tolist()))

    a, b = rows(ours), rows(alone)
    return {"pipeline_rows": len(a), "standalone_rows": len(b), "same_rows": a == b,
            "only_pipeline": len(a - b), "only_standalone": len(b - a),
            "amplitudes_equal": bool(np.allclose(np.sort(ours["amplitude_uv"].to_numpy()),
                                                 np.sort(alone["amplitude_uv"].to_numpy()), atol=1e-2))
            if len(a) == len(b) else False}


if __name__ == "__main__":
    main()
