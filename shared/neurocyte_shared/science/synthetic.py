"""Synthetic MEA recordings with known spikes (ground truth), written in bounded memory.

Units sit near electrodes of a square grid; each fires a Poisson train with a refractory
period and a biphasic extracellular waveform whose amplitude decays with distance from the
unit. Noise is white Gaussian plus 50 Hz mains hum common to every channel (which the
bandpass and common reference remove, as on a real rig). The file is the documented
raw binary + JSON sidecar format.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class SyntheticSpec:
    n_channels: int = 64
    duration_s: float = 60.0
    sampling_rate_hz: float = 20_000.0
    n_units: int = 32
    pitch_um: float = 40.0
    noise_uv: float = 6.0
    amplitude_uv: tuple[float, float] = (70.0, 200.0)
    rate_hz: tuple[float, float] = (1.0, 12.0)
    decay_um: float = 25.0
    refractory_ms: float = 2.5
    gain_uv: float = 0.195
    hum_uv: float = 20.0
    seed: int = 0
    # Network bursts (0: none): every this many seconds, about `network_fraction` of the
    # units fire a burst of 5-8 spikes 15-30 ms apart, as cultured networks do.
    network_burst_every_s: float = 0.0
    network_fraction: float = 0.7


@dataclass
class GroundTruth:
    spec: SyntheticSpec
    unit_channel: np.ndarray  # peak channel of each unit
    unit_amplitude_uv: np.ndarray
    spike_samples: list[np.ndarray] = field(default_factory=list)  # per unit, sorted

    @property
    def n_samples(self) -> int:
        return int(round(self.spec.duration_s * self.spec.sampling_rate_hz))

    def spikes_per_channel(self) -> np.ndarray:
        counts = np.zeros(self.spec.n_channels, np.int64)
        for ch, s in zip(self.unit_channel, self.spike_samples):
            counts[ch] += s.size
        return counts

    def to_json(self) -> dict:
        return {
            "unit_channel": self.unit_channel.tolist(),
            "unit_amplitude_uv": self.unit_amplitude_uv.tolist(),
            "spike_samples": [s.tolist() for s in self.spike_samples],
        }


def grid_locations(n_channels: int, pitch_um: float) -> np.ndarray:
    cols = int(np.ceil(np.sqrt(n_channels)))
    idx = np.arange(n_channels)
    return np.stack([(idx % cols) * pitch_um, (idx // cols) * pitch_um], axis=1).astype(np.float64)


def _waveform(fs: float) -> np.ndarray:
    """A 2.5 ms biphasic extracellular spike, trough -1 at 0.6 ms."""
    t = np.arange(int(round(2.5e-3 * fs))) / fs * 1e3
    w = -np.exp(-(((t - 0.6) / 0.13) ** 2)) + 0.35 * np.exp(-(((t - 1.1) / 0.35) ** 2))
    return (w / -w.min()).astype(np.float32)


def ground_truth(spec: SyntheticSpec) -> GroundTruth:
    rng = np.random.default_rng(spec.seed)
    n_samples = int(round(spec.duration_s * spec.sampling_rate_hz))
    unit_channel = rng.choice(spec.n_channels, size=min(spec.n_units, spec.n_channels), replace=False)
    amps = rng.uniform(*spec.amplitude_uv, size=unit_channel.size)
    refractory = int(spec.refractory_ms * 1e-3 * spec.sampling_rate_hz)
    trains = []
    wlen = _waveform(spec.sampling_rate_hz).size
    for _ in unit_channel:
        rate = rng.uniform(*spec.rate_hz)
        n = rng.poisson(rate * spec.duration_s)
        isi = rng.exponential(spec.sampling_rate_hz / max(rate, 1e-9), size=n * 2 + 10) + refractory
        times = np.cumsum(isi).astype(np.int64)
        if spec.network_burst_every_s > 0:
            events = []
            for start in np.arange(spec.network_burst_every_s / 2, spec.duration_s, spec.network_burst_every_s):
                if rng.uniform() < spec.network_fraction:
                    k = rng.integers(5, 9)
                    onset = start + rng.uniform(0, 0.05)
                    events.append(onset + np.cumsum(rng.uniform(0.015, 0.03, k)))
            if events:
                extra = (np.concatenate(events) * spec.sampling_rate_hz).astype(np.int64)
                times = np.sort(np.concatenate([times, extra]))
                keep = np.concatenate([[True], np.diff(times) > refractory])  # stay refractory
                times = times[keep]
        times = times[(times > wlen) & (times < n_samples - 2 * wlen)]
        trains.append(times)
    return GroundTruth(spec, unit_channel.astype(np.int64), amps, trains)


def write_recording(directory: Path, name: str, spec: SyntheticSpec = SyntheticSpec(),
                    block_s: float = 2.0) -> tuple[Path, Path, GroundTruth]:
    """Write NAME.bin + NAME.json under directory; returns their paths and the ground truth."""
    directory.mkdir(parents=True, exist_ok=True)
    gt = ground_truth(spec)
    rng = np.random.default_rng(spec.seed + 1)
    fs = spec.sampling_rate_hz
    loc = grid_locations(spec.n_channels, spec.pitch_um)
    # Unit positions: on their electrode, nudged by a few microns.
    unit_pos = loc[gt.unit_channel] + rng.uniform(-4, 4, size=(gt.unit_channel.size, 2))
    dist = np.linalg.norm(unit_pos[:, None, :] - loc[None, :, :], axis=-1)
    spatial = (np.exp(-dist / spec.decay_um) * gt.unit_amplitude_uv[:, None]).astype(np.float32)
    spatial[spatial < 0.02 * gt.unit_amplitude_uv[:, None]] = 0.0
    wave = _waveform(fs)
    trough = int(np.argmin(wave))
    block = int(block_s * fs)
    bin_path, json_path = directory / f"{name}.bin", directory / f"{name}.json"
    with open(bin_path, "wb") as f:
        for start in range(0, gt.n_samples, block):
            stop = min(start + block, gt.n_samples)
            n = stop - start
            x = rng.standard_normal((n, spec.n_channels), dtype=np.float32)
            x *= spec.noise_uv
            t = (np.arange(start, stop) / fs).astype(np.float32)
            x += (spec.hum_uv * np.sin(2 * np.pi * 50.0 * t))[:, None]
            for u, train in enumerate(gt.spike_samples):
                chans = np.flatnonzero(spatial[u])
                onsets = train[(train - trough + wave.size > start) & (train - trough < stop)] - trough
                for onset in onsets:  # a few spikes per block: a loop over spikes, not samples
                    lo, hi = max(onset, start), min(onset + wave.size, stop)
                    seg = wave[lo - onset : hi - onset]
                    x[lo - start : hi - start, chans] += seg[:, None] * spatial[u, chans][None, :]
            np.clip(np.round(x / spec.gain_uv), -32768, 32767, out=x)
            f.write(x.astype("<i2").tobytes())
    sidecar = {
        "sampling_rate_hz": fs,
        "n_channels": spec.n_channels,
        "dtype": "int16",
        "gain_uv": spec.gain_uv,
        "offset_uv": 0.0,
        "layout": "samples_by_channels",
        "channel_locations_um": loc.tolist(),
    }
    json_path.write_text(json.dumps(sidecar, indent=1))
    return bin_path, json_path, gt


PLATE_DOSES_UM = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


def write_plate(directory: Path, *, ec50_um: float = 1.0, hill_slope: float = 1.5, replicates: int = 2,
                duration_s: float = 20.0, n_channels: int = 16, seed: int = 0) -> Path:
    """A synthetic dose-response plate: for each of len(PLATE_DOSES_UM) x replicates wells (A1...),
    a baseline recording and one after the compound, whose units fire at the baseline rate
    times 1 / (1 + (dose / ec50_um) ** hill_slope); and plate.csv describing them. Returns
    the plate map's path. The known answer for `neurocyte experiment report` and the demo."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = ["file,stream,well,condition,compound,concentration,concentration_unit,genotype,div,replicate,"
             "baseline_file"]
    for i in range(len(PLATE_DOSES_UM) * replicates):
        well = f"{'ABCDEFGH'[i // 6]}{i % 6 + 1}"
        dose = PLATE_DOSES_UM[i % len(PLATE_DOSES_UM)]
        rate = float(rng.uniform(5.0, 8.0))
        treated = rate / (1.0 + (dose / ec50_um) ** hill_slope)
        for name, r in ((f"{well}-baseline", rate), (f"{well}-dosed", treated)):
            spec = SyntheticSpec(n_channels=n_channels, duration_s=duration_s, n_units=n_channels, rate_hz=(r, r),
                                 seed=int(rng.integers(1 << 30)), amplitude_uv=(90.0, 200.0))
            write_recording(directory, name, spec)
        replicate = i // len(PLATE_DOSES_UM) + 1
        lines.append(f"{well}-baseline.bin,,{well},baseline,,,,WT,21,{replicate},")
        lines.append(f"{well}-dosed.bin,,{well},dosed,compound X,{dose:g},uM,WT,21,{replicate},{well}-baseline.bin")
    path = directory / "plate.csv"
    path.write_text("\n".join(lines) + "\n")
    return path
