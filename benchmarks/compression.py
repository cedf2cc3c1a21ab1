"""`make bench-compression`: lossless codecs for the Zarr store, on realistic noise, against
the entropy bound, priced per recording-hour.

Datasets (128 channels x 10 s at 20 kHz, int16, each cut into the store's inner chunks of
50 ms x 128 channels):
  real noise of the Multi Channel Systems file in real-data/ (benchmarks/hybrid.py: ~10 uV),
  stored as MaxOne stores it (6.29 uV per step) and as a 0.195 uV/step amplifier would;
  the synthetic generator's recording at the same two steps (spikes, hum, 6 uV noise).
Bound: Gaussian noise of sigma steps carries log2(sigma x 4.13) bits per sample at best, so
no lossless codec beats 16 / that; sigma is each channel's first-difference SD / sqrt(2)
(slow drifts, which a codec predicts, left out), the median over channels.
Codecs run in .codec-venv (benchmarks/codec_tasks.py): Blosc zstd/lz4 with bit-shuffle, a
time-delta filter, FLAC and WavPack (flac-numcodecs, wavpack-numcodecs; WavPack builds
against the system's libwavpack: apt-get install libwavpack-dev). Speeds are per CPU-second.
Cost per recording-hour at 1,024 channels (147.5 GB raw): the compressed copy's first month
in S3 Standard, plus encoding once and decoding once on Fargate (vCPU and 2 GB).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = Path("/tmp/neurocyte-bench/compression")
CODEC_PY = ROOT / ".codec-venv" / "bin" / "python"
CHANNELS, SECONDS, RATE = 128, 10.0, 20_000.0
RAW_GB_PER_HOUR = 1024 * RATE * 3600 * 2 / 1e9
S3_STANDARD = 0.023  # $ per GB-month, us-east-1
FARGATE_VCPU_H, FARGATE_GB_H = 0.04048, 0.004445


def datasets() -> dict[str, Path]:
    sys.path.insert(0, str(HERE))
    from hybrid import write_background

    from neurocyte_shared.science.synthetic import SyntheticSpec, write_recording

    DATA.mkdir(parents=True, exist_ok=True)
    out = {}
    background = DATA / "real_noise_uv.npy"
    if not background.exists():
        write_background(background, CHANNELS, SECONDS, RATE)
    uv = np.load(background)
    for step in (6.29, 0.195):
        path = DATA / f"real_{step}.npy"
        np.save(path, np.clip(np.round(uv / step), -32768, 32767).astype(np.int16))
        out[f"real MCS noise, {step} uV/step" + (" (MaxOne)" if step == 6.29 else "")] = path
        bin_path, _, _ = write_recording(DATA, f"synthetic_{step}", SyntheticSpec(
            n_channels=CHANNELS, duration_s=SECONDS, n_units=32, gain_uv=step, seed=3))
        path = DATA / f"synthetic_{step}.npy"
        np.save(path, np.fromfile(bin_path, dtype=np.int16).reshape(-1, CHANNELS))
        out[f"synthetic, {step} uV/step" + (" (MaxOne)" if step == 6.29 else "")] = path
    return out


def bound(x: np.ndarray) -> tuple[float, float]:
    sigma = float(np.median(np.std(np.diff(x.astype(np.float64), axis=0), axis=0)) / math.sqrt(2))
    bits = max(math.log2(max(sigma, 1e-9) * 4.13), 1.0)
    return sigma, 16.0 / bits


def cost(ratio: float, encode_mb_s: float, decode_mb_s: float) -> float:
    storage = RAW_GB_PER_HOUR / ratio * S3_STANDARD
    cpu_h = RAW_GB_PER_HOUR * 1e3 * (1 / encode_mb_s + 1 / decode_mb_s) / 3600
    return storage + cpu_h * (FARGATE_VCPU_H + 2 * FARGATE_GB_H)


def main() -> None:
    if not CODEC_PY.exists():
        raise SystemExit("make .codec-venv/.synced first (make bench-compression does)")
    results = {}
    for name, path in datasets().items():
        x = np.load(path)
        sigma, best = bound(x)
        proc = subprocess.run([str(CODEC_PY), str(HERE / "codec_tasks.py"), str(path), str(int(RATE * 0.05)),
                               str(CHANNELS)], capture_output=True, text=True, check=True)
        rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        missing = [r for r in rows if "missing" in r]
        rows = [r for r in rows if "ratio" in r]
        for r in rows:
            r["share_of_bound"] = r["ratio"] / best
            r["usd_per_recording_hour"] = cost(r["ratio"], r["encode_mb_s"], r["decode_mb_s"])
        results[name] = {"sigma_steps": sigma, "bound_ratio": best, "codecs": rows, "missing": missing}
        print(f"\n{name}: noise {sigma:.2f} steps, bound {best:.2f}x")
        print(f"  {'codec':34} {'ratio':>6} {'of bound':>9} {'enc MB/s':>9} {'dec MB/s':>9} {'$/rec-hour':>11}")
        for r in sorted(rows, key=lambda r: r["usd_per_recording_hour"]):
            assert r["lossless"], f"{r['codec']} lost samples on {name}"
            print(f"  {r['codec']:34} {r['ratio']:>6.2f} {r['share_of_bound']:>8.0%} {r['encode_mb_s']:>9.0f} "
                  f"{r['decode_mb_s']:>9.0f} {r['usd_per_recording_hour']:>11.3f}")
        for m in missing:
            print(f"  ({m['codec']} not measured: {m['missing']})")
    path = HERE / "results" / f"compression-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps({"when": datetime.now(UTC).isoformat(timespec="seconds"), "datasets": results,
                                "raw_gb_per_recording_hour": RAW_GB_PER_HOUR}, indent=1))
    print(f"\nwritten {path.relative_to(ROOT)}  ($/rec-hour: the compressed copy's first month in S3 Standard, "
          "plus one encode and one decode on Fargate, for 1,024 channels)")


if __name__ == "__main__":
    main()
