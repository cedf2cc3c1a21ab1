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
    # Electrical stimulation (0: none): every this many seconds a pulse on every electrode (the
    # artefact: 0.2 ms up, 1.3 ms down while the amplifier recovers, then back; 300-900 uV, larger
    # nearer the stimulating electrode), and `stimulus_fraction` of the units answer
    # `stimulus_answer` of the stimuli with a spike `stimulus_latency_ms` (+- 1.5 ms) later.
    stimulus_every_s: float = 0.0
    stimulus_fraction: float = 0.5
    stimulus_answer: float = 0.7
    stimulus_latency_ms: float = 12.0


@dataclass
class GroundTruth:
    spec: SyntheticSpec
    unit_channel: np.ndarray  # peak channel of each unit
    unit_amplitude_uv: np.ndarray
    spike_samples: list[np.ndarray] = field(default_factory=list)  # per unit, sorted
    stimulus_samples: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # each pulse's start
    responding_units: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

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
    stimuli, responding = stimulus_schedule(spec, n_samples), np.zeros(0, np.int64)
    if stimuli.size:  # a generator of its own: recordings without stimuli stay as they were
        srng = np.random.default_rng(spec.seed + 3)
        responding = np.flatnonzero(srng.uniform(size=len(trains)) < spec.stimulus_fraction)
        for u in responding:
            hit = stimuli[srng.uniform(size=stimuli.size) < spec.stimulus_answer]
            lag = (spec.stimulus_latency_ms + srng.uniform(-1.5, 1.5, hit.size)) * 1e-3 * spec.sampling_rate_hz
            times = np.sort(np.concatenate([trains[u], hit + lag.astype(np.int64)]))
            keep = np.concatenate([[True], np.diff(times) > refractory])
            trains[u] = times[keep & (times > wlen) & (times < n_samples - 2 * wlen)]
    return GroundTruth(spec, unit_channel.astype(np.int64), amps, trains, stimuli, responding.astype(np.int64))


def stimulus_schedule(spec: SyntheticSpec, n_samples: int) -> np.ndarray:
    """Where each stimulation pulse starts (samples): every stimulus_every_s from half of it."""
    if spec.stimulus_every_s <= 0:
        return np.zeros(0, np.int64)
    every = spec.stimulus_every_s * spec.sampling_rate_hz
    return (np.arange(every / 2, n_samples - 0.2 * spec.sampling_rate_hz, every)).astype(np.int64)


def _stimulus_pulse(fs: float) -> np.ndarray:
    """The artefact's shape in uV for a gain of 1 (as the unit tests' stimulated traces)."""
    k = np.arange(int(round(0.01 * fs))) / fs * 1e3  # 10 ms
    return np.where(k < 0.2, 300.0, np.where(k < 1.5, -600.0, -250.0 * np.exp(-(k - 1.5) / 0.75))).astype(np.float32)


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
    pulse = _stimulus_pulse(fs)
    pulse_gain = np.random.default_rng(spec.seed + 4).uniform(0.5, 1.5, spec.n_channels).astype(np.float32)
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
            for onset in gt.stimulus_samples[(gt.stimulus_samples + pulse.size > start) & (gt.stimulus_samples < stop)]:
                lo, hi = max(onset, start), min(onset + pulse.size, stop)
                x[lo - start : hi - start] += pulse[lo - onset : hi - onset, None] * pulse_gain[None, :]
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
