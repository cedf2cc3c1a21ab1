"""Part of `make bench`: how much recall separating overlapping spikes could add. A bound
measured with the generator's own templates, for peeling (`DetectionParams.peel`), which
does the same with templates it learns from the recording.

A one-row-per-spike detector misses a spike that lands on a larger one nearby within a
fraction of a millisecond: the two make one peak. SpikeInterface's `by_channel` counts such
a spike because it reports every spike once on every electrode that sees it (about 9 rows
per spike), which raises its recall and sinks its precision (0.1).

For each bench recording this runs our detector (the same core as `neurocyte detect`) over
the whole recording, then subtracts the true template (known to the generator: every spike
of a unit is its template) of each spike it found, at its true time, from the preprocessed
traces, and detects again on what remains: the spikes hidden under the found ones. That is
the most peeling could add with perfect templates and assignments; the real one adds less.
Printed beside SpikeInterface's and peeling's figures from the latest `bench.py` results.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from bench import DATASETS, HERE, SI_PY, ensure_data, match, score

from neurocyte_shared.science.detection import (
    DetectionParams,
    find_peaks,
    learn_recording,
    preprocess,
)
from neurocyte_shared.science.detection.filters import Made, blank, filter_sos
from neurocyte_shared.science.detection.windows import LocalRecording


def filtered_templates(templates: np.ndarray, rate: float, params: DetectionParams) -> tuple[np.ndarray, int]:
    """Each template through our preprocessing (in zeros, padded for the filter's ringing);
    the filter is linear, so subtracting these equals filtering the recording minus the spikes
    (the median reference is not linear, but a single spike barely moves it)."""
    pad = params.margin_samples(rate)
    units, width, channels = templates.shape
    out = np.empty((units, width + 2 * pad, channels), np.float32)
    for u in range(units):
        padded = np.zeros((width + 2 * pad, channels), np.float32)
        padded[pad : pad + width] = templates[u]
        out[u] = preprocess(padded, rate, params)
    return out, pad


def bound(name: str, data: Path, params: DetectionParams) -> list[dict]:
    truth = dict(np.load(data / f"{name}.truth.npz"))
    reader = LocalRecording((data / f"{name}.bin", data / f"{name}.json")).open()
    info = reader.info
    rate = info.sampling_rate_hz
    locations = np.asarray(info.channel_locations_um, dtype=np.float64)
    noise, _, gains, _ = learn_recording(reader.read, info.n_samples, rate, params.model_copy(update={"peel": False}),
                                         info.gain_uv, info.offset_uv)
    raw = reader.read(0, info.n_samples)
    ref = np.empty(raw.shape[0], np.float32)
    x = preprocess(raw, rate, params, info.gain_uv, info.offset_uv, reference_gains=gains, reference_out=ref)
    # what detection does not read (bad electrodes, clipped samples, artefacts)
    blank(x, raw, noise, rate, artefact_mad=params.artefact_mad,
          made=Made(filter_sos(rate, params), info.gain_uv, info.offset_uv, params.reference, ref, gains),
          channel_locations_um=locations)
    del raw
    reader.close()
    found = find_peaks(x, rate, params, noise_uv=noise, channel_locations_um=locations)
    gt_found, _ = match(found.sample_index, found.channel_index, truth, rate)

    shapes, pad = filtered_templates(truth["templates"], rate, params)
    first = truth["sample_index"].astype(np.int64) - int(truth["nbefore"]) - pad
    for start, unit in zip(first[gt_found], truth["unit_index"][gt_found]):
        lo, hi = max(start, 0), min(start + shapes.shape[1], x.shape[0])
        x[lo:hi] -= shapes[unit, lo - start : hi - start]
    hidden = find_peaks(x, rate, params, noise_uv=noise, channel_locations_um=locations)
    both = (np.concatenate([found.sample_index, hidden.sample_index]),
            np.concatenate([found.channel_index, hidden.channel_index]))
    return [
        {
            "recording": name,
            "method": "neurocyte --no-peel (in proc.)",
            **score(found.sample_index, found.channel_index, truth, rate),
        },
        {"recording": name, "method": "+ hidden spikes (bound)", **score(*both, truth, rate)},
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "neurocyte-bench")
    data = ap.parse_args().data
    if not SI_PY.exists():
        raise SystemExit("SpikeInterface's environment is missing: run `make bench` (it builds .bench-venv)")
    params = DetectionParams()
    rows = []
    for dataset in DATASETS:
        ensure_data(data, dataset)
        started = time.perf_counter()
        rows += bound(dataset[0], data, params)
        print(f"  {dataset[0]}: {time.perf_counter() - started:.0f} s", flush=True)
    latest = sorted((HERE / "results").glob("detection-*.json"))
    if latest:  # SpikeInterface's rows from the last bench.py run, on the same files
        si_rows = json.loads(latest[-1].read_text())["rows"]
        rows += [
            r
            for r in si_rows
            if (r["method"].startswith("SI ") or r["method"] == "neurocyte detect")
            and r["recording"] in {d[0] for d in DATASETS}
        ]
    rows.sort(key=lambda r: r["recording"])
    print(f"\n{'recording':<18}{'method':<32}{'detections':>11}{'recall':>8}{'precision':>10}{'rec SNR>=5':>11}")
    for r in rows:
        print(
            f"{r['recording']:<18}{r['method']:<32}{r['detections']:>11}{r['recall']:>8.3f}{r['precision']:>10.3f}"
            f"{r['recall_snr_ge_5']:>11.3f}"
        )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = HERE / "results" / f"overlap-bound-{stamp}.json"
    out.write_text(
        json.dumps(
            {"rows": rows, "params": params.model_dump(), "si_rows_from": latest[-1].name if latest else None}, indent=1
        )
    )
    print(f"\nwritten {out.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
