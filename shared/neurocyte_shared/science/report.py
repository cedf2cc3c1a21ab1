"""Pictures and the HTML report of a recording: pure functions of the summary and the spike
table (no AWS, no files), used by the aggregator and by `neurocyte report`.

Four PNGs (activity map, raster, population rate with network bursts, ISI histogram) and one
self-contained HTML page (the PNGs inlined), which states every parameter used."""

from __future__ import annotations

import base64
import html
import io

import numpy as np

from neurocyte_shared.science.metrics import Summary
from neurocyte_shared.science.table import SpikeTable

FIGURES = {
    "activity_map.png": "Firing rate at each electrode's position",
    "raster.png": "Raster of a representative window",
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


def figures(summary: Summary, spikes: SpikeTable) -> dict[str, bytes]:
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

    # raster
    t0, t1 = raster_window(summary, np.sort(times))
    shown = np.flatnonzero(active) if active.any() else np.arange(summary.n_channels)
    shown = shown[:200]  # a readable number of rows
    row = np.full(summary.n_channels, -1)
    row[shown] = np.arange(shown.size)
    sel = (times >= t0) & (times < t1) & (row[chans] >= 0)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.scatter(times[sel], row[chans[sel]], s=2, marker="|", color="black", linewidths=0.6)
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


def _fmt(v, unit: str = "", digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}{unit}"
    return f"{v:,}{unit}"


def render_html(summary: Summary, pictures: dict[str, bytes]) -> str:
    """One self-contained page: headline figures, pictures, per-electrode table, parameters."""
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
<h2>Quality notes</h2><ul>{notes}</ul>
<h2>Most active electrodes</h2>
<table><tr>{''.join(f'<th>{c}</th>' for c in cols)}</tr>{table}</table>
<p class="muted">All {s.n_channels:,} electrodes are in summary.json; every spike is in spikes.parquet.</p>
<h2>Parameters used</h2><table>{params}</table>
</body></html>
"""
