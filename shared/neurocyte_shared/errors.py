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
