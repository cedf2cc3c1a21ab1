"""Dose-response: a four-parameter Hill fit (scipy), the EC50/IC50 with its confidence
interval, and a plain statement when the data cannot support a fit."""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict

MIN_CONCENTRATIONS = 4  # a four-parameter curve needs at least this many distinct doses
MAX_CI_FOLD = 100.0  # an interval wider than this (upper / lower) does not determine the EC50


class DoseResponse(BaseModel):
    """One metric's fit for one compound. ec50 and hill_slope are None where the data cannot
    support them; `note` then says why."""

    model_config = ConfigDict(frozen=True)

    metric: str
    kind: str  # "IC50" when the response falls with the dose, else "EC50"
    ec50: float | None
    ec50_ci: tuple[float, float] | None  # 95 %
    hill_slope: float | None  # negative for a falling response (GraphPad's convention)
    top: float | None
    bottom: float | None
    unit: str  # the concentration unit
    n: int
    concentrations: int
    response: str  # what was fitted, e.g. "mean_firing_rate_hz over the well's baseline"
    note: str | None = None


def hill(c: np.ndarray, bottom: float, top: float, log_ec50: float, h: float) -> np.ndarray:
    return bottom + (top - bottom) / (1.0 + np.power(np.maximum(c, 1e-300) / 10.0**log_ec50, h))


def fit(metric: str, concentration: np.ndarray, response: np.ndarray, unit: str, what: str) -> DoseResponse:
    """Fit y = bottom + (top - bottom) / (1 + (c / EC50)^h) to the treated points (c > 0)."""
    from scipy.optimize import curve_fit
    from scipy.stats import t as student_t

    c = np.asarray(concentration, float)
    y = np.asarray(response, float)
    ok = np.isfinite(c) & np.isfinite(y) & (c > 0)
    c, y = c[ok], y[ok]
    doses = np.unique(c)
    base = dict(metric=metric, unit=unit, n=int(c.size), concentrations=int(doses.size), response=what)
    if doses.size < MIN_CONCENTRATIONS or c.size <= 4:
        return DoseResponse(**base, kind="EC50", ec50=None, ec50_ci=None, hill_slope=None, top=None, bottom=None,
                            note=f"not fitted: {doses.size} concentration(s) and {c.size} point(s); a four-parameter "
                                 f"curve needs at least {MIN_CONCENTRATIONS} concentrations and 5 points")
    low = float(np.median(y[c == doses[0]]))
    high = float(np.median(y[c == doses[-1]]))
    lo_c, hi_c = math.log10(doses[0]), math.log10(doses[-1])
    p0 = (high, low, (lo_c + hi_c) / 2, 1.0)
    span = max(float(np.ptp(y)), 1e-9)
    bounds = ([min(y.min(), 0.0) - span, min(y.min(), 0.0) - span, lo_c - 2, 0.1],
              [y.max() + span, y.max() + span, hi_c + 2, 10.0])
    try:
        params, cov = curve_fit(hill, c, y, p0=p0, bounds=bounds, maxfev=20_000)
    except (RuntimeError, ValueError) as exc:
        return DoseResponse(**base, kind="EC50", ec50=None, ec50_ci=None, hill_slope=None, top=None, bottom=None,
                            note=f"the fit did not converge ({exc.__class__.__name__}): no curve describes these data")
    bottom, top, log_ec50, h = (float(v) for v in params)
    kind = "IC50" if top > bottom else "EC50"
    se = float(np.sqrt(cov[2, 2])) if np.all(np.isfinite(cov)) else float("inf")
    q = float(student_t.ppf(0.975, max(c.size - 4, 1)))
    # an interval wider than 12 decades is no interval (and 10 ** it would overflow)
    ci = (10 ** (log_ec50 - q * se), 10 ** (log_ec50 + q * se)) if q * se < 12 else None
    ec50 = 10**log_ec50
    note = None
    if not lo_c <= log_ec50 <= hi_c:
        note = (f"the {kind} would lie outside the tested concentrations ({doses[0]:g}-{doses[-1]:g} {unit}): "
                "not determined")
        ec50, ci = None, None
    elif ci is None or ci[1] / ci[0] > MAX_CI_FOLD:
        note = f"the data do not determine the {kind}: its 95 % interval spans more than {MAX_CI_FOLD:g}-fold"
    elif abs(top - bottom) < 2 * _residual_sd(c, y, params):
        note = "the response hardly changes with the dose: the curve is no better than a flat line"
    return DoseResponse(**base, kind=kind, ec50=ec50, ec50_ci=ci, hill_slope=-h if kind == "IC50" else h, top=top,
                        bottom=bottom, note=note)


def _residual_sd(c: np.ndarray, y: np.ndarray, params) -> float:
    r = y - hill(c, *params)
    return float(np.sqrt((r * r).sum() / max(c.size - 4, 1)))
