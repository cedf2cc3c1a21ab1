"""The experiment's tidy table: one row per recording (a well at a time point), the plate
map's columns beside the recording's headline metrics, quality exclusions and the change
against the same well's baseline."""

from __future__ import annotations

import csv
import io
import math

from pydantic import BaseModel, ConfigDict, Field

from neurocyte_shared.science.experiments.platemap import COLUMNS, PlateMap, PlateMapRow
from neurocyte_shared.science.metrics import Summary

# metric -> (label, unit): what the experiment report compares
HEADLINE = {
    "mean_firing_rate_hz": ("Weighted mean firing rate", "Hz"),
    "active_electrodes": ("Active electrodes", "electrodes"),
    "burst_rate_per_min": ("Burst rate (mean over active electrodes)", "bursts/min"),
    "percent_spikes_in_bursts": ("Spikes in bursts (mean over active electrodes)", "%"),
    "network_bursts_per_min": ("Network burst rate", "bursts/min"),
    "sttc_mean": ("Synchrony (mean STTC)", "STTC"),
}


class QualityRules(BaseModel):
    """Which wells are left out of the comparisons (and shown as excluded, with the reason)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_active_electrodes: int = Field(3, ge=0, description="a well needs at least this many active electrodes")
    max_noisy_fraction: float = Field(0.25, ge=0, le=1, description="a well with more of its electrodes noisy "
                                      "than this share is left out")


def metrics_of(summary: Summary) -> dict[str, float | None]:
    active = [c for c in summary.channels if c.active]
    mean = (lambda xs: sum(xs) / len(xs)) if active else (lambda xs: None)
    return {
        "mean_firing_rate_hz": summary.mean_firing_rate_hz,
        "active_electrodes": float(summary.active_electrodes),
        "burst_rate_per_min": mean([c.burst_rate_per_min for c in active]),
        "percent_spikes_in_bursts": mean([c.percent_spikes_in_bursts for c in active]),
        "network_bursts_per_min": summary.network.rate_per_min if summary.network else 0.0,
        "sttc_mean": summary.synchrony.sttc_mean if summary.synchrony else None,
    }


def exclusion(summary: Summary, rules: QualityRules) -> str | None:
    """Why a well is left out, or None."""
    if summary.active_electrodes < rules.min_active_electrodes:
        return f"too few active electrodes ({summary.active_electrodes} < {rules.min_active_electrodes})"
    noisy = len(summary.quality.noisy_electrodes) if summary.quality else 0
    if summary.n_channels and noisy / summary.n_channels > rules.max_noisy_fraction:
        return f"noisy: {noisy} of {summary.n_channels} electrodes fire above the noise rate"
    return None


# where a well was stimulated: how many stimuli, and how many electrodes respond (empty where
# fewer than 5 stimuli: no response was measured)
STIMULATION = ("stimuli", "responding_electrodes", "response_latency_ms")
TIDY_COLUMNS = (*COLUMNS, "recording_id", "duration_s", "total_spikes", *STIMULATION, *HEADLINE,
                *(f"{m}_vs_baseline" for m in HEADLINE), "excluded", "exclusion_reason")


def tidy_rows(plate: PlateMap, summaries: dict[tuple[str, str | None], Summary],
              rules: QualityRules = QualityRules()) -> list[dict]:
    """One dict per plate-map row (with its summary), in a fixed order: time point, well, file.
    A treated row's `<metric>_vs_baseline` is its value over its well's baseline value (None
    where either is missing or the baseline is 0)."""
    values = {r.key: metrics_of(summaries[r.key]) for r in plate.rows if r.key in summaries}
    rows = []
    for r in plate.rows:
        s = summaries.get(r.key)
        row = {c: getattr(r, c) for c in COLUMNS}
        row["recording_id"] = s.recording_id if s else None
        row["duration_s"] = s.duration_s if s else None
        row["total_spikes"] = s.total_spikes if s else None
        row.update(s.stimulation() if s else dict.fromkeys(STIMULATION))
        row.update(values.get(r.key, dict.fromkeys(HEADLINE)))
        base = plate.baseline_of(r)
        for m in HEADLINE:
            row[f"{m}_vs_baseline"] = _ratio(row[m], values.get(base.key, {}).get(m) if base else None)
        reason = "no result for this recording" if s is None else exclusion(s, rules)
        if reason is None and base is not None and base.key in summaries:
            why = exclusion(summaries[base.key], rules)
            reason = f"its baseline {base.file}: {why}" if why else None
        row["excluded"] = reason is not None
        row["exclusion_reason"] = reason
        rows.append(row)
    return sorted(rows, key=_order)


def _order(row: dict) -> tuple:
    return (-1 if row["div"] is None else row["div"], row["well"], row["file"], row["stream"] or "")


def _ratio(value: float | None, baseline: float | None) -> float | None:
    if value is None or baseline is None or baseline == 0 or not math.isfinite(baseline):
        return None
    return value / baseline


def to_csv(rows: list[dict]) -> bytes:
    """Byte for byte the same for the same rows: fixed columns, floats to 9 significant digits."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(TIDY_COLUMNS)
    for row in rows:
        w.writerow([_text(row[c]) for c in TIDY_COLUMNS])
    return buf.getvalue().encode()


def _text(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.9g}"
    return str(v)


def to_parquet(rows: list[dict]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {c: pa.string() for c in TIDY_COLUMNS}
    types.update({"concentration": pa.float64(), "div": pa.int32(), "duration_s": pa.float64(),
                  "total_spikes": pa.int64(), "excluded": pa.bool_(), "stimuli": pa.int64(),
                  "responding_electrodes": pa.int64(), "response_latency_ms": pa.float64()})
    types.update({m: pa.float64() for m in HEADLINE})
    types.update({f"{m}_vs_baseline": pa.float64() for m in HEADLINE})
    schema = pa.schema([(c, types[c]) for c in TIDY_COLUMNS])
    table = pa.Table.from_pydict({c: [row[c] for row in rows] for c in TIDY_COLUMNS}, schema=schema)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def row_label(row: dict | PlateMapRow) -> str:
    get = row.get if isinstance(row, dict) else (lambda k: getattr(row, k))
    when = f" DIV {get('div')}" if get("div") is not None else ""
    return f"{get('well')}{when} ({get('file')}{' ' + get('stream') if get('stream') else ''})"
