"""The SpikeInterface side of `make bench`, run with .bench-venv/bin/python (spikeinterface
pins zarr<3, so it never shares an environment with Neurocyte).

    si_tasks.py generate OUT_DIR NAME --channels 64 --seconds 60 --rate 20000 --units 24 [--truth-only]
        ground truth from spikeinterface.generate_ground_truth_recording, written as int16
        binary + JSON sidecar (a format `neurocyte detect` reads) + NAME.truth.npz (spike
        times and units, and the units' templates); --truth-only rewrites only the .npz
        (the generator is seeded: the same recording)
    si_tasks.py detect BIN JSON METHOD OUT.npy
        SpikeInterface's standard detection on that file (n_jobs=1); prints one JSON line
        with the seconds spent (import excluded: generous to SpikeInterface)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

GAIN_UV = 0.1  # int16 step; templates and noise are far inside +-3.2 mV


def generate(out: Path, name: str, channels: int, seconds: float, rate: float, units: int, seed: int,
             truth_only: bool = False) -> None:
    import spikeinterface.core as si

    noise_uv = 5.0
    rec, sorting = si.generate_ground_truth_recording(
        durations=[seconds], sampling_frequency=rate, num_channels=channels, num_units=units,
        noise_kwargs={"noise_levels": noise_uv, "strategy": "on_the_fly"}, seed=seed)
    templates = rec.templates  # InjectTemplatesRecording's (units, samples, channels) array
    locations = rec.get_channel_locations()
    out.mkdir(parents=True, exist_ok=True)
    if not truth_only:
        write_binary(rec, out, name, rate, channels, locations)
    peak_channel = np.abs(templates).max(axis=1).argmax(axis=1)
    amplitude = np.abs(templates).max(axis=(1, 2))
    spikes = sorting.to_spike_vector()
    # templates[u, nbefore] is the template's sample at the spike time (no amplitude scaling
    # or jitter in this generator: every spike of a unit is its template)
    np.savez(out / f"{name}.truth.npz", sample_index=spikes["sample_index"], unit_index=spikes["unit_index"],
             peak_channel=peak_channel, snr=amplitude / noise_uv, channel_locations_um=locations[:, :2],
             templates=templates.astype(np.float32), nbefore=int(rec._kwargs["nbefore"]))
    print(json.dumps({"name": name, "spikes": int(spikes.size), "units": units,
                      "snr_min": float((amplitude / noise_uv).min()), "snr_max": float((amplitude / noise_uv).max())}))


def write_binary(rec, out: Path, name: str, rate: float, channels: int, locations: np.ndarray) -> None:
    step = int(rate)  # one second at a time: bounded memory
    with open(out / f"{name}.bin", "wb") as f:
        n = rec.get_num_samples()
        for start in range(0, n, step):
            x = rec.get_traces(start_frame=start, end_frame=min(n, start + step))
            np.clip(np.round(x / GAIN_UV), -32768, 32767).astype("<i2").tofile(f)
    (out / f"{name}.json").write_text(json.dumps({
        "sampling_rate_hz": rate, "n_channels": channels, "dtype": "int16", "gain_uv": GAIN_UV,
        "offset_uv": 0.0, "layout": "samples_by_channels",
        "channel_locations_um": [[float(x), float(y)] for x, y in locations[:, :2]]}))


def detect(bin_path: Path, json_path: Path, method: str, out: Path) -> None:
    started = time.perf_counter()
    import spikeinterface.core as si
    import spikeinterface.preprocessing as spre
    from spikeinterface.sortingcomponents.peak_detection import detect_peaks

    imported = time.perf_counter()
    meta = json.loads(json_path.read_text())
    rec = si.read_binary(bin_path, sampling_frequency=meta["sampling_rate_hz"], dtype="int16",
                         num_channels=meta["n_channels"], gain_to_uV=meta["gain_uv"], offset_to_uV=0.0)
    rec.set_channel_locations(np.asarray(meta["channel_locations_um"]))
    rec = spre.bandpass_filter(rec, freq_min=300.0, freq_max=6000.0, dtype="float32")
    rec = spre.common_reference(rec, reference="global", operator="median")
    job = {"n_jobs": 1, "chunk_duration": "1s", "progress_bar": False}
    noise = si.get_noise_levels(rec, return_in_uV=False, **job)
    kwargs = {"peak_sign": "neg", "detect_threshold": 5.0, "exclude_sweep_ms": 1.0, "noise_levels": noise}
    if method == "locally_exclusive":
        kwargs["radius_um"] = 50.0
    peaks = detect_peaks(rec, method=method, method_kwargs=kwargs, job_kwargs=job)
    done = time.perf_counter()
    np.save(out, np.stack([peaks["sample_index"].astype(np.int64), peaks["channel_index"].astype(np.int64)], axis=1))
    print(json.dumps({"seconds": done - imported, "import_seconds": imported - started, "peaks": int(peaks.size)}))


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("out", type=Path)
    g.add_argument("name")
    g.add_argument("--channels", type=int, required=True)
    g.add_argument("--seconds", type=float, required=True)
    g.add_argument("--rate", type=float, default=20000.0)
    g.add_argument("--units", type=int, required=True)
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--truth-only", action="store_true", help="rewrite only NAME.truth.npz")
    d = sub.add_parser("detect")
    d.add_argument("bin", type=Path)
    d.add_argument("json", type=Path)
    d.add_argument("method", choices=["by_channel", "locally_exclusive"])
    d.add_argument("out", type=Path)
    a = ap.parse_args()
    if a.cmd == "generate":
        generate(a.out, a.name, a.channels, a.seconds, a.rate, a.units, a.seed, a.truth_only)
    else:
        detect(a.bin, a.json, a.method, a.out)


if __name__ == "__main__":
    sys.exit(main())
