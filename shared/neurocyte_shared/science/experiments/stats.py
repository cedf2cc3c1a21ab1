"""Comparisons of conditions that a reviewer accepts: the test named, Holm's correction for
the comparisons made, effect sizes with confidence intervals, n per group, and no claim of
significance where a group has fewer than 3 wells."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict

ALPHA = 0.05
MIN_N = 3
BOOTSTRAP = 2_000


class Comparison(BaseModel):
    model_config = ConfigDict(frozen=True)

    condition: str
    versus: str
    n: int
    n_versus: int
    test: str = "Mann-Whitney U, two-sided"
    p: float | None
    p_holm: float | None
    significant: bool | None  # None: not tested (a group has fewer than MIN_N wells)
    cliffs_delta: float | None  # P(a > b) - P(a < b), from -1 to 1
    cliffs_delta_ci: tuple[float, float] | None  # 95 %, bootstrap (seeded: the same every run)
    median_difference: float | None  # Hodges-Lehmann: the median of all pairwise differences


class Group(BaseModel):
    model_config = ConfigDict(frozen=True)

    condition: str
    n: int
    median: float | None


class MetricComparison(BaseModel):
    model_config = ConfigDict(frozen=True)

    metric: str
    div: int | None
    groups: list[Group]
    test: str = "Kruskal-Wallis"
    p: float | None
    comparisons: list[Comparison]
    correction: str = "Holm, over the comparisons against the control for this metric and time point"
    note: str | None = None


def compare(metric: str, div: int | None, values: dict[str, list[float]], control: str) -> MetricComparison:
    """Every condition against `control` (Mann-Whitney, Holm-corrected) and all at once
    (Kruskal-Wallis), from per-well values by condition."""
    from scipy.stats import kruskal, mannwhitneyu

    groups = [Group(condition=k, n=len(v), median=float(np.median(v)) if v else None) for k, v in values.items()]
    testable = {k: v for k, v in values.items() if len(v) >= MIN_N}
    p_all = None
    note = None
    if len(testable) >= 2 and len({x for v in testable.values() for x in v}) > 1:
        p_all = float(kruskal(*testable.values()).pvalue)
    elif len(values) >= 2:
        note = f"fewer than two conditions with at least {MIN_N} wells: no test claims a difference"
    raw: list[tuple[str, float | None]] = []
    comparisons = []
    base = values.get(control, [])
    for k, v in values.items():
        if k == control:
            continue
        p = None
        if len(v) >= MIN_N and len(base) >= MIN_N:
            p = 1.0 if len(set(v) | set(base)) == 1 else float(mannwhitneyu(v, base, alternative="two-sided").pvalue)
        raw.append((k, p))
    adjusted = _holm([p for _, p in raw])
    for (k, p), ph in zip(raw, adjusted):
        v = values[k]
        delta, ci = _cliffs(v, base)
        comparisons.append(Comparison(
            condition=k, versus=control, n=len(v), n_versus=len(base), p=p, p_holm=ph,
            significant=None if ph is None else ph < ALPHA, cliffs_delta=delta, cliffs_delta_ci=ci,
            median_difference=float(np.median(np.subtract.outer(v, base))) if v and base else None))
    return MetricComparison(metric=metric, div=div, groups=groups, p=p_all, comparisons=comparisons, note=note)


def _holm(ps: list[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of the tested p values (None stays None)."""
    tested = sorted((p, i) for i, p in enumerate(ps) if p is not None)
    out: list[float | None] = [None] * len(ps)
    running = 0.0
    m = len(tested)
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def _cliffs(a: list[float], b: list[float]) -> tuple[float | None, tuple[float, float] | None]:
    if not a or not b:
        return None, None
    a_, b_ = np.asarray(a, float), np.asarray(b, float)

    def delta(x, y):
        d = np.sign(np.subtract.outer(x, y))
        return float(d.mean())

    rng = np.random.default_rng(0)
    boots = [delta(rng.choice(a_, a_.size), rng.choice(b_, b_.size)) for _ in range(BOOTSTRAP)]
    return delta(a_, b_), (float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5)))
