"""Validation errors as sentences a person can act on (for an email, not a traceback)."""

from __future__ import annotations

from pydantic import ValidationError


def explain(error: ValidationError, what: str) -> str:
    """A pydantic error as one sentence per problem, for an email rather than a traceback."""
    lines = []
    for e in error.errors()[:5]:
        where = ".".join(str(p) for p in e["loc"]) or "(the document)"
        msg = e["msg"]
        if e["type"] == "missing":
            msg = "is missing"
        elif e["type"] == "extra_forbidden":
            msg = "is not a known field"
        lines.append(f"{what}: field '{where}' {msg}")
    more = len(error.errors()) - 5
    if more > 0:
        lines.append(f"... and {more} more problem(s)")
    return "; ".join(lines)


def human_size(n_bytes: float) -> str:
    """2.4 MB, 250 GB: sizes as a file manager says them (decimal units)."""
    units = ("bytes", "kB", "MB", "GB", "TB")
    n, i = float(n_bytes), 0
    while n >= 1000 and i < len(units) - 1:
        n, i = n / 1000, i + 1
    return f"{n:.1f} {units[i]}" if n < 10 and i else f"{n:.0f} {units[i]}"
