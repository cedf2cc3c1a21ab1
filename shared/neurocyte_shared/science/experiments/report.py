"""The experiment report: pictures (conditions, change against baseline, dose-response, days
in vitro, the plate), one self-contained HTML page, experiment.json and the tidy table as CSV
and Parquet (partitioned for Athena: tidy/experiment=<name>/)."""

from __future__ import annotations

import base64
import html
import json

import numpy as np

from neurocyte_shared.science.experiments import fits
from neurocyte_shared.science.experiments.platemap import well_position
from neurocyte_shared.science.experiments.table import HEADLINE, to_csv, to_parquet
from neurocyte_shared.science.report import _plt, _png

CAPTIONS = {
    "conditions.png": "Each headline metric by condition: one point per well over a box plot (n per condition)",
    "baseline_change.png": "Change against the same well's baseline (treated / baseline; 1 = no change)",
    "div.png": "Trajectories over days in vitro: median over wells per condition (points: wells)",
    "plate.png": "The plate: wells coloured by the chosen metric; excluded wells grey, with the reason below",
}


def files(result: dict, rows: list[dict]) -> dict[str, bytes]:
    """Every file of the experiment report, by relative path (the tables first, the page last)."""
    pictures = figures(result, rows)
    name = _safe(result["experiment"])
    out = {
        "tidy.csv": to_csv(rows),
        f"tidy/experiment={name}/data.parquet": to_parquet(rows),
        "experiment.json": json.dumps(result, indent=1, sort_keys=True).encode(),
    }
    out.update(pictures)
    out["report.html"] = render_html(result, pictures).encode()
    return out


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "experiment"


def _kept(rows: list[dict], metric: str) -> list[dict]:
    return [r for r in rows if not r["excluded"] and r[metric] is not None]


def figures(result: dict, rows: list[dict]) -> dict[str, bytes]:
    plt = _plt()
    out: dict[str, bytes] = {}
    conditions = result["conditions"]
    metrics = list(HEADLINE)
    rng = np.random.default_rng(0)  # jitter: the same picture every run

    fig, axes = plt.subplots(2, 3, figsize=(12, 7))
    for ax, m in zip(axes.flat, metrics):
        data = [[r[m] for r in _kept(rows, m) if r["condition"] == c] for c in conditions]
        ax.boxplot([d if d else [np.nan] for d in data], tick_labels=[f"{c}\nn={len(d)}" for c, d in
                                                                       zip(conditions, data)],
                   showfliers=False, widths=0.5)
        for i, d in enumerate(data):
            ax.scatter(i + 1 + rng.uniform(-0.12, 0.12, len(d)), d, s=14, color="tab:blue", zorder=3)
        label, unit = HEADLINE[m]
        ax.set_title(label, fontsize=9)
        ax.set_ylabel(unit, fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    out["conditions.png"] = _png(fig)

    if any(r[f"{m}_vs_baseline"] is not None for r in rows for m in metrics):
        fig, axes = plt.subplots(2, 3, figsize=(12, 7))
        for ax, m in zip(axes.flat, metrics):
            key = f"{m}_vs_baseline"
            treated = [c for c in conditions if any(r["condition"] == c and r[key] is not None for r in rows)]
            for i, c in enumerate(treated):
                d = [r[key] for r in _kept(rows, key) if r["condition"] == c]
                ax.scatter(i + rng.uniform(-0.12, 0.12, len(d)), d, s=14, color="tab:purple")
                if d:
                    ax.hlines(np.median(d), i - 0.25, i + 0.25, color="black")
            ax.axhline(1.0, color="gray", lw=0.8, ls="--")
            ax.set_xticks(range(len(treated)), [f"{c}\nn={sum(1 for r in _kept(rows, key) if r['condition'] == c)}"
                                                for c in treated], fontsize=7)
            ax.set_title(HEADLINE[m][0] + " / baseline", fontsize=9)
        fig.tight_layout()
        out["baseline_change.png"] = _png(fig)

    for comp in result["compounds"]:
        fits_ = [d for d in comp["dose_response"]]
        if not fits_:
            continue
        fig, axes = plt.subplots(2, 3, figsize=(12, 7))
        for ax, d in zip(axes.flat, fits_):
            m = d["metric"]
            key = f"{m}_vs_baseline" if "over the well's baseline" in d["response"] else m
            pts = [(r["concentration"], r[key]) for r in _kept(rows, key)
                   if r["compound"] == comp["compound"] and (r["concentration"] or 0) > 0]
            if pts:
                c, y = np.array(pts, float).T
                ax.scatter(c, y, s=14, color="tab:blue", zorder=3)
                if d["top"] is not None and d["ec50"] is not None and d["note"] is None:
                    grid = np.logspace(np.log10(c.min()) - 0.3, np.log10(c.max()) + 0.3, 200)
                    h = abs(d["hill_slope"])
                    ax.plot(grid, fits.hill(grid, d["bottom"], d["top"], np.log10(d["ec50"]), h), color="tab:red")
                    ax.axvline(d["ec50"], color="tab:red", lw=0.8, ls=":")
                ax.set_xscale("log")
            else:
                ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes, color="0.4")
            title = HEADLINE[m][0]
            sub = (f"{d['kind']} {d['ec50']:.3g} {d['unit']}" if d["ec50"] is not None and d["note"] is None
                   else "no fit (see the report)")
            ax.set_title(f"{title}\n{sub}", fontsize=8)
            ax.set_xlabel(f"{comp['compound']} ({d['unit']})", fontsize=8)
            ax.tick_params(labelsize=7)
        fig.tight_layout()
        out[f"dose_{_safe(comp['compound'])}.png"] = _png(fig)

    if result["div"]["trajectories"]:
        fig, axes = plt.subplots(2, 3, figsize=(12, 7))
        for ax, m in zip(axes.flat, metrics):
            for i, t in enumerate(x for x in result["div"]["trajectories"] if x["metric"] == m):
                colour = f"C{i}"
                pts = [p for p in t["points"] if p["median"] is not None]
                ax.plot([p["div"] for p in pts], [p["median"] for p in pts], "-o", color=colour, label=t["condition"],
                        ms=4)
                wells = [r for r in _kept(rows, m) if r["condition"] == t["condition"] and r["div"] is not None]
                ax.scatter([r["div"] for r in wells], [r[m] for r in wells], s=8, color=colour, alpha=0.4)
            ax.set_title(HEADLINE[m][0], fontsize=9)
            ax.set_xlabel("days in vitro", fontsize=8)
            ax.tick_params(labelsize=7)
        axes.flat[0].legend(fontsize=7)
        fig.tight_layout()
        out["div.png"] = _png(fig)

    out["plate.png"] = _plate(result, rows)
    return out


def _plate(result: dict, rows: list[dict]) -> bytes:
    """One panel per time point (or per file where there is none): each well at its place."""
    plt = _plt()
    m = result["parameters"]["plate_metric"]
    # A panel shows each well once: one per time point, and baselines apart from the recordings
    # made after a treatment (the same well, recorded twice)
    linked = any(r["baseline_file"] for r in rows)
    panels: dict[str, list[dict]] = {}
    for r in rows:
        title = f"DIV {r['div']}" if r["div"] is not None else "plate"
        if linked:
            title += ", after treatment" if r["baseline_file"] else ", baseline"
        panels.setdefault(title, []).append(r)
    if any(len({r["well"] for r in rs}) < len(rs) for rs in panels.values()):  # still twice: one per file
        panels = {}
        for r in rows:
            panels.setdefault(r["file"] + (f" {r['stream']}" if r["stream"] else ""), []).append(r)
    panels = dict(list(panels.items())[:6])
    values = [r[m] for r in rows if not r["excluded"] and r[m] is not None]
    vmax = max(values) if values else 1.0
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    notes = []
    for ax, (title, rs) in zip(axes[0], panels.items()):
        pos = [well_position(r["well"]) for r in rs]
        if any(p is None for p in pos):  # wells not named like A1: in a row, in map order
            pos = [(0, i) for i in range(len(rs))]
        n_rows = max(p[0] for p in pos) + 1
        n_cols = max(p[1] for p in pos) + 1
        cmap = plt.get_cmap("viridis")
        for r, (i, j) in zip(rs, pos):
            if r["excluded"] or r[m] is None:
                ax.add_patch(plt.Circle((j, i), 0.42, facecolor="0.85", edgecolor="0.4", hatch="///"))
                notes.append(f"{r['well']} ({title}): {r['exclusion_reason'] or 'no value'}")
            else:
                ax.add_patch(plt.Circle((j, i), 0.42, facecolor=cmap(r[m] / vmax if vmax else 0), edgecolor="0.3"))
            ax.text(j, i, r["well"], ha="center", va="center", fontsize=7, color="white" if not r["excluded"] else "k")
        ax.set_xlim(-0.6, n_cols - 0.4)
        ax.set_ylim(n_rows - 0.4, -0.6)
        ax.set_aspect("equal")
        ax.set_xticks(range(n_cols), [str(k + 1) for k in range(n_cols)], fontsize=7)
        ax.set_yticks(range(n_rows), [chr(65 + k) for k in range(n_rows)], fontsize=7)
        ax.set_title(title, fontsize=9)
    sm = plt.cm.ScalarMappable(cmap="viridis", norm=plt.Normalize(0, vmax))
    fig.colorbar(sm, ax=axes[0].tolist(), label=f"{HEADLINE[m][0]} ({HEADLINE[m][1]})", shrink=0.8)
    if notes:
        fig.text(0.01, -0.02 - 0.035 * min(len(notes), 8), "Excluded: " + "\n".join(notes[:8]), fontsize=7,
                 va="top")
    return _png(fig)


def render_html(result: dict, pictures: dict[str, bytes]) -> str:
    e = html.escape
    heads = "".join(f"<li>{e(s)}</li>" for s in result["headline"])
    pics = ""
    for name, data in pictures.items():
        cap = CAPTIONS.get(name) or f"Dose-response of {name[5:-4]}: normalised metric against concentration, " \
                                   "four-parameter Hill fit"
        pics += (f'<figure><img alt="{e(cap)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'
                 f"<figcaption>{e(cap)}</figcaption></figure>")
    dose = ""
    for comp in result["compounds"]:
        for d in comp["dose_response"]:
            ci = f"{d['ec50_ci'][0]:.3g}-{d['ec50_ci'][1]:.3g}" if d["ec50_ci"] else "-"
            ec50 = "-" if d["ec50"] is None else f"{d['ec50']:.3g} {e(d['unit'])}"
            slope = "-" if d["hill_slope"] is None else f"{d['hill_slope']:.2f}"
            dose += (f"<tr><td>{e(comp['compound'])}</td><td>{e(HEADLINE[d['metric']][0])}</td><td>{e(d['kind'])}</td>"
                     f"<td>{ec50}</td><td>{ci}</td><td>{slope}</td><td>{d['n']}</td><td>{e(d['note'] or '')}</td></tr>")
    st = ""
    for s in result["statistics"]:
        for c in s["comparisons"]:
            p = "not tested (n < 3)" if c["p_holm"] is None else f"{c['p_holm']:.3g}"
            lo_hi = c["cliffs_delta_ci"]
            ci = "-" if lo_hi is None else f"{lo_hi[0]:.2f} to {lo_hi[1]:.2f}"
            delta = "-" if c["cliffs_delta"] is None else f"{c['cliffs_delta']:.2f}"
            verdict = {True: "yes", False: "no", None: "-"}[c["significant"]]
            div = "" if s["div"] is None else s["div"]
            st += (f"<tr><td>{e(HEADLINE[s['metric']][0])}</td><td>{div}</td>"
                   f"<td>{e(c['condition'])} vs {e(c['versus'])}</td><td>{c['n']} / {c['n_versus']}</td>"
                   f"<td>{delta} ({ci})</td><td>{p}</td><td>{verdict}</td></tr>")
    receipt = ""
    for k, v in result["receipt"].items():
        if isinstance(v, dict) and v and k == "inputs_sha256":
            v_html = "<br>".join(f"{e(name)}: <code>{e(str(h))}</code>" for name, h in v.items())
        else:
            v_html = f"<code>{e(json.dumps(v, sort_keys=True))}</code>"
        receipt += f"<tr><th>{e(k)}</th><td>{v_html}</td></tr>"
    missing = "".join(f"<li>{e(m)}</li>" for m in result["div"]["missing_time_points"]) or "<li>none</li>"
    excluded = "".join(f"<li>{e(x['recording'])}: {e(x['reason'])}</li>" for x in result["excluded"]) or "<li>none</li>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Neurocyte experiment: {e(result['experiment'])}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }} th, td {{ padding: 3px 8px; border-bottom: 1px solid #ddd;
text-align: left; font-size: 13px; vertical-align: top; }} figure {{ margin: 1em 0; }} img {{ max-width: 100%; }}
figcaption {{ font-size: 13px; color: #555; }} code {{ font-size: 11px; word-break: break-all; }}
</style></head><body>
<h1>Experiment {e(result['experiment'])}</h1>
<h2>Findings</h2><ul>{heads}</ul>
<h2>Pictures</h2>{pics}
<h2>Dose-response</h2>
<p>Four-parameter Hill fit (scipy.optimize.curve_fit) of each metric over the well's baseline against the
concentration; 95 % interval of the EC50/IC50 from the fit's covariance (t distribution). A fit the data cannot
support says why instead of giving a number.</p>
<table><tr><th>compound</th><th>metric</th><th>kind</th><th>EC50/IC50</th><th>95 % CI</th><th>Hill slope</th>
<th>n</th><th>note</th></tr>{dose or '<tr><td colspan="8">no compound with concentrations</td></tr>'}</table>
<h2>Conditions compared with {e(result['control'])}</h2>
<p>Mann-Whitney U (two-sided) of each condition against the control, per metric and time point, Holm-corrected over
those comparisons; alpha 0.05; Kruskal-Wallis across all conditions in experiment.json. Effect size: Cliff's delta
with a 95 % bootstrap interval (2,000 resamples). No test is made where a group has fewer than 3 wells.</p>
<table><tr><th>metric</th><th>DIV</th><th>comparison</th><th>n</th><th>Cliff's delta (95 % CI)</th><th>p (Holm)</th>
<th>significant</th></tr>{st or '<tr><td colspan="7">one condition only</td></tr>'}</table>
<h2>Excluded recordings</h2><ul>{excluded}</ul>
<h2>Missing time points</h2><ul>{missing}</ul>
<h2>Reproducibility receipt</h2><table>{receipt}</table>
<p>Every value is in experiment.json and the tidy table (tidy.csv; tidy/experiment=…/data.parquet).</p>
</body></html>
"""
