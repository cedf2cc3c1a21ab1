"""An experiment's analysis: from its plate map and each recording's summary to the tidy
table, the comparisons of conditions, dose-response fits, trajectories over days in vitro and
the headline findings; `report.py` draws and writes them. Pure: no AWS, no files."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from neurocyte_shared.science.experiments import fits, stats
from neurocyte_shared.science.experiments.platemap import PlateMap
from neurocyte_shared.science.experiments.table import HEADLINE, QualityRules, row_label, tidy_rows
from neurocyte_shared.science.metrics import Summary

SCHEMA_VERSION = 1
CONTROL_NAMES = ("control", "vehicle", "baseline", "untreated", "wt", "wild type", "dmso")


class ExperimentParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    control: str | None = Field(None, description="the condition others are compared with (default: one named "
                                "control, vehicle, baseline, untreated, WT or DMSO, else the first in the map)")
    plate_metric: str = Field("mean_firing_rate_hz", description="the metric the plate view colours wells by")
    quality: QualityRules = QualityRules()


def choose_control(conditions: list[str], asked: str | None) -> str:
    if asked is not None:
        if asked not in conditions:
            raise ValueError(f"control condition {asked!r} is not in the plate map (it has {', '.join(conditions)})")
        return asked
    for c in conditions:
        if c.strip().lower() in CONTROL_NAMES:
            return c
    return conditions[0]


def analyse(name: str, plate: PlateMap, summaries: dict[tuple[str, str | None], Summary],
            params: ExperimentParams = ExperimentParams(), receipt: dict | None = None) -> tuple[dict, list[dict]]:
    """(experiment.json's content, the tidy rows)."""
    rows = tidy_rows(plate, summaries, params.quality)
    kept = [r for r in rows if not r["excluded"]]
    conditions = list(dict.fromkeys(r.condition for r in plate.rows))
    control = choose_control(conditions, params.control)
    divs = sorted({r["div"] for r in rows if r["div"] is not None})

    comparisons = []
    for div in (divs or [None]):
        at = [r for r in kept if r["div"] == div]
        for m in HEADLINE:
            values: dict[str, list[float]] = {c: [] for c in conditions}
            for r in at:
                if r[m] is not None:
                    values[r["condition"]].append(float(r[m]))
            values = {k: v for k, v in values.items() if v}
            if len(values) >= 2 and control in values:
                comparisons.append(stats.compare(m, div, values, control))

    compounds = []
    for compound in sorted({r["compound"] for r in kept if r["compound"]}):
        treated = [r for r in kept if r["compound"] == compound and (r["concentration"] or 0) > 0]
        units = sorted({r["concentration_unit"] for r in treated})
        if len(units) > 1:
            compounds.append({"compound": compound, "dose_response": [], "note":
                              f"concentrations in several units ({', '.join(units)}): give them in one"})
            continue
        normalised = bool(treated) and all(r["mean_firing_rate_hz_vs_baseline"] is not None for r in treated)
        out = []
        for m in HEADLINE:
            key = f"{m}_vs_baseline" if normalised else m
            pts = [(r["concentration"], r[key]) for r in treated if r[key] is not None]
            what = f"{m} over the well's baseline" if normalised else f"{m} (no baselines: not normalised)"
            c, y = (np.array([p[i] for p in pts], float) for i in (0, 1))
            out.append(fits.fit(m, c, y, units[0] if units else "", what).model_dump())
        compounds.append({"compound": compound, "dose_response": out})

    trajectories, missing = _div(rows, divs)
    excluded = [{"recording": row_label(r), "reason": r["exclusion_reason"]} for r in rows if r["excluded"]]
    result = {
        "schema_version": SCHEMA_VERSION,
        "experiment": name,
        "recordings": len(rows),
        "wells": len({r["well"] for r in rows}),
        "conditions": conditions,
        "control": control,
        "time_points_div": divs,
        "metrics": {m: {"label": label, "unit": unit} for m, (label, unit) in HEADLINE.items()},
        "excluded": excluded,
        "statistics": [c.model_dump() for c in comparisons],
        "compounds": compounds,
        "div": {"trajectories": trajectories, "missing_time_points": missing},
        "parameters": params.model_dump(),
        "receipt": receipt or {},
    }
    result["headline"] = headline(result)
    return result, rows


def _div(rows: list[dict], divs: list[int]) -> tuple[list[dict], list[str]]:
    """Per condition and metric, the median over wells at each time point (wells that were
    recorded, never interpolated), and the time points a well of a condition lacks."""
    if len(divs) < 2:
        return [], []
    by_cond: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["div"] is not None:
            by_cond[r["condition"]].append(r)
    trajectories, missing = [], []
    for cond, rs in by_cond.items():
        expected = sorted({r["div"] for r in rs})
        for well in sorted({r["well"] for r in rs}):
            have = {r["div"] for r in rs if r["well"] == well}
            missing.extend(f"well {well} ({cond}): no recording at DIV {d}" for d in expected if d not in have)
        for m in HEADLINE:
            points = []
            for d in expected:
                v = [r[m] for r in rs if r["div"] == d and not r["excluded"] and r[m] is not None]
                points.append({"div": d, "n": len(v), "median": float(np.median(v)) if v else None})
            trajectories.append({"condition": cond, "metric": m, "points": points})
    return trajectories, missing


def _fmt(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}g}"


def headline(result: dict) -> list[str]:
    """The findings an email can carry, as sentences."""
    out = [f"{result['recordings']} recordings of {result['wells']} wells, {len(result['conditions'])} "
           f"condition(s); compared with {result['control']!r}."]
    if result["excluded"]:
        out.append(f"{len(result['excluded'])} left out by the quality rules: "
                   + "; ".join(f"{e['recording']}: {e['reason']}" for e in result["excluded"][:5])
                   + (" ..." if len(result["excluded"]) > 5 else ""))
    for comp in result["compounds"]:
        for d in comp["dose_response"]:
            if d["metric"] != "mean_firing_rate_hz":
                continue
            label = result["metrics"][d["metric"]]["label"].lower()
            if d["ec50"] is not None and d["note"] is None:
                lo, hi = d["ec50_ci"]
                out.append(f"{comp['compound']}: {d['kind']} of the {label} {_fmt(d['ec50'])} {d['unit']} "
                           f"(95 % CI {_fmt(lo)}-{_fmt(hi)}), Hill slope {_fmt(d['hill_slope'], 2)}, "
                           f"{d['n']} wells at {d['concentrations']} concentrations.")
            else:
                out.append(f"{comp['compound']}, {label}: {d['note']}.")
        if comp.get("note"):
            out.append(f"{comp['compound']}: {comp['note']}.")
    for s in result["statistics"]:
        label = result["metrics"][s["metric"]]["label"].lower()
        when = f" at DIV {s['div']}" if s["div"] is not None else ""
        for c in s["comparisons"]:
            if c["significant"]:
                way = "higher" if (c["median_difference"] or 0) > 0 else "lower"
                lo, hi = c["cliffs_delta_ci"]
                out.append(f"{c['condition']} vs {c['versus']}{when}: {label} {way} (Cliff's delta "
                           f"{c['cliffs_delta']:.2f}, 95 % CI {lo:.2f} to {hi:.2f}; Mann-Whitney p = {c['p_holm']:.3g} "
                           f"after Holm; n = {c['n']} vs {c['n_versus']}).")
    for t in result["div"]["trajectories"]:
        if t["metric"] != "mean_firing_rate_hz":
            continue
        pts = [p for p in t["points"] if p["median"] is not None]
        if len(pts) >= 2:
            out.append(f"{t['condition']}: weighted mean firing rate {_fmt(pts[0]['median'])} Hz at DIV "
                       f"{pts[0]['div']} -> {_fmt(pts[-1]['median'])} Hz at DIV {pts[-1]['div']}.")
    if result["div"]["missing_time_points"]:
        out.append("Missing time points (not interpolated): " + "; ".join(result["div"]["missing_time_points"][:5])
                   + (" ..." if len(result["div"]["missing_time_points"]) > 5 else ""))
    return out
