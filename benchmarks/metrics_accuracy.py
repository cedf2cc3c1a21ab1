"""The metrics against known answers (a benchmark of accuracy, not a test): irregular firing,
planted bursts, tonic firing, independent and planted network bursts, the default burst rule
("surprise") beside the fixed max-interval rule; and the response to stimulation (electrodes
blind to the stimuli, and planted responses). Prints a table (the README's) and writes
benchmarks/results/metrics-accuracy-<time>.json.

    .venv/bin/python benchmarks/metrics_accuracy.py"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from neurocyte_shared.science.metrics import MetricsParams, bursts, summarize
from neurocyte_shared.science.table import SpikeTable

HERE = Path(__file__).resolve().parent
DURATION = 120.0


def poisson(rng, rate, duration=DURATION):
    return np.sort(rng.uniform(0, duration, rng.poisson(rate * duration)))


def in_bursts(train, p):
    s, e = bursts(train, DURATION, p)
    return 100.0 * float((e - s + 1).sum()) / max(train.size, 1)


def planted(rng, background_hz, p, repeats=5):
    found = total = 0
    errors = []
    for _ in range(repeats):
        onsets = np.arange(3.0, DURATION - 3.0, 6.0) + rng.uniform(-1, 1, 19)
        spans = rng.uniform(0.1, 0.3, onsets.size)
        truth = [np.sort(a + rng.uniform(0, d, rng.integers(8, 16))) for a, d in zip(onsets, spans)]
        train = np.sort(np.concatenate(truth + [poisson(rng, background_hz)]))
        s, e = bursts(train, DURATION, p)
        for b in truth:
            total += 1
            hit = [(train[a], train[z]) for a, z in zip(s, e) if train[a] <= b[-1] and train[z] >= b[0]]
            if len(hit) == 1:
                found += 1
                errors.append(abs((hit[0][1] - hit[0][0]) - (b[-1] - b[0])) / (b[-1] - b[0]))
    return 100.0 * found / total, 100.0 * float(np.median(errors)) if errors else float("nan")


FS = 20_000.0


def summary_of(trains: list[np.ndarray], duration: float, **kw):
    """The summary of spike trains (s), one per electrode on a line 20 um apart, at FS."""
    n = len(trains)
    t = np.concatenate(trains)
    c = np.concatenate([np.full(x.size, i, np.int32) for i, x in enumerate(trains)])
    o = np.argsort(t)
    table = SpikeTable((t[o] * FS).astype(np.int64), c[o], np.full(t.size, -50.0, np.float32))
    return summarize(table, recording_id="k", recording_name="k", format="binary", n_channels=n, sampling_rate_hz=FS,
                     n_samples=int(duration * FS), channel_ids=tuple(map(str, range(n))),
                     channel_locations_um=tuple((i * 20.0, 0.0) for i in range(n)), detection_parameters={}, **kw)


def network(rng, p, planted_bursts: bool):
    n, trains = 32, []
    times = np.arange(5.0, DURATION, 10.0)
    for i in range(n):
        t = poisson(rng, rng.uniform(1, 10))
        if planted_bursts and i < 24:  # 3/4 of the electrodes fire 8 spikes within 0.1 s
            t = np.sort(np.concatenate([t] + [a + rng.uniform(0, 0.1, 8) for a in times]))
        trains.append(t)
    s = summary_of(trains, DURATION, params=p)
    return s.network.count if s.network else 0, times.size if planted_bursts else 0


def stimulated(rng, answer_share: float, n=32, responding=8, latency_s=0.012):
    """A recording with 100 stimuli (0.5-1.5 s apart) over Poisson firing at 1-20 Hz; the first
    `responding` electrodes answer `answer_share` of the stimuli with a spike latency_s +- 1 ms
    later. -> (electrodes called responding that do not, planted ones found, their latency and
    share-of-stimuli errors)."""
    stimuli = 1.0 + np.cumsum(rng.uniform(0.5, 1.5, 100))
    duration = float(stimuli[-1] + 2.0)
    trains = []
    for i in range(n):
        t = poisson(rng, rng.uniform(1, 20), duration)
        if i < responding and answer_share > 0:
            hit = stimuli[rng.uniform(size=stimuli.size) < answer_share]
            t = np.sort(np.concatenate([t, hit + rng.normal(latency_s, 0.001, hit.size)]))
        trains.append(t)
    s = summary_of(trains, duration, artefact_samples=(stimuli * FS).astype(np.int64))
    found = [e for e in s.stimulus_response.electrodes if e.channel_index < responding and answer_share > 0]
    false = s.stimulus_response.responding_electrodes - len(found)
    return (false, len(found), [abs(e.median_latency_ms - 1e3 * latency_s) for e in found],
            [abs(e.response_probability - answer_share) for e in found])


def stimulus_rows(repeats=20) -> dict:
    rng = np.random.default_rng(31)
    out = {"recordings": repeats, "electrodes": 32, "stimuli": 100}
    false = [stimulated(rng, 0.0)[0] for _ in range(repeats)]
    out["independent_electrodes_called_responding"] = int(sum(false))
    for share in (0.2, 0.6):
        runs = [stimulated(rng, share) for _ in range(repeats)]
        out[f"answer{int(share * 100)}_pct_found"] = 100.0 * sum(r[1] for r in runs) / (8 * repeats)
        out[f"answer{int(share * 100)}_false_electrodes"] = int(sum(r[0] for r in runs))
        lat = [x for r in runs for x in r[2]]
        share_err = [x for r in runs for x in r[3]]
        out[f"answer{int(share * 100)}_median_latency_err_ms"] = float(np.median(lat)) if lat else float("nan")
        out[f"answer{int(share * 100)}_median_share_err"] = float(np.median(share_err)) if share_err else float("nan")
    return out


def main() -> None:
    rows = []
    for method in ("surprise", "max_interval"):
        p, rng = MetricsParams(burst_method=method), np.random.default_rng(11)
        row = {"method": method}
        for rate in (1, 5, 10, 20):
            row[f"poisson_{rate}hz_pct_in_bursts"] = in_bursts(poisson(rng, rate), p)
        for length in (60.0, 300.0):  # electrodes with at least one burst: what a report's count says
            trains = [poisson(rng, r, length) for r in np.repeat(np.linspace(1, 20, 20), 5)]
            row[f"poisson_{int(length)}s_pct_electrodes_bursting"] = 100.0 * float(np.mean(
                [bursts(x, length, p)[0].size > 0 for x in trains]))
        row["tonic_10hz_pct_in_bursts"] = in_bursts(np.arange(0, DURATION, 0.1) + 0.001, p)
        for bg in (1, 3, 5):
            row[f"planted_bg{bg}hz_pct_found"], row[f"planted_bg{bg}hz_duration_err_pct"] = planted(rng, bg, p)
        row["independent_network_bursts"] = network(np.random.default_rng(21), p, False)[0]
        # the same trains with the mean + 3 SD rule alone (no test against independent chance)
        row["independent_network_bursts_sd_rule_only"] = network(
            np.random.default_rng(21), p.model_copy(update={"network_max_chance": 1.0}), False)[0]
        got, want = network(rng, p, True)
        row["planted_network_bursts_found"], row["planted_network_bursts"] = got, want
        rows.append(row)
    keys = [k for k in rows[0] if k != "method"]
    print(f"{'known answer':<38}" + "".join(f"{r['method']:>14}" for r in rows))
    for k in keys:
        print(f"{k:<38}" + "".join(f"{r[k]:>14.1f}" if isinstance(r[k], float) else f"{r[k]:>14}" for r in rows))
    stim = stimulus_rows()
    print(f"\nresponse to stimulation ({stim['recordings']} recordings of {stim['electrodes']} electrodes at 1-20 Hz, "
          f"{stim['stimuli']} stimuli; 8 electrodes answer 20 % or 60 % of them 12 +- 1 ms later)")
    for k, v in stim.items():
        print(f"{k:<44}{v:>10.3f}" if isinstance(v, float) else f"{k:<44}{v:>10}")
    out = HERE / "results" / f"metrics-accuracy-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps({"bursts": rows, "stimulus_response": stim}, indent=1))
    print(f"-> {out.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
