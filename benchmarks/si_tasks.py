"""The SpikeInterface side of `make bench`, run with .bench-venv/bin/python (spikeinterface
pins zarr<3, so it never shares an environment with Neurocyte).

    si_tasks.py generate OUT_DIR NAME --channels 64 --seconds 60 --rate 20000 --units 24 [--family F]
        ground truth, written as int16 binary + JSON sidecar (a format `neurocyte detect`
        reads) + NAME.truth.npz (spike times and units, and the units' templates). Families
        (see FAMILIES): si (spikeinterface.generate_ground_truth_recording as it comes), dense,
        nuisance, bursting, hybrid (needs OUT_DIR/NAME.background.npy: real noise in uV).
        Every family is seeded: the same files on every machine.
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


FAMILIES = {
    "si": "spikeinterface.generate_ground_truth_recording, its defaults (2 columns, 20 um pitch, 5 uV noise)",
    "dense": "MaxWell-like grid: 16 x 16 electrodes at 17.5 um pitch, 120 units, 5 uV noise",
    "grid30": "a square grid of 8 x 8 electrodes at 30 um pitch, 25 units, 5 uV noise (another array's spacing)",
    "nuisance": "as si, plus 50 Hz mains hum with harmonics to 1 kHz and common-mode noise (each with a gain "
                "per electrode within +-15 %), DC offsets, a dead, a hot (10x noise) and a saturating channel",
    "common_mode": "as nuisance, with 5x the common-mode noise (40 uV rms, white, each electrode's gain within "
                   "+-15 %): the median reference leaves an electrode's share of it",
    "bursting": "units that fire in bursts (4-8 spikes, 4-8 ms apart) with the amplitude shrinking within a "
                "burst (x0.85 per spike, down to half), and slow drift (20 um over the recording, in 10 steps)",
    "bursting_grid": "as bursting (with the drift), on an 8 x 8 grid at 17.5 um with 30 units and 7 uV noise: "
                     "bursts on a dense array, where a large spike's far field reaches the electrodes around it",
    "nuisance_grid": "as nuisance, on an 8 x 8 grid at 30 um with 25 units and 8 uV noise",
    "hybrid": "known templates (SNR 4-20, each on one electrode as at this pitch) injected into real Multi "
              "Channel Systems noise (8 real channels, mirror-tiled in time and shifted per block to 64 channels, "
              "8 x 8 at 200 um)",
}


def generate(out: Path, name: str, channels: int, seconds: float, rate: float, units: int, seed: int,
             truth_only: bool = False, family: str = "si") -> None:
    import spikeinterface.core as si

    noise_uv = 5.0
    out.mkdir(parents=True, exist_ok=True)
    if family == "si":
        rec, sorting = si.generate_ground_truth_recording(
            durations=[seconds], sampling_frequency=rate, num_channels=channels, num_units=units,
            noise_kwargs={"noise_levels": noise_uv, "strategy": "on_the_fly"}, seed=seed)
        templates = rec.templates  # InjectTemplatesRecording's (units, samples, channels) array
        locations = rec.get_channel_locations()
        spikes = sorting.to_spike_vector()
        spike_factor = np.ones(spikes.size)
        nbefore = int(rec._kwargs["nbefore"])
    else:
        rec, templates, locations, spikes, spike_factor, nbefore, noise_uv = _family(
            family, out, name, channels, seconds, rate, units, seed)
    if not truth_only:
        write_binary(rec, out, name, rate, channels, locations, family, seed)
    peak_channel = np.abs(templates).max(axis=1).argmax(axis=1)
    amplitude = np.abs(templates).max(axis=(1, 2))
    # templates[u, nbefore] is the template's sample at the spike time; a spike's SNR is its
    # unit's template amplitude times the spike's own factor, over the noise
    np.savez(out / f"{name}.truth.npz", sample_index=spikes["sample_index"], unit_index=spikes["unit_index"],
             peak_channel=peak_channel, snr=amplitude / noise_uv, channel_locations_um=locations[:, :2],
             spike_snr=(amplitude[spikes["unit_index"]] * spike_factor / noise_uv).astype(np.float32),
             templates=templates.astype(np.float32), nbefore=nbefore, family=family)
    print(json.dumps({"name": name, "family": family, "spikes": int(spikes.size), "units": int(templates.shape[0]),
                      "snr_min": float((amplitude / noise_uv).min()), "snr_max": float((amplitude / noise_uv).max())}))


GRID_PITCH_UM = {"dense": 17.5, "grid30": 30.0, "bursting_grid": 17.5, "nuisance_grid": 30.0}
NOISE_UV = {"bursting_grid": 7.0, "nuisance_grid": 8.0}  # the generator's white noise; 5 uV elsewhere


def _grid(columns: int, rows: int, pitch_um: float) -> np.ndarray:
    return np.array([[x * pitch_um, y * pitch_um] for y in range(rows) for x in range(columns)], float)


def _family(family: str, out: Path, name: str, channels: int, seconds: float, rate: float, units: int, seed: int):
    """(recording, templates, locations, spike vector, per-spike amplitude factor, nbefore, noise uV)."""
    from probeinterface import generate_multi_columns_probe
    from spikeinterface.core import NumpyRecording, NumpySorting
    from spikeinterface.core.generate import (
        InjectTemplatesRecording,
        generate_sorting,
        generate_templates,
        generate_unit_locations,
    )
    from spikeinterface.generation.noise_tools import NoiseGeneratorRecording

    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    ms_before, ms_after = 1.0, 3.0
    nbefore = int(ms_before * rate / 1000)
    if family in GRID_PITCH_UM:
        side = int(round(np.sqrt(channels)))
        locations = _grid(side, channels // side, GRID_PITCH_UM[family])
    elif family == "hybrid":
        locations = _grid(8, channels // 8, 200.0)
    else:  # as the si family's probe
        probe = generate_multi_columns_probe(num_columns=2, num_contact_per_column=channels // 2, xpitch=20,
                                             ypitch=20)
        locations = probe.contact_positions[:, :2].astype(float)
    steps = 10 if family.startswith("bursting") else 1  # drift: each unit at `steps` positions, in turn
    unit_loc = generate_unit_locations(units, locations, margin_um=10.0, minimum_z=5.0, maximum_z=50.0,
                                       minimum_distance=10.0 if family == "dense" else 20.0, seed=seed)
    if steps > 1:  # 20 um along y over the recording
        unit_loc = np.concatenate([unit_loc + [0.0, 20.0 * k / (steps - 1), 0.0] for k in range(steps)])
    templates = generate_templates(locations, unit_loc, rate, ms_before, ms_after, seed=seed)
    if steps > 1:  # the same unit's shape at each position (generate_templates draws per row)
        templates = generate_templates(locations, unit_loc, rate, ms_before, ms_after, seed=seed,
                                       unit_params=_repeat_params(units, steps, seed))
    if family == "hybrid":
        background = np.load(out / f"{name}.background.npy")[:n]
        noise_uv = float(np.median(np.median(np.abs(background - np.median(background, 0)), 0) / 0.6745))
        # generate_templates' spikes still reach 40 % of their size 200 um away, where a real
        # one has faded into the noise: an MEA with this pitch sees a neuron on one electrode
        peak_channel = np.abs(templates).max(axis=1).argmax(axis=1)
        far = np.linalg.norm(locations[None, :, :] - locations[peak_channel][:, None, :], axis=2) > 100.0
        templates = np.where(far[:, None, :], 0.0, templates)
        peak = np.abs(templates).max(axis=(1, 2))
        templates = templates * (rng.uniform(4.0, 20.0, units) * noise_uv / peak)[:, None, None]
        parent = NumpyRecording([background.astype(np.float32)], rate)
    else:
        noise_uv = NOISE_UV.get(family, 5.0)
        parent = NoiseGeneratorRecording(num_channels=channels, sampling_frequency=rate, durations=[seconds],
                                         dtype="float32", seed=seed, noise_block_size=int(rate),
                                         noise_levels=noise_uv, strategy="on_the_fly")
    if family.startswith("bursting"):
        samples, labels, factor = _bursting_trains(units, n, rate, steps, rng)
        sorting = NumpySorting.from_samples_and_labels([samples], [labels], rate,
                                                       unit_ids=np.arange(units * steps))
    else:
        sorting = generate_sorting(num_units=units, sampling_frequency=rate, durations=[seconds], firing_rates=5.0,
                                   refractory_period_ms=4.0, seed=seed)
        factor = None
    spikes = sorting.to_spike_vector()
    if factor is None:
        factor = np.ones(spikes.size)
    else:  # to_spike_vector orders by sample then unit: take the factors along
        order = np.lexsort((labels, samples))
        factor = factor[order]
        assert np.array_equal(samples[order], spikes["sample_index"])
    # spikes too near the ends would be cut off; dropping them keeps the truth honest
    inside = (spikes["sample_index"] >= nbefore) & (spikes["sample_index"] < n - templates.shape[1])
    sorting = NumpySorting.from_samples_and_labels([spikes["sample_index"][inside]], [spikes["unit_index"][inside]],
                                                   rate, unit_ids=np.arange(templates.shape[0]))
    spikes, factor = sorting.to_spike_vector(), factor[inside]
    rec = InjectTemplatesRecording(sorting, templates.astype(np.float32), nbefore=nbefore,
                                   amplitude_factor=factor.astype(np.float32), parent_recording=parent,
                                   num_samples=[n])
    locations3 = np.column_stack([locations, np.zeros(len(locations))])
    return rec, templates, locations3, spikes, factor, nbefore, noise_uv


def _repeat_params(units: int, steps: int, seed: int) -> dict:
    """The same random shape parameters for each unit at every drift position."""
    from spikeinterface.core.generate import _ensure_unit_params

    one = _ensure_unit_params({}, units, seed)
    return {k: np.tile(np.asarray(v), steps) for k, v in one.items() if v[0] is not None}


def _bursting_trains(units: int, n: int, rate: float, steps: int, rng: np.random.Generator):
    """Per unit: tonic Poisson firing at 1-3 Hz plus bursts (Poisson, 0.3-0.6 per second) of 4-8
    spikes 4-8 ms apart, the k-th spike of a burst at 0.85**k of the amplitude (at least half).
    A spike in drift step k belongs to sub-unit unit + k * units. At least 4 ms between spikes."""
    samples, labels, factors = [], [], []
    for u in range(units):
        tonic = np.cumsum(rng.exponential(rate / rng.uniform(1, 3), 200))
        times = [(t, 1.0) for t in tonic[tonic < n]]
        starts = np.cumsum(rng.exponential(rate / rng.uniform(0.3, 0.6), 100))
        for s in starts[starts < n]:
            t = s
            for k in range(int(rng.integers(4, 9))):
                times.append((t, max(0.5, 0.85**k)))
                t += rng.uniform(4, 8) * rate / 1000
        times.sort()
        last = -1e18
        for t, f in times:
            if t - last >= 0.004 * rate and t < n:
                step = min(steps - 1, int(t * steps // n))
                samples.append(int(t))
                labels.append(u + step * units)
                factors.append(f)
                last = t
    return np.array(samples, np.int64), np.array(labels, np.int64), np.array(factors)


def write_binary(rec, out: Path, name: str, rate: float, channels: int, locations: np.ndarray,
                 family: str = "si", seed: int = 0) -> None:
    step = int(rate)  # one second at a time: bounded memory
    nuisance = _Nuisance(channels, rate, seed, 40.0 if family == "common_mode" else 8.0) \
        if family in ("nuisance", "common_mode", "nuisance_grid") else None
    with open(out / f"{name}.bin", "wb") as f:
        n = rec.get_num_samples()
        for start in range(0, n, step):
            x = rec.get_traces(start_frame=start, end_frame=min(n, start + step))
            if nuisance is not None:
                x = nuisance.add(x, start)
            np.clip(np.round(x / GAIN_UV), -32768, 32767).astype("<i2").tofile(f)
    (out / f"{name}.json").write_text(json.dumps({
        "sampling_rate_hz": rate, "n_channels": channels, "dtype": "int16", "gain_uv": GAIN_UV,
        "offset_uv": 0.0, "layout": "samples_by_channels",
        "channel_locations_um": [[float(x), float(y)] for x, y in locations[:, :2]]}))


class _Nuisance:
    """What a real MEA adds to the neurons (uV, before the int16 steps of 0.1 uV clip at
    +-3.28 mV): mains hum at 50 Hz with harmonics to 1 kHz (60 uV at 50 Hz, 60/k at the k-th),
    common-mode noise (white, 8 uV rms unless told, and a slow wander), both with a gain per electrode
    drawn within 0.85-1.15, DC offsets within +-1 mV, and three bad electrodes: a dead one
    (its offset only), a hot one (50 uV of its own noise) and one that saturates (a 2 Hz
    swing of 4 mV that clips at the rails)."""

    def __init__(self, channels: int, rate: float, seed: int, common_uv: float = 8.0):
        rng = np.random.default_rng(seed + 1)
        self.rate, self.seed, self.common_uv = rate, seed, common_uv
        self.gain = rng.uniform(0.85, 1.15, channels).astype(np.float32)
        self.hum_gain = rng.uniform(0.85, 1.15, channels).astype(np.float32)
        self.offset = rng.uniform(-1000, 1000, channels).astype(np.float32)
        self.phase = rng.uniform(0, 2 * np.pi, 21)
        self.dead, self.hot, self.saturating = channels // 4, channels // 2, 3 * channels // 4

    def add(self, x: np.ndarray, start: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, start])
        t = (start + np.arange(x.shape[0])) / self.rate
        hum = sum(60.0 / k * np.sin(2 * np.pi * 50 * k * t + self.phase[k]) for k in range(1, 21))
        common = rng.normal(0, self.common_uv, x.shape[0]) + 30.0 * np.sin(2 * np.pi * 0.3 * t)
        y = x + hum[:, None] * self.hum_gain + common[:, None] * self.gain + self.offset
        y[:, self.dead] = self.offset[self.dead]
        y[:, self.hot] += rng.normal(0, 50.0, x.shape[0])
        y[:, self.saturating] += 4000.0 * np.sin(2 * np.pi * 2.0 * t)
        return y.astype(np.float32)


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
    g.add_argument("--family", choices=sorted(FAMILIES), default="si")
    d = sub.add_parser("detect")
    d.add_argument("bin", type=Path)
    d.add_argument("json", type=Path)
    d.add_argument("method", choices=["by_channel", "locally_exclusive"])
    d.add_argument("out", type=Path)
    a = ap.parse_args()
    if a.cmd == "generate":
        generate(a.out, a.name, a.channels, a.seconds, a.rate, a.units, a.seed, a.truth_only, a.family)
    else:
        detect(a.bin, a.json, a.method, a.out)


if __name__ == "__main__":
    sys.exit(main())
