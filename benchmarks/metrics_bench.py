"""Summary speed: 1,000,000 spikes over 1,024 electrodes (issue target: under 10 s, one core).
Part of `make bench`; prints the figure beside the target and writes it under results/."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core

import numpy as np  # noqa: E402

from neurocyte_shared.science.metrics import summarize  # noqa: E402
from neurocyte_shared.science.report import figures  # noqa: E402
from neurocyte_shared.science.table import SpikeTable  # noqa: E402

N_SPIKES, N_CH, DURATION_S, FS = 1_000_000, 1024, 300.0, 20_000.0
TARGET_S = 10.0


def spikes() -> SpikeTable:
    """Poisson background plus network bursts every ~5 s in which most electrodes fire 5-10
    spikes: bursts, network bursts and synchrony all have work to do."""
    rng = np.random.default_rng(0)
    burst_times = np.arange(2.0, DURATION_S, 5.0)
    per_burst = rng.integers(5, 11, size=(burst_times.size, N_CH))
    t_b = np.concatenate([bt + rng.uniform(0, 0.2, n.sum()) for bt, n in zip(burst_times, per_burst)])
    c_b = np.concatenate([np.repeat(np.arange(N_CH), n) for n in per_burst])
    n_bg = N_SPIKES - t_b.size
    t = np.concatenate([t_b, rng.uniform(0, DURATION_S, n_bg)])
    c = np.concatenate([c_b, rng.integers(0, N_CH, n_bg)])
    order = np.argsort(t)
    return SpikeTable((t[order] * FS).astype(np.int64), c[order].astype(np.int32),
                      rng.normal(-60, 15, t.size).astype(np.float32))


def main() -> None:
    table = spikes()
    locations = tuple((float(i % 32) * 17.5, float(i // 32) * 17.5) for i in range(N_CH))
    started = time.perf_counter()
    summary = summarize(table, recording_id="bench", recording_name="bench", format="raw_binary", n_channels=N_CH,
                        sampling_rate_hz=FS, n_samples=int(DURATION_S * FS),
                        channel_ids=tuple(str(i) for i in range(N_CH)), channel_locations_um=locations,
                        detection_parameters={})
    summary_s = time.perf_counter() - started
    started = time.perf_counter()
    figures(summary, table)
    figures_s = time.perf_counter() - started
    print(f"{'summary of':<28} {'seconds':>8} {'target':>8}")
    print(
        f"{len(table):,} spikes x {N_CH} el.  {summary_s:>8.2f} {TARGET_S:>8.1f}   (pictures: {figures_s:.2f} s more)"
    )
    print(
        f"  found: {summary.active_electrodes} active, {summary.bursting_electrodes} bursting, "
        f"{summary.network.count} network bursts, STTC {summary.synchrony.sttc_mean:.3f}"
    )
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    path = out / f"metrics-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(
        json.dumps(
            {
                "spikes": len(table),
                "electrodes": N_CH,
                "summary_s": summary_s,
                "figures_s": figures_s,
                "target_s": TARGET_S,
                "network_bursts": summary.network.count,
            },
            indent=2,
        )
    )
    print(f"written {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")


if __name__ == "__main__":
    main()
