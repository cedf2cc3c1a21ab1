"""`make bench`: Neurocyte's detector against SpikeInterface's, on the same ground-truth files,
in one run. A benchmark, not a test: it prints a table and writes it as JSON under
benchmarks/results/.

For each recording (generated in .bench-venv with SpikeInterface's generators, written as
int16 binary + JSON sidecar; seven families, see si_tasks.FAMILIES: SpikeInterface's default
generator at two sizes, a dense MaxWell-like grid, a recording with a real MEA's nuisance and
the same with five times its common-mode noise, bursting and drifting units, and templates
injected into real Multi Channel Systems noise):
  - runs `neurocyte detect FILE --out spikes.parquet` (the whole command: start-up, file
    reading, noise, detection, writing) and SpikeInterface's bandpass 300-6000 -> common
    median reference -> detect_peaks (`by_channel` and `locally_exclusive`, threshold 5,
    exclude_sweep_ms 1, negative peaks, n_jobs=1) in alternating order, REPEATS times each,
    one process per run (started by measure.py), and keeps the median time and the peak
    memory (ru_maxrss of that process). SpikeInterface's time excludes its import (generous
    to it); ours includes everything. The kernels' compile cost (ahead of time, at `make
    setup`) is measured once and shown separately.
    `neurocyte detect --no-peel` runs too: what peeling costs in time and adds in recall;
    so does peeling with each of its safeguards off, and all of them (SAFEGUARDS_OFF).
  - scores every method the same way: a detection matches a ground-truth spike if it is
    within 0.4 ms and on a channel within 50 um of the unit's peak channel; each spike and
    each detection is matched at most once (closest in time first), so a second detection
    of the same spike is a false positive. "chance" is the recall of the same detections
    moved 5 ms later: what a method's detections match by coincidence (a method that reports
    every spike on each of the ~9 electrodes that see it matches nearby units' spikes so).
It also shows that our peak memory does not grow with the recording's length, and what
`--jobs 2` gains over `--jobs 1` on this machine.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from hybrid import write_background

from neurocyte_shared.science.arrays import ranges  # numpy only: loads no kernels

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SI_PY = ROOT / ".bench-venv" / "bin" / "python"
NEUROCYTE = ROOT / ".venv" / "bin" / "neurocyte"
PYTHON = ROOT / ".venv" / "bin" / "python"
MATCH_MS = 0.4
NEAR_UM = 50.0

# One default for all: every detection change is judged on every family at once (si_tasks.FAMILIES
# says what each holds). Names are kept from run to run: a file is generated once.
DATASETS = [  # name, channels, seconds, rate, units, family
    ("64ch_60s_20kHz", 64, 60.0, 20000.0, 24, "si"),
    ("384ch_30s_30kHz", 384, 30.0, 30000.0, 120, "si"),
    ("dense_256ch_30s", 256, 30.0, 20000.0, 120, "dense"),
    ("grid30_64ch_60s", 64, 60.0, 20000.0, 25, "grid30"),
    ("nuisance_64ch_60s", 64, 60.0, 20000.0, 24, "nuisance"),
    ("common_mode_64ch_60s", 64, 60.0, 20000.0, 24, "common_mode"),
    ("bursting_64ch_60s", 64, 60.0, 20000.0, 24, "bursting"),
    ("hybrid_mcs_64ch_60s", 64, 60.0, 20000.0, 24, "hybrid"),
    ("bursting_grid_64ch_60s", 64, 60.0, 20000.0, 30, "bursting_grid"),
    ("nuisance_grid_64ch_60s", 64, 60.0, 20000.0, 25, "nuisance_grid"),
]
LONG = ("64ch_240s_20kHz", 64, 240.0, 20000.0, 24, "si")  # 4x the first: memory must not grow
WIDE = ("1024ch_30s_20kHz", 1024, 30.0, 20000.0, 300, "si")  # a real array's width, for --jobs


# Each measured run's share of this machine's CPU time that the hypervisor stole (steal in
# /proc/stat): on a shared host it rises and falls within minutes, and a figure measured while
# a third of the cores went elsewhere says more about the host than about the code.
STOLEN: list[float] = []


def run_measured(cmd: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MB, stdout) of one process, measured by `measure.py` (the
    command's own peak, not this process's, which a child of it would report). stderr goes
    to a file so neither pipe can fill up."""
    with tempfile.TemporaryFile() as err, tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "measured.json"
        proc = subprocess.run([sys.executable, str(HERE / "measure.py"), str(report), *map(str, cmd)],
                              stdout=subprocess.PIPE, stderr=err)
        if proc.returncode:
            err.seek(0)
            raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{err.read().decode()[-2000:]}")
        measured = json.loads(report.read_text())
    STOLEN.append(measured["steal_share"])
    return measured["seconds"], measured["peak_mb"], proc.stdout.decode()


def ensure_data(data: Path, dataset: tuple) -> None:
    """Generate a recording and its ground truth in .bench-venv if missing (the truth alone if
    it predates the per-spike SNR: every family is seeded, so it is the same recording)."""
    name, ch, sec, rate, units, family = dataset
    truth = data / f"{name}.truth.npz"
    have_bin = (data / f"{name}.bin").exists() and (data / f"{name}.json").exists()
    if have_bin and truth.exists() and "spike_snr" in np.load(truth).files:
        return
    if family == "hybrid":
        write_background(data / f"{name}.background.npy", ch, sec, rate)
        background_binary(data, name, rate)
    print(f"generating {name} ({family} family) ...", flush=True)
    subprocess.run([str(SI_PY), str(HERE / "si_tasks.py"), "generate", str(data), name, "--channels", str(ch),
                    "--seconds", str(sec), "--rate", str(rate), "--units", str(units), "--family", family,
                    *(["--truth-only"] if have_bin and truth.exists() else [])], check=True)


def background_binary(data: Path, name: str, rate: float) -> None:
    """The hybrid family's real noise alone, in the same format as the recording, so that every
    method can be run on it: what a method finds there is the recording's own spikes."""
    from si_tasks import GAIN_UV

    x = np.load(data / f"{name}.background.npy")
    np.clip(np.round(x / GAIN_UV), -32768, 32767).astype("<i2").tofile(data / f"{name}.bg.bin")
    side = x.shape[1] // 8
    locations = [[float(200.0 * (c % 8)), float(200.0 * (c // 8))] for c in range(8 * side)]
    (data / f"{name}.bg.json").write_text(json.dumps({
        "sampling_rate_hz": rate, "n_channels": x.shape[1], "dtype": "int16", "gain_uv": GAIN_UV, "offset_uv": 0.0,
        "layout": "samples_by_channels", "channel_locations_um": locations}))


def _near(truth: dict) -> np.ndarray:
    """channels x channels: within NEAR_UM of each other."""
    loc = truth["channel_locations_um"]
    return np.linalg.norm(loc[:, None, :] - loc[None, :, :], axis=-1) <= NEAR_UM


def _spike_snr(truth: dict) -> np.ndarray:
    """Each ground-truth spike's SNR: its own where a family scales spikes, else its unit's."""
    return truth["spike_snr"] if "spike_snr" in truth else truth["snr"][truth["unit_index"]]


def match(det_samples: np.ndarray, det_channels: np.ndarray, truth: dict, rate: float) -> tuple[np.ndarray, np.ndarray]:
    """(ground-truth spike found, detection used), one-to-one, closest in time first."""
    gt_t = truth["sample_index"].astype(np.int64)
    gt_u = truth["unit_index"].astype(np.int64)
    unit_near = _near(truth)[truth["peak_channel"]]  # (units, channels)
    tol = int(round(MATCH_MS * 1e-3 * rate))
    order = np.argsort(det_samples, kind="stable")
    ds, dc = det_samples[order], det_channels[order]
    pair_gt, pair_det = ranges(np.searchsorted(ds, gt_t - tol, side="left"),
                                np.searchsorted(ds, gt_t + tol, side="right"))
    ok = unit_near[gt_u[pair_gt], dc[pair_det]]
    pair_gt, pair_det = pair_gt[ok], pair_det[ok]
    dist = np.abs(ds[pair_det] - gt_t[pair_gt])
    gt_used = np.zeros(gt_t.size, bool)
    det_used = np.zeros(ds.size, bool)
    for k in np.argsort(dist, kind="stable"):  # closest pairs first, one-to-one
        g, d = pair_gt[k], pair_det[k]
        if not gt_used[g] and not det_used[d]:
            gt_used[g] = det_used[d] = True
    det_found = np.zeros(ds.size, bool)
    det_found[order] = det_used
    return gt_used, det_found


def filtered_templates(truth: dict, rate: float) -> np.ndarray:
    """The ground-truth templates as detection sees them: bandpassed like the traces
    (no common reference: one spike moves the median of many channels by little)."""
    from neurocyte_shared.science.detection.filters import preprocess
    from neurocyte_shared.science.detection.params import DetectionParams

    raw = truth["templates"].astype(np.float32)
    pad = int(rate * 0.1)  # the filter's start-up well before and after the template
    params = DetectionParams(reference="none")
    out = np.empty_like(raw)
    for u in range(raw.shape[0]):
        x = np.zeros((raw.shape[1] + 2 * pad, raw.shape[2]), np.float32)
        x[pad : pad + raw.shape[1]] = raw[u]
        out[u] = preprocess(x, rate, params, 1.0, 0.0)[pad : pad + raw.shape[1]]
    return out


def attributed(det_samples: np.ndarray, det_channels: np.ndarray, truth: dict, rate: float) -> np.ndarray:
    """Ground-truth spikes found when each detection may count only for the spike that made it:
    the one whose (filtered, per-spike scaled) template is most negative on that channel at that
    sample. A method that reports a spike on every electrode that sees it matches a small
    neighbour's spike within 0.4 ms and 50 um through the large spike's own rows; here those
    rows count for the large spike only."""
    if "filtered" not in truth:
        truth["filtered"] = filtered_templates(truth, rate)
    f = truth["filtered"]
    width, nb = f.shape[1], int(truth["nbefore"])
    gt_t = truth["sample_index"].astype(np.int64)
    gt_u = truth["unit_index"].astype(np.int64)
    peak = np.abs(truth["templates"]).max(axis=(1, 2))
    scale = _spike_snr(truth) / peak[gt_u]  # each spike's own size (bursting units shrink), noise-free
    by_time = np.argsort(gt_t, kind="stable")
    ts = gt_t[by_time]
    t, c = det_samples.astype(np.int64), det_channels.astype(np.int64)
    det, at = ranges(np.searchsorted(ts, t - (width - 1 - nb), "left"), np.searchsorted(ts, t + nb, "right"))
    spike = by_time[at]
    value = -f[gt_u[spike], t[det] - gt_t[spike] + nb, c[det]] * scale[spike]
    best = np.lexsort((value, det))  # per detection, its largest value last
    last = np.r_[det[best][1:] != det[best][:-1], True]
    det, spike, value = det[best][last], spike[best][last], value[best][last]
    tol = int(round(MATCH_MS * 1e-3 * rate))
    hit = (value > 0) & (np.abs(t[det] - gt_t[spike]) <= tol) & _near(truth)[truth["peak_channel"][gt_u[spike]], c[det]]
    found = np.zeros(gt_t.size, bool)
    found[spike[hit]] = True
    return found


def fmt(seconds: list[float]) -> str:
    return " ".join(f"{s:.2f}" for s in seconds)


# --jobs 1 / --jobs 2 pairs per recording. With 7, the 64-channel median moved between 1.56x and
# 1.72x from one run to the next on this machine. More pairs narrow the estimate, not the
# machine: four runs of 30 pairs in one afternoon gave 1.66x to 1.80x.
JOB_PAIRS = 15


def paired_jobs(name: str, run, pairs: int, where: str = "") -> dict:
    """`run(jobs)` -> seconds for --jobs 1 and --jobs 2 alternately, `pairs` times each, so that
    each --jobs 1 run has a --jobs 2 run beside it in time: the median times, the median of
    the pairs' ratios (this machine's speed drifts within a minute) and the ratio of medians."""
    j1, j2 = [], []
    for r in range(pairs):
        for jobs in ((1, 2) if r % 2 == 0 else (2, 1)):
            print(f"  {name}: {where}--jobs {jobs} run {r + 1}", flush=True)
            (j1 if jobs == 1 else j2).append(run(jobs))
    return {"recording": name, "jobs_1_s": statistics.median(j1), "jobs_2_s": statistics.median(j2),
            "speedup": statistics.median(a / b for a, b in zip(j1, j2)),
            "speedup_of_medians": statistics.median(j1) / statistics.median(j2),
            "jobs_1_runs_s": j1, "jobs_2_runs_s": j2}


def use_compiled_kernels() -> None:
    """Every run of ours uses the kernels compiled ahead of time (what `neurocyte detect` runs):
    refuse to start without them, and make an edit mid-bench fail a run, never fall back."""
    if subprocess.run([str(PYTHON), "-c", "from neurocyte_shared.science.kernels.aot import compiled; "
                       "raise SystemExit(compiled() is None)"]).returncode != 0:
        raise SystemExit("the kernels are not compiled ahead of time for this source: run `make setup` first")
    os.environ["NEUROCYTE_KERNELS"] = "aot"


def whole_command_jobs(data: Path, names: tuple[str, ...], pairs: int) -> list[dict]:
    """`neurocyte detect --jobs 1` against `--jobs 2`, whole commands, on each recording.
    --jobs is for long work: the long 64-channel file and one as wide as a real array (1024
    channels, 1.2 GB); start-up stays serial. This machine's speed drifts by up to 2x within a
    minute, so each --jobs 1 run is paired with the --jobs 2 run next to it in time and the
    speedup is the median of the pairs' ratios (the ratio of median times is kept too)."""
    rows = []
    for name in names:
        stolen: list[float] = []

        def run(jobs: int, name: str = name) -> float:
            s = ours(data / f"{name}.bin", data / f"{name}.json", data / f"j{jobs}.parquet", jobs)[0]
            stolen.append(STOLEN[-1])
            return s

        rows.append({**paired_jobs(name, run, pairs), "steal_share_runs": stolen})
    return rows


def jobs_line(j: dict, startup_s: float | None = None) -> str:
    without = "" if startup_s is None else \
        f"; the start-up taken off both medians: {(j['jobs_1_s'] - startup_s) / (j['jobs_2_s'] - startup_s):.2f}x"
    return (f"--jobs 2 vs --jobs 1 on {j['recording']}: {j['speedup']:.2f}x (median of {len(j['jobs_1_runs_s'])} "
            f"paired runs' ratios; median times {j['jobs_1_s']:.2f} s -> {j['jobs_2_s']:.2f} s, "
            f"{j['speedup_of_medians']:.2f}x; runs {fmt(j['jobs_1_runs_s'])} and {fmt(j['jobs_2_runs_s'])}; "
            f"hypervisor steal {_percent(j['steal_share_runs'])}{without})")


def _percent(shares: list[float]) -> str:
    if not shares:
        return "-"
    return f"median {100 * statistics.median(shares):.0f} %, at most {100 * max(shares):.0f} % per run"


def score(det_samples: np.ndarray, det_channels: np.ndarray, truth: dict, rate: float,
          native: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """Recall, precision, recall of spikes with SNR >= 5 (each spike's own amplitude, where a
    family scales spikes). native: what the method found on the hybrid's background alone; a
    detection on the same channel within the match window is the recording's own spike, left
    out of precision (it is neither a hit nor a false positive)."""
    gt_used, det_found = match(det_samples, det_channels, truth, rate)
    hits = int(gt_used.sum())
    strong = _spike_snr(truth) >= 5
    counted = det_samples.size
    if native is not None:
        own = _same_channel_near(det_samples, det_channels, *native, int(round(MATCH_MS * 1e-3 * rate)))
        counted = int((~own | det_found).sum())
    chance, _ = match(det_samples + int(round(0.005 * rate)), det_channels, truth, rate)
    return {
        "detections": int(det_samples.size),
        "recall": hits / max(1, gt_used.size),
        "recall_by_chance": float(chance.mean()),
        "recall_attributed": float(attributed(det_samples, det_channels, truth, rate).mean()),
        "precision": hits / max(1, counted),
        "recall_snr_ge_5": float(gt_used[strong].mean()) if strong.any() else float("nan"),
    }


ARTEFACT_NEAR_MS = 15.0  # a detection this close to a clipped sample on its electrode is on an artefact


def background_figures(t: np.ndarray, c: np.ndarray, bin_path: Path, json_path: Path) -> dict:
    """What a method found on the hybrid's real recording alone, and how many of those lie
    within ARTEFACT_NEAR_MS of a sample at the rails on the same electrode: the recording's
    stimulation artefacts and their ringing, which are not spikes."""
    rate, n_samples, ct, cc = _clipped(bin_path, json_path)
    tol = int(round(ARTEFACT_NEAR_MS * 1e-3 * rate))
    near = _same_channel_near(t.astype(np.int64), c.astype(np.int64), ct, cc, tol)
    return {"background_detections": int(t.size), "background_on_artefacts": int(near.sum()),
            "background_seconds": n_samples / rate}


def beside_artefacts(t: np.ndarray, c: np.ndarray, truth: dict, bin_path: Path, json_path: Path) -> dict:
    """Recall of the injected spikes beside the hybrid's stimulation artefacts: farther than
    ARTEFACT_NEAR_MS from any sample at the rails on their unit's peak electrode. On an
    artefact (50-1,600x the noise) a method that reports its ringing "finds" some by
    coincidence; one that subtracts the artefact reads what is left."""
    rate, _, ct, cc = _clipped(bin_path, json_path)
    tol = int(round(ARTEFACT_NEAR_MS * 1e-3 * rate))
    on = _same_channel_near(truth["sample_index"].astype(np.int64),
                            truth["peak_channel"][truth["unit_index"]].astype(np.int64), ct, cc, tol)
    found, _ = match(t.astype(np.int64), c.astype(np.int64), truth, rate)
    return {"injected_on_artefacts": int(on.sum()), "recall_beside_artefacts": float(found[~on].mean()),
            "recall_on_artefacts": float(found[on].mean()) if on.any() else float("nan")}


@functools.lru_cache(maxsize=2)
def _clipped(bin_path: Path, json_path: Path) -> tuple[float, int, np.ndarray, np.ndarray]:
    """(rate, samples, sample and channel of each sample at the rails) of a recording: read once
    for all the methods, found as detection finds them."""
    from neurocyte_shared.science.detection.filters import _at_rails

    meta = json.loads(json_path.read_text())
    raw = np.memmap(bin_path, dtype=meta.get("dtype", "<i2"), mode="r").reshape(-1, meta["n_channels"])
    info = np.iinfo(raw.dtype)
    ct, cc = np.divmod(_at_rails(raw, info.min, info.max), raw.shape[1])
    return meta["sampling_rate_hz"], raw.shape[0], ct.astype(np.int64), cc.astype(np.int64)


def _same_channel_near(t: np.ndarray, c: np.ndarray, t_other: np.ndarray, c_other: np.ndarray, tol: int) -> np.ndarray:
    """For each (t, c): a detection in (t_other, c_other) on channel c within +-tol samples."""
    span = np.int64(max(int(t.max(initial=0)), int(t_other.max(initial=0))) + tol + 2)
    keys = np.sort(c_other.astype(np.int64) * span + t_other)
    k = c.astype(np.int64) * span + t
    lo = np.searchsorted(keys, k - tol, "left")
    hi = np.searchsorted(keys, k + tol, "right")
    return hi > lo


# Our detector with SpikeInterface by_channel's rule: every channel on its own (no spatial
# de-duplication), one peak per +-1.0 ms. Shows where by_channel's recall comes from: the same
# spike reported on each electrode that sees it (about 9 rows per spike).
PER_CHANNEL = ("--radius-um", "0", "--dead-time-ms", "1.0")
NO_PEEL = ("--no-peel",)  # what peeling costs and adds
# Peeling's safeguards, each turned off alone and all at once: what each costs in recall and
# saves in precision, on every family; and the matched search of what remains, off: what it adds.
SAFEGUARDS_OFF = {
    "neurocyte_no_min_share": ("--peel-min-share", "0"),
    "neurocyte_no_accept": ("--peel-accept-share", "0"),
    "neurocyte_no_template_check": ("--peel-max-invented", "1"),
    "neurocyte_no_safeguards": ("--peel-min-share", "0", "--peel-accept-share", "0", "--peel-max-invented", "1"),
    "neurocyte_no_matched": ("--matched-threshold-mad", "0"),
}
LABELS = {
    "neurocyte": "neurocyte detect",
    "neurocyte_no_peel": "neurocyte --no-peel",
    "neurocyte_per_channel": "neurocyte --radius-um 0",
    "neurocyte_no_min_share": "  peel-min-share 0",
    "neurocyte_no_accept": "  peel-accept-share 0",
    "neurocyte_no_template_check": "  peel-max-invented 1",
    "neurocyte_no_safeguards": "  no safeguards",
    "neurocyte_no_matched": "  matched search off",
    "by_channel": "SI by_channel",
    "locally_exclusive": "SI locally_exclusive",
}


def ours(
    bin_path: Path, json_path: Path, out: Path, jobs: int = 1, extra: tuple[str, ...] = ()
) -> tuple[float, float, np.ndarray, np.ndarray]:
    seconds, mb, _ = run_measured(
        [str(NEUROCYTE), "detect", str(bin_path), str(json_path), "--out", str(out), "--jobs", str(jobs), *extra]
    )  # NEUROCYTE_KERNELS=aot: see main()
    table = pq.read_table(out)
    return seconds, mb, table["sample_index"].to_numpy(), table["channel_index"].to_numpy()


def theirs(
    bin_path: Path, json_path: Path, method: str, out: Path
) -> tuple[float, float, float, np.ndarray, np.ndarray]:
    wall, mb, stdout = run_measured(
        [str(SI_PY), str(HERE / "si_tasks.py"), "detect", str(bin_path), str(json_path), method, str(out)]
    )
    report = json.loads(stdout.strip().splitlines()[-1])
    peaks = np.load(out)
    return report["seconds"], wall, mb, peaks[:, 0], peaks[:, 1]


def compile_costs(data: Path, name0: str) -> tuple[float, float]:
    """(seconds to compile the kernels ahead of time, seconds of a first run on a cold numba
    cache), each from cold, into throwaway directories."""
    scratch = Path(tempfile.mkdtemp(prefix="neurocyte-kernels-"))
    t0 = time.perf_counter()
    subprocess.run(
        [
            str(PYTHON),
            "-c",
            "import sys; from pathlib import Path; "
            "from neurocyte_shared.science.kernels.aot import build; build(Path(sys.argv[1]))",
            str(scratch),
        ],
        check=True,
        capture_output=True,
        env=dict(os.environ, NUMBA_CACHE_DIR=str(scratch / "numba-aot")),
    )
    aot_build_s = time.perf_counter() - t0
    env = dict(os.environ, NUMBA_CACHE_DIR=str(scratch / "numba"), NEUROCYTE_KERNELS="jit")
    t0 = time.perf_counter()
    subprocess.run(
        [
            str(NEUROCYTE),
            "detect",
            str(data / f"{name0}.bin"),
            str(data / f"{name0}.json"),
            "--out",
            str(data / "cold.parquet"),
        ],
        check=True,
        env=env,
        capture_output=True,
    )
    cold_s = time.perf_counter() - t0
    shutil.rmtree(scratch, ignore_errors=True)

    return aot_build_s, cold_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "neurocyte-bench")
    ap.add_argument("--quick", action="store_true", help="only the small recording, one repeat")
    ap.add_argument("--accuracy", action="store_true",
                    help="every family, one repeat, without the memory and --jobs runs (for trying a change)")
    ap.add_argument("--only", nargs="*", default=None, help="only the recordings whose names contain one of these")
    ap.add_argument("--goal", type=Path, default=None, metavar="RESULTS_JSON",
                    help="only print the detection goal's table for a results file already written")
    args = ap.parse_args()
    if args.goal is not None:
        print("\n".join(goal_lines(json.loads(args.goal.read_text())["rows"])))
        return
    if not SI_PY.exists():
        raise SystemExit("SpikeInterface's environment is missing: run `make bench` (it builds .bench-venv)")
    datasets = DATASETS[:1] if args.quick else DATASETS
    if args.only:
        datasets = [d for d in datasets if any(o in d[0] for o in args.only)]
    args.quick = args.quick or args.accuracy or bool(args.only)
    repeats = 1 if args.quick else args.repeats
    args.data.mkdir(parents=True, exist_ok=True)
    for dataset in datasets + ([] if args.quick else [LONG, WIDE]):
        ensure_data(args.data, dataset)

    # The compile cost, counted: `make setup` compiles the kernels ahead of time once (what
    # `neurocyte detect` runs); the services' JIT compiles on a cold numba cache once per
    # input type. Both measured here from cold, into throwaway directories.
    use_compiled_kernels()
    name0 = datasets[0][0]
    aot_build_s, cold_s = (None, None) if args.quick else compile_costs(args.data, name0)

    # Fixed start-up (interpreter, imports, loading the compiled kernels, writing): the whole
    # command on the first 0.5 s of the first recording, median of 3. SpikeInterface's
    # seconds exclude its import; ours include this.
    tiny_bin, tiny_json = args.data / "tiny.bin", args.data / "tiny.json"
    ch0, rate0 = datasets[0][1], datasets[0][3]
    with open(args.data / f"{name0}.bin", "rb") as f:
        tiny_bin.write_bytes(f.read(2 * ch0 * int(0.5 * rate0)))
    shutil.copyfile(args.data / f"{name0}.json", tiny_json)
    startup_s = statistics.median(ours(tiny_bin, tiny_json, args.data / "tiny.parquet")[0] for _ in range(3))

    def run(method: str, bin_path: Path, json_path: Path) -> tuple[float, float, np.ndarray, np.ndarray]:
        """(seconds, peak MB, samples, channels) of one method's whole command."""
        out = args.data / f"{method}.parquet"
        if method == "neurocyte":
            return ours(bin_path, json_path, out)
        if method == "neurocyte_no_peel":
            return ours(bin_path, json_path, out, extra=NO_PEEL)
        if method == "neurocyte_per_channel":
            return ours(bin_path, json_path, out, extra=PER_CHANNEL)
        if method in SAFEGUARDS_OFF:
            return ours(bin_path, json_path, out, extra=SAFEGUARDS_OFF[method])
        s, _, mb, t, c = theirs(bin_path, json_path, method, args.data / f"{method}.npy")
        return s, mb, t, c

    rows = []
    for name, ch, sec, rate, _units, family in datasets:
        bin_path, json_path = args.data / f"{name}.bin", args.data / f"{name}.json"
        truth = dict(np.load(args.data / f"{name}.truth.npz"))
        samples = ch * int(sec * rate)
        times: dict[str, list[float]] = {m: [] for m in LABELS}
        mem: dict[str, float] = {}
        dets: dict[str, tuple] = {}
        for r in range(repeats):
            order = list(LABELS)
            order = order[r % len(order) :] + order[: r % len(order)]  # alternate who runs first
            for method in order:
                print(f"  {name}: {method} run {r + 1}/{repeats}", flush=True)
                s, mb, t, c = run(method, bin_path, json_path)
                times[method].append(s)
                mem[method] = max(mem.get(method, 0.0), mb)
                dets[method] = (t, c)
        native = {}
        if family == "hybrid":  # each method on the real noise alone: the recording's own spikes
            for method in LABELS:
                print(f"  {name}: {method} on the background alone", flush=True)
                native[method] = run(method, args.data / f"{name}.bg.bin", args.data / f"{name}.bg.json")[2:]
        si_best = min(statistics.median(times["by_channel"]), statistics.median(times["locally_exclusive"]))
        for method in times:
            med = statistics.median(times[method])
            row = {
                "recording": name,
                "family": family,
                "method": LABELS[method],
                "seconds": med,
                "msamples_per_s": samples / med / 1e6,
                "peak_mb": mem[method],
                **score(*dets[method], truth, rate, native.get(method)),
            }
            if method in native:
                row.update(background_figures(*native[method], args.data / f"{name}.bg.bin",
                                              args.data / f"{name}.bg.json"))
                row.update(beside_artefacts(*dets[method], truth, args.data / f"{name}.bg.bin",
                                            args.data / f"{name}.bg.json"))
            if method.startswith("neurocyte"):
                row["speedup_vs_si_faster"] = si_best / med
            rows.append(row)

    # Memory against length, and --jobs 2 against --jobs 1.
    extra = {}
    if not args.quick:
        # The highest of 3 runs each, alternating.
        long_name = LONG[0]
        peaks: dict[str, list[float]] = {name0: [], long_name: []}
        for r in range(3):
            for name in peaks:
                print(f"  memory: {name} run {r + 1}", flush=True)
                peaks[name].append(
                    ours(args.data / f"{name}.bin", args.data / f"{name}.json", args.data / "memory.parquet")[1]
                )
        extra["memory_vs_length"] = {name: max(v) for name, v in peaks.items()}
        extra["memory_vs_length_runs_mb"] = peaks
        extra["jobs"] = whole_command_jobs(args.data, (long_name, WIDE[0]), max(repeats, JOB_PAIRS))

    print()
    head = (
        f"{'recording':<20} {'method':<24} {'seconds':>8} {'M samp/s':>9} {'x SI':>6} {'recall':>7} "
        f"{'precision':>9} {'rec SNR>=5':>10} {'chance':>7} {'attrib':>7} {'peak MB':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        speed = f"{r['speedup_vs_si_faster']:.1f}x" if "speedup_vs_si_faster" in r else ""
        print(
            f"{r['recording']:<20} {r['method']:<24} {r['seconds']:>8.2f} {r['msamples_per_s']:>9.1f} {speed:>6} "
            f"{r['recall']:>7.3f} {r['precision']:>9.3f} {r['recall_snr_ge_5']:>10.3f} {r['recall_by_chance']:>7.3f} "
            f"{r['recall_attributed']:>7.3f} {r['peak_mb']:>8.0f}"
        )
    for r in rows:
        if "background_detections" in r:
            print(f"{r['recording']} without the injected spikes (the real recording alone, "
                  f"{r['background_seconds']:.0f} s): {r['method']} finds {r['background_detections']}, "
                  f"{r['background_on_artefacts']} of them within {ARTEFACT_NEAR_MS:g} ms of a clipped sample "
                  "on their electrode (stimulation artefacts)")
    for r in rows:
        if "recall_beside_artefacts" in r:
            print(f"{r['recording']}, the {r['injected_on_artefacts']} spikes injected within {ARTEFACT_NEAR_MS:g} ms "
                  f"of a clipped sample on their peak electrode set apart: {r['method']} recall "
                  f"{r['recall_beside_artefacts']:.4f} beside the artefacts, {r['recall_on_artefacts']:.3f} on them")
    if aot_build_s is not None:
        print(
            f"\nneurocyte: compiling the kernels ahead of time (make setup, once per change of kernels.py) took "
            f"{aot_build_s:.0f} s; the services' JIT instead compiles on first use ({cold_s:.1f} s for the first "
            "run on a cold numba cache, then cached)."
        )
    print(f"neurocyte: start-up, the whole command on 0.5 s of {name0}: {startup_s:.2f} s (in every figure above)")
    if extra:
        runs = "; ".join(" ".join(f"{x:.0f}" for x in v) for v in extra["memory_vs_length_runs_mb"].values())
        print(
            "peak memory of neurocyte detect (highest of 3 runs): "
            + ", ".join(f"{k} {v:.0f} MB" for k, v in extra["memory_vs_length"].items())
            + f" (runs: {runs})"
        )
        for j in extra["jobs"]:
            print(jobs_line(j, startup_s))
    print(f"CPU time the hypervisor stole from this machine during the runs: {_percent(STOLEN)}")
    print(
        "SpikeInterface's seconds exclude its import; ours are the whole command. "
        f"Matching: {MATCH_MS} ms, channel within {NEAR_UM:g} um of the unit's peak channel, one-to-one."
    )

    results = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "repeats": repeats,
        "rows": rows,
        "cold_numba_first_run_s": cold_s,
        "aot_build_s": aot_build_s,
        "startup_s": startup_s,
        "steal_share_runs": STOLEN,
        **extra,
    }
    print()
    print("\n".join(goal_lines(rows)))
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / f"detection-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"written {path.relative_to(ROOT)}")


GOAL_PRECISION, GOAL_RECALL_SNR_GE_5, GOAL_SPEEDUP = 0.99, 0.95, 3.0


def goal_lines(rows: list[dict]) -> list[str]:
    """The detection goal, per recording: precision >= 0.99, recall >= SpikeInterface's best
    method's, recall >= 0.95 at SNR >= 5, >= 3x SpikeInterface's faster method (the whole
    command). Recall beyond chance (recall minus the recall of the same detections 5 ms off) is
    printed beside it: a method that reports every electrode's crossings matches more spikes by
    coincidence, which raw recall counts as found."""
    by_recording: dict[str, dict[str, dict]] = {}
    for r in rows:
        by_recording.setdefault(r["recording"], {})[r["method"]] = r
    out = [f"detection goal: precision >= {GOAL_PRECISION}, recall >= SpikeInterface's best, recall SNR>=5 >= "
           f"{GOAL_RECALL_SNR_GE_5}, >= {GOAL_SPEEDUP:g}x its faster method",
           f"{'recording':<24} {'precision':>9} {'recall':>7} {'SI best':>7} {'SNR>=5':>7} {'x SI':>5} "
           f"{'beyond chance':>13} {'SI':>6}  verdict"]
    met = checked = 0
    for name, methods in by_recording.items():
        ours = methods.get("neurocyte detect")
        si = [methods[m] for m in ("SI by_channel", "SI locally_exclusive") if m in methods]
        if ours is None or not si:
            continue
        checked += 1
        best = max(si, key=lambda r: r["recall"])
        misses = [what for what, ok in (
            ("precision", ours["precision"] >= GOAL_PRECISION),
            ("recall", ours["recall"] >= best["recall"]),
            ("recall SNR>=5", ours["recall_snr_ge_5"] >= GOAL_RECALL_SNR_GE_5),
            ("speed", ours.get("speedup_vs_si_faster", 0.0) >= GOAL_SPEEDUP)) if not ok]
        met += not misses
        beyond = max(r["recall"] - r["recall_by_chance"] for r in si)
        out.append(f"{name:<24} {ours['precision']:>9.4f} {ours['recall']:>7.4f} {best['recall']:>7.4f} "
                   f"{ours['recall_snr_ge_5']:>7.4f} {ours.get('speedup_vs_si_faster', 0.0):>4.1f}x "
                   f"{ours['recall'] - ours['recall_by_chance']:>13.4f} {beyond:>6.4f}  "
                   + ("met" if not misses else "missed: " + ", ".join(misses)))
    out.append(f"goal met on {met} of {checked} recordings")
    return out


if __name__ == "__main__":
    main()
