"""Pictures and the HTML report of a recording: pure functions of the summary and the spike
table (no AWS, no files), used by the aggregator and by `neurocyte report`.

Five PNGs (activity map, each electrode's mean waveform on the layout, raster with the spikes
peeling found marked, population rate with network bursts, ISI histogram), a sixth around the
stimuli when the recording has them (peri-stimulus time histogram), and one
self-contained HTML page (the PNGs inlined), which states every parameter used. They let a
user judge the detection by eye, as MaxLab Live's and AxIS's waveform views do."""

from __future__ import annotations

import base64
import html
import io

import numpy as np

from neurocyte_shared.science.metrics import Summary
from neurocyte_shared.science.table import SpikeTable
from neurocyte_shared.science.waveforms import Waveforms

FIGURES = {
    "activity_map.png": "Firing rate at each electrode's position",
    "waveforms.png": "Mean spike waveform of each active electrode, at its position (shaded: +-1 SD)",
    "raster.png": "Raster of a representative window (orange: spikes found by peeling; blue lines: stimulation "
                  "artefacts)",
    "stimulus_response.png": "Spikes of all electrodes around each stimulus (peri-stimulus time histogram); "
                             "grey: the response window",
    "population_rate.png": "Population firing rate, network bursts shaded",
    "isi_histogram.png": "Inter-spike intervals, active electrodes pooled",
}
RASTER_WINDOW_S = 10.0


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # no screen: containers and CI
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def raster_window(summary: Summary, times_s: np.ndarray) -> tuple[float, float]:
    """The window shown in the raster: around the first network burst, else the busiest."""
    length = min(RASTER_WINDOW_S, summary.duration_s)
    if summary.network and summary.network.bursts:
        start = max(0.0, summary.network.bursts[0].start_s - length / 4)
    elif times_s.size:
        edges = np.arange(0.0, max(summary.duration_s - length, 0.0) + 1.0, 1.0)
        counts = np.searchsorted(times_s, edges + length) - np.searchsorted(times_s, edges)
        start = float(edges[int(np.argmax(counts))])
    else:
        start = 0.0
    start = min(start, max(0.0, summary.duration_s - length))
    return start, start + length


def figures(summary: Summary, spikes: SpikeTable, waveforms: Waveforms | None = None) -> dict[str, bytes]:
    plt = _plt()
    fs = summary.sampling_rate_hz
    times = np.asarray(spikes.sample_index, dtype=np.float64) / fs
    chans = np.asarray(spikes.channel_index, dtype=np.int64)
    active = np.array([c.active for c in summary.channels], bool)
    out: dict[str, bytes] = {}

    # activity map
    x = np.array([c.x_um for c in summary.channels])
    y = np.array([c.y_um for c in summary.channels])
    rate = np.array([c.firing_rate_hz for c in summary.channels])
    fig, ax = plt.subplots(figsize=(6.5, 5))
    size = max(4.0, min(120.0, 20000.0 / max(1, len(x))))
    sc = ax.scatter(x, y, c=rate, s=size, cmap="viridis", marker="s", vmin=0,
                    vmax=max(float(np.percentile(rate, 99)) if rate.size else 1.0, 1e-9))
    fig.colorbar(sc, ax=ax, label="firing rate (Hz)")
    ax.set_xlabel("x (um)")
    ax.set_ylabel("y (um)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_title(f"{summary.active_electrodes} of {summary.n_channels} electrodes active")
    out["activity_map.png"] = _png(fig)
    if waveforms is not None:
        out["waveforms.png"] = _waveform_map(summary, waveforms, x, y, active)

    # raster
    t0, t1 = raster_window(summary, np.sort(times))
    shown = np.flatnonzero(active) if active.any() else np.arange(summary.n_channels)
    shown = shown[:200]  # a readable number of rows
    row = np.full(summary.n_channels, -1)
    row[shown] = np.arange(shown.size)
    sel = (times >= t0) & (times < t1) & (row[chans] >= 0)
    peeled = spikes.peeled_mask
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for which, colour, label in ((sel & ~peeled, "black", "threshold crossing"),
                                 (sel & peeled, "tab:orange", "found by peeling")):
        if which.any():
            ax.scatter(times[which], row[chans[which]], s=2 if colour == "black" else 6, marker="|", color=colour,
                       linewidths=0.6 if colour == "black" else 1.0, label=f"{label} ({int(which.sum()):,})")
    stimuli = np.asarray((summary.quality.stimulation_artefacts_s or []) if summary.quality else [], np.float64)
    stimuli = stimuli[(stimuli >= t0) & (stimuli < t1)]
    if stimuli.size:  # what detection did not read there is in quality.silenced_fraction
        ax.vlines(stimuli, -1, max(shown.size, 1), color="tab:blue", linewidth=0.8, alpha=0.6,
                  label=f"stimulation artefact ({stimuli.size:,})")
    if (sel & peeled).any() or stimuli.size:
        ax.legend(loc="upper right", fontsize=8, markerscale=3, framealpha=0.9)
    if summary.network:
        for b in summary.network.bursts:
            if b.end_s >= t0 and b.start_s <= t1:
                ax.axvspan(b.start_s, b.end_s, color="tab:red", alpha=0.15, lw=0)
    ax.set_xlim(t0, t1)
    ax.set_ylim(-1, max(shown.size, 1))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("active electrode" if active.any() else "electrode")
    ax.set_title(f"Raster, {t0:.1f}-{t1:.1f} s" + (f" (first {shown.size} electrodes)" if shown.size == 200 else ""))
    out["raster.png"] = _png(fig)

    if summary.stimulus_response is not None:
        out["stimulus_response.png"] = _stimulus_histogram(summary)

    # population rate with network bursts
    bin_s = float(summary.parameters.get("metrics", {}).get("network_bin_s", 0.05))
    edges = np.arange(0.0, summary.duration_s + bin_s, bin_s)
    keep = active[chans] if active.any() else np.ones(chans.size, bool)
    counts, _ = np.histogram(times[keep], bins=edges)
    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.plot(edges[:-1], counts / bin_s, lw=0.6, color="tab:blue")
    if summary.network:
        for b in summary.network.bursts:
            ax.axvspan(b.start_s, b.end_s, color="tab:red", alpha=0.25, lw=0)
    ax.set_xlim(0, summary.duration_s)
    ax.set_xlabel("time (s)")
    ax.set_ylabel(f"spikes/s ({bin_s * 1000:g} ms bins)")
    n_nb = summary.network.count if summary.network else 0
    ax.set_title(f"Population rate, {n_nb} network bursts")
    out["population_rate.png"] = _png(fig)

    # ISI histogram, log-spaced
    order = np.lexsort((times, chans))
    t_sorted, c_sorted = times[order], chans[order]
    same = (c_sorted[1:] == c_sorted[:-1]) & active[c_sorted[1:]]
    isi = np.diff(t_sorted)[same]
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    if isi.size:
        bins = np.logspace(-3, 2, 60)
        ax.hist(np.clip(isi, 1e-3, 100), bins=bins, color="tab:gray")
        ax.set_xscale("log")
    ax.set_xlabel("inter-spike interval (s)")
    ax.set_ylabel("count")
    ax.set_title(f"ISI histogram ({isi.size:,} intervals)")
    out["isi_histogram.png"] = _png(fig)
    return out


def _stimulus_histogram(summary: Summary) -> bytes:
    """All electrodes' spikes per ms and stimulus around the stimuli, the response window marked."""
    r = summary.stimulus_response
    counts = np.asarray(r.psth_counts, np.float64)
    left = (r.psth_start_s + np.arange(counts.size) * r.psth_bin_s) * 1e3
    fig, ax = _plt().subplots(figsize=(6.5, 3.5))
    ax.axvspan(0, r.window_s * 1e3, color="0.9", lw=0)
    ax.bar(left, counts / r.stimuli / (r.psth_bin_s * 1e3), width=r.psth_bin_s * 1e3, align="edge", color="tab:blue")
    ax.axvline(0, color="tab:blue", lw=0.8)
    ax.set_xlim(left[0], left[-1] + r.psth_bin_s * 1e3)
    ax.set_xlabel("time from the stimulus (ms)")
    ax.set_ylabel("spikes per ms and stimulus\n(all electrodes)")
    lat = "" if r.median_latency_ms is None else f", median latency {r.median_latency_ms:.1f} ms"
    ax.set_title(f"{r.stimuli} stimuli: {r.responding_electrodes} of {r.electrodes_tested} electrodes respond{lat}")
    return _png(fig)


WAVEFORM_MIN_SPIKES = 5  # fewer summed spikes make no mean worth drawing


def _waveform_map(summary: Summary, waveforms: Waveforms, x: np.ndarray, y: np.ndarray, active: np.ndarray) -> bytes:
    """Each active electrode's mean waveform drawn at its position, with its spread, all on one
    amplitude scale (a scale bar says which), so that a user sees what was detected where."""
    from matplotlib.collections import LineCollection, PolyCollection

    plt = _plt()
    mean, std = waveforms.mean_uv(), waveforms.std_uv()
    shown = np.flatnonzero(active & (waveforms.count >= WAVEFORM_MIN_SPIKES))
    # the figure shaped like the array (a probe's column is tall, a MEA's grid square)
    wide = float(np.ptp(x[shown])) if shown.size else 1.0
    tall = float(np.ptp(y[shown])) if shown.size else 1.0
    ratio = min(max((tall + 1.0) / (wide + 1.0), 0.5), 3.0)
    fig, ax = plt.subplots(figsize=(max(3.5, 7.5 / ratio ** 0.5), 6 * ratio ** 0.5 if ratio < 1 else 7.0))
    if shown.size:
        pts = np.column_stack([x, y])
        d = np.linalg.norm(pts[shown, None, :] - pts[None, shown, :], axis=2) if shown.size > 1 else np.zeros((1, 1))
        d[d == 0] = np.inf
        pitch = float(np.median(d.min(axis=1))) if shown.size > 1 and np.isfinite(d).any() else 100.0
        peak = float(np.nanmax(np.abs(mean[shown]))) or 1.0
        scale = 0.9 * pitch / peak  # um of drawing per uV: the largest mean spans most of a pitch
        u = (np.arange(waveforms.width) - waveforms.before) / max(waveforms.width - 1, 1) * 0.85 * pitch
        lines, bands = [], []
        for c in shown:
            px, py = x[c] + u, y[c] + mean[c] * scale
            lines.append(np.column_stack([px, py]))
            lo, hi = y[c] + (mean[c] - std[c]) * scale, y[c] + (mean[c] + std[c]) * scale
            bands.append(np.column_stack([np.r_[px, px[::-1]], np.r_[hi, lo[::-1]]]))
        ax.add_collection(PolyCollection(bands, facecolors="tab:blue", alpha=0.2, linewidths=0))
        ax.add_collection(LineCollection(lines, colors="tab:blue", linewidths=0.8))
        ax.autoscale()
        bar_uv = float(10 ** np.floor(np.log10(peak / 2))) if peak > 2 else 1.0
        x0, y0 = float(np.nanmin(x[shown])), float(np.nanmin(y[shown])) - pitch
        ax.plot([x0, x0], [y0, y0 + bar_uv * scale], color="black", lw=1.5)
        ax.plot([x0, x0 + 0.85 * pitch / (waveforms.width - 1) * (waveforms.sampling_rate_hz / 1000)],
                [y0, y0], color="black", lw=1.5)
        ax.annotate(f"{bar_uv:g} uV, 1 ms", (x0, y0), xytext=(4, -12), textcoords="offset points", fontsize=8)
    ax.set_xlabel("x (um)")
    ax.set_ylabel("y (um)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_title(f"Mean waveforms of {shown.size} active electrodes ({int(waveforms.count[shown].sum()):,} spikes)")
    return _png(fig)


def _fmt(v, unit: str = "", digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}{unit}"
    return f"{v:,}{unit}"


def receipt(inputs: dict[str, str], detection: dict, metrics: dict) -> dict:
    """What a reader needs to reproduce a result: the inputs' SHA-256 (or the storage version
    validated, where the uploader gave no checksum), the code's version, the parameters' hashes
    (the parameters themselves are in the report) and when."""
    import hashlib
    import json
    from datetime import UTC, datetime
    from importlib.metadata import version

    def digest(d: dict) -> str:
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    return {"inputs_sha256": dict(sorted(inputs.items())), "code_version": f"neurocyte {version('neurocyte-shared')}",
            "detection_parameters_hash": digest(detection), "metrics_parameters_hash": digest(metrics),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds")}


def render_html(summary: Summary, pictures: dict[str, bytes], receipt: dict | None = None) -> str:
    """One self-contained page: headline figures, pictures, per-electrode table, parameters and,
    when given, the reproducibility receipt."""
    s = summary
    e = html.escape
    net, sync, q = s.network, s.synchrony, s.quality
    head = [
        ("Duration", _fmt(s.duration_s, " s", 1)),
        ("Electrodes", f"{s.n_channels:,} at {s.sampling_rate_hz:,.0f} Hz ({e(s.format)})"),
        ("Spikes", _fmt(s.total_spikes)),
        ("Active electrodes (>= 5 spikes/min)", f"{s.active_electrodes:,} of {s.n_channels:,}"),
        ("Weighted mean firing rate (active)", _fmt(s.mean_firing_rate_hz, " Hz")),
        ("Mean firing rate (all electrodes)", _fmt(s.mean_firing_rate_all_hz, " Hz")),
        ("Bursting electrodes", _fmt(s.bursting_electrodes)),
        ("Network bursts", f"{net.count:,} ({net.rate_per_min:.2f}/min, mean {_fmt(net.mean_duration_s, ' s', 3)}, "
                           f"{_fmt(net.mean_participating_electrodes, '', 1)} electrodes)" if net else "-"),
        ("Synchrony (STTC)", f"{_fmt(sync.sttc_mean, '', 3)} at +-{sync.lag_s * 1000:g} ms over "
                             f"{sync.pairs:,} pairs of the {sync.electrodes} most active electrodes" if sync else "-"),
    ]
    r = s.stimulus_response
    if r is not None:
        lat = "" if r.median_latency_ms is None else f", median first-spike latency {r.median_latency_ms:.1f} ms"
        head.append(("Response to stimulation",
                     f"{r.responding_electrodes:,} of {r.electrodes_tested:,} electrodes within "
                     f"{r.window_s * 1e3:g} ms of {r.stimuli:,} stimuli{lat}; "
                     f"{r.evoked_spikes_per_stimulus:.1f} evoked spikes per stimulus"))
    rows = "".join(f"<tr><th>{e(k)}</th><td>{v}</td></tr>" for k, v in head)
    pics = "".join(
        f'<figure><img alt="{e(cap)}" src="data:image/png;base64,{base64.b64encode(pictures[name]).decode()}">'
        f"<figcaption>{e(cap)}</figcaption></figure>"
        for name, cap in FIGURES.items() if name in pictures)
    notes = "".join(f"<li>{e(n)}</li>" for n in (q.notes if q else [])) or "<li>none</li>"
    top = sorted(s.channels, key=lambda c: -c.spike_count)[:50]
    cols = ("electrode", "x um", "y um", "spikes", "rate Hz", "median amp uV", "bursts", "bursts/min",
            "% in bursts", "mean IBI s")
    table = "".join(
        "<tr>" + "".join(f"<td>{v}</td>" for v in (
            e(c.channel_id), _fmt(c.x_um, "", 0), _fmt(c.y_um, "", 0), _fmt(c.spike_count),
            _fmt(c.firing_rate_hz), _fmt(c.median_amplitude_uv, "", 1), _fmt(c.bursts),
            _fmt(c.burst_rate_per_min), _fmt(c.percent_spikes_in_bursts, "", 1),
            _fmt(c.mean_inter_burst_interval_s))) + "</tr>" for c in top)
    responding = ""
    if r is not None and r.electrodes:
        ids = {c.channel_index: c.channel_id for c in s.channels}
        cells = "".join(
            "<tr>" + "".join(f"<td>{v}</td>" for v in (
                e(ids.get(x.channel_index, str(x.channel_index))), _fmt(x.window_ms, "", 0),
                _fmt(100 * x.response_probability, "", 0), _fmt(x.evoked_spikes_per_stimulus),
                _fmt(x.median_latency_ms, "", 1))) + "</tr>" for x in r.electrodes[:20])
        responding = ("<h2>Electrodes that respond to the stimuli</h2><table><tr><th>electrode</th><th>window ms</th>"
                      "<th>% of stimuli answered (beyond chance)</th><th>evoked spikes per stimulus</th>"
                      f"<th>median latency ms</th></tr>{cells}</table>"
                      + (f'<p class="muted">The first 20 of {r.responding_electrodes:,}; all are in summary.json '
                         "(stimulus_response).</p>" if r.responding_electrodes > 20 else ""))
    params = "".join(
        f"<tr><th>{e(group)}.{e(k)}</th><td>{e(str(v))}</td></tr>"
        for group, values in s.parameters.items() for k, v in sorted(values.items()))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Neurocyte: {e(s.recording_name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }} th, td {{ padding: 3px 10px; border-bottom: 1px solid #ddd;
text-align: left; font-size: 14px; }} figure {{ display: inline-block; margin: 0.5em; vertical-align: top; }}
img {{ max-width: 100%; }} figcaption {{ font-size: 13px; color: #555; }} .muted {{ color: #666; font-size: 13px; }}
</style></head><body>
<h1>{e(s.recording_name)}</h1>
<p class="muted">Recording {e(s.recording_id)}. Summary schema v{s.schema_version}.</p>
<table>{rows}</table>
<h2>Pictures</h2>{pics}
{responding}
<h2>Quality notes</h2><ul>{notes}</ul>
<h2>Most active electrodes</h2>
<table><tr>{''.join(f'<th>{c}</th>' for c in cols)}</tr>{table}</table>
<p class="muted">All {s.n_channels:,} electrodes are in summary.json; every spike is in spikes.parquet.</p>
<h2>Parameters used</h2><table>{params}</table>
{_receipt_html(receipt)}
</body></html>
"""


def _receipt_html(receipt: dict | None) -> str:
    if not receipt:
        return ""
    e = html.escape
    rows = ""
    for k, v in receipt.items():
        if isinstance(v, dict):
            v_html = "<br>".join(f"{e(str(name))}: <code>{e(str(h))}</code>" for name, h in v.items()) or "-"
        else:
            v_html = f"<code>{e(str(v))}</code>"
        rows += f"<tr><th>{e(k)}</th><td>{v_html}</td></tr>"
    return f"<h2>Reproducibility receipt</h2><table>{rows}</table>"
