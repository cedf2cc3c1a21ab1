"""Rerun with other parameters: a form generated from the detection and metrics parameter
models (names with units, descriptions, defaults), checked by the same models, and a
RerunRequested event; the pipeline writes a new result version beside the others."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ValidationError

from neurocyte_shared.errors import explain
from neurocyte_shared.science.detection.params import DetectionParams
from neurocyte_shared.science.metrics import MetricsParams

UNITS = {"_hz": "Hz", "_ms": "ms", "_um": "µm", "_s": "s", "_mad": "× noise", "_uv": "µV", "_per_min": "per min",
         "_fraction": "share"}


@dataclass(frozen=True)
class FormField:
    group: str  # "detection" or "metrics": also the form field's prefix
    name: str
    kind: str  # number, integer, bool, choice
    default: Any
    description: str
    unit: str
    choices: tuple[str, ...] = ()

    @property
    def input_name(self) -> str:
        return f"{self.group}.{self.name}"


def _fields(group: str, model: type[BaseModel]) -> list[FormField]:
    out = []
    for name, f in model.model_fields.items():
        ann = f.annotation
        if get_origin(ann) is Literal:
            kind, choices = "choice", tuple(str(c) for c in get_args(ann))
        else:
            kind, choices = {bool: "bool", int: "integer"}.get(ann, "number"), ()
        unit = next((u for suffix, u in UNITS.items() if name.endswith(suffix)), "")
        out.append(FormField(group, name, kind, f.default, f.description or "", unit, choices))
    return out


FIELDS = _fields("detection", DetectionParams) + _fields("metrics", MetricsParams)


def parse(form: Any) -> tuple[DetectionParams, MetricsParams] | str:
    """The parameters a submitted form asks for, or what is wrong with them in plain words."""
    values: dict[str, dict[str, Any]] = {"detection": {}, "metrics": {}}
    for f in FIELDS:
        raw = form.get(f.input_name)
        if f.kind == "bool":
            values[f.group][f.name] = raw is not None  # an unticked box is not sent
        elif raw not in (None, ""):
            values[f.group][f.name] = raw
    try:
        return DetectionParams(**values["detection"]), MetricsParams(**values["metrics"])
    except ValidationError as exc:
        return explain(exc, "parameters")


def differences(parameters: dict) -> str:
    """A version's label: its parameters that differ from the defaults, or "defaults"."""
    defaults = {"detection": DetectionParams().model_dump(), "metrics": MetricsParams().model_dump()}
    changed = [f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
               for group in ("detection", "metrics") for k, v in (parameters.get(group) or {}).items()
               if k in defaults[group] and defaults[group][k] != v]
    return ", ".join(changed) or "defaults"
