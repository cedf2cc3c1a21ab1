"""The plate map: one row per recording of an experiment, with what was done to its well.

A CSV with exactly these columns (any order):
    file,stream,well,condition,compound,concentration,concentration_unit,genotype,div,replicate,baseline_file
`file` is relative to the map's folder; `stream` picks one well of a multi-well file; a
treated row's `baseline_file` is the `file` of the same well's baseline row (a row of this
map whose own `baseline_file` is empty). Empty cells are allowed in stream, compound,
concentration, concentration_unit, genotype, div, replicate and baseline_file.
Every problem is reported at once, each with its line, in words a person can act on."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

COLUMNS = ("file", "stream", "well", "condition", "compound", "concentration", "concentration_unit", "genotype",
           "div", "replicate", "baseline_file")
OPTIONAL = ("stream", "compound", "concentration", "concentration_unit", "genotype", "div", "replicate",
            "baseline_file")
MAX_ROWS = 1_536  # sixteen 96-well plates


class PlateMapError(ValueError):
    """A plate map that cannot be used; `problems` lists every reason, one per line of the CSV."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("the plate map cannot be used:\n" + "\n".join(f"  - {p}" for p in self.problems))


class PlateMapRow(BaseModel):
    """One recording of the experiment and what its well had."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    line: int = Field(description="the row's line in the CSV (the header is line 1)")
    file: str = Field(min_length=1)
    stream: str | None = None
    well: str = Field(min_length=1, max_length=32)
    condition: str = Field(min_length=1, max_length=64)
    compound: str | None = Field(None, max_length=64)
    concentration: float | None = Field(None, ge=0)
    concentration_unit: str | None = Field(None, max_length=16)
    genotype: str | None = Field(None, max_length=64)
    div: int | None = Field(None, ge=0, le=1000, description="days in vitro")
    replicate: str | None = Field(None, max_length=32)
    baseline_file: str | None = None

    @field_validator("file", "baseline_file")
    @classmethod
    def _relative(cls, v: str | None) -> str | None:
        if v is not None and (v.startswith("/") or ".." in Path(v).parts):
            raise ValueError(f"{v!r} must be a path inside the plate map's folder")
        return v

    @model_validator(mode="after")
    def _units(self) -> PlateMapRow:
        if self.concentration is not None and not self.concentration_unit:
            raise ValueError(f"concentration {self.concentration:g} has no concentration_unit (say nM, uM, ...)")
        if self.concentration_unit and self.concentration is None:
            raise ValueError(f"concentration_unit {self.concentration_unit!r} is given without a concentration")
        if self.concentration is not None and self.concentration > 0 and not self.compound:
            raise ValueError(f"concentration {self.concentration:g} is given without a compound")
        if self.baseline_file is not None and self.baseline_file == self.file:
            raise ValueError("a recording cannot be its own baseline (baseline_file equals file)")
        return self

    @property
    def key(self) -> tuple[str, str | None]:
        """A recording: its file and, for a multi-well file, its well's stream."""
        return self.file, self.stream

    @property
    def is_baseline(self) -> bool:
        return self.baseline_file is None


class PlateMap(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rows: tuple[PlateMapRow, ...] = Field(min_length=1)

    def baseline_of(self, row: PlateMapRow) -> PlateMapRow | None:
        if row.baseline_file is None:
            return None
        for r in self.rows:
            if r.file == row.baseline_file and r.well == row.well and r.is_baseline:
                return r
        return None

    def files(self) -> list[str]:
        return sorted({r.file for r in self.rows})

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(COLUMNS)
        for r in self.rows:
            w.writerow(["" if getattr(r, c) is None else _cell(getattr(r, c)) for c in COLUMNS])
        return buf.getvalue()


def _cell(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def parse(text: str, *, exists: Callable[[str], bool] | None = None,
          streams: Callable[[str], Sequence[str]] | None = None) -> PlateMap:
    """A plate map from CSV text, or PlateMapError with every problem. exists(file) says whether
    a file named in the map is there; streams(file) lists the recordings a file holds (its
    wells) and is asked only of files whose rows name a stream. Both are optional: without
    them, only the map's own consistency is checked; streams(file) may return None for a file
it cannot see (the other uploads of an experiment)."""
    problems: list[str] = []
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))  # a spreadsheet's byte-order mark
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise PlateMapError(["the file is empty: the first line must be the header " + ",".join(COLUMNS)]) from None
    missing = [c for c in COLUMNS if c not in header]
    unknown = [h for h in header if h not in COLUMNS]
    if missing or unknown or len(set(header)) != len(header):
        said = []
        if missing:
            said.append("missing " + ", ".join(missing))
        if unknown:
            said.append("unknown " + ", ".join(repr(u) for u in unknown))
        if len(set(header)) != len(header):
            said.append("a column is named twice")
        raise PlateMapError([f"line 1 (the header): {'; '.join(said)}. The header is: " + ",".join(COLUMNS)])
    rows: list[PlateMapRow] = []
    for line, cells in enumerate(reader, start=2):
        if not any(c.strip() for c in cells):
            continue  # a blank line
        if len(cells) != len(header):
            problems.append(f"line {line}: {len(cells)} cells, the header has {len(header)}")
            continue
        values = {h: c.strip() for h, c in zip(header, cells)}
        for c in OPTIONAL:
            if values[c] == "":
                values[c] = None
        try:
            rows.append(PlateMapRow(line=line, **values))
        except ValidationError as exc:
            problems.extend(f"line {line}: {_said(e)}" for e in exc.errors())
        if len(rows) > MAX_ROWS:
            problems.append(f"more than {MAX_ROWS} rows: split the experiment")
            break
    if not rows and not problems:
        problems.append("no rows under the header: one row per recording")
    problems.extend(_consistency(rows, exists, streams))
    if problems:
        raise PlateMapError(problems)
    return PlateMap(rows=tuple(rows))


def read(path: Path, *, check_files: bool = True) -> PlateMap:
    """A plate map file, its files looked for beside it (and their wells listed)."""
    folder = path.resolve().parent
    if not check_files:
        return parse(path.read_text(encoding="utf-8-sig"))
    return parse(path.read_text(encoding="utf-8-sig"), exists=lambda f: (folder / f).is_file(),
                 streams=lambda f: local_streams(folder / f))


def local_streams(path: Path) -> list[str]:
    """The recordings a local file holds (its wells), by their stream names."""
    from neurocyte_shared.formats import identify, list_streams

    companions = [path] + [p for p in path.parent.glob(path.name.split(".")[0] + ".*") if p != path]
    files = {p.name: p for p in companions}
    fmt, roles = identify(list(files))
    return list(list_streams(fmt, roles, lambda n: open(files[n], "rb")))


def _said(error: dict) -> str:
    where = ".".join(str(x) for x in error.get("loc", ()) if x != "__root__")
    msg = error.get("msg", "invalid").removeprefix("Value error, ")
    if error.get("type") == "float_parsing":
        return f"{where}: {error.get('input')!r} is not a number"
    if error.get("type") == "int_parsing":
        return f"{where}: {error.get('input')!r} is not a whole number of days"
    return f"{where}: {msg}" if where else msg


def _consistency(rows: list[PlateMapRow], exists, streams) -> list[str]:
    problems = []
    seen: dict[tuple, int] = {}
    for r in rows:
        if r.key in seen:
            what = f"{r.file}" + (f" stream {r.stream}" if r.stream else "")
            problems.append(f"line {r.line}: {what} is already on line {seen[r.key]}: one row per recording")
        seen.setdefault(r.key, r.line)
    by_file_well = {(r.file, r.well): r for r in rows}
    for r in rows:
        if r.baseline_file is None:
            continue
        base = by_file_well.get((r.baseline_file, r.well))
        if base is None:
            problems.append(f"line {r.line}: baseline_file {r.baseline_file} has no row for well {r.well} in this map")
        elif not base.is_baseline:
            problems.append(f"line {r.line}: baseline_file {r.baseline_file} (line {base.line}) is itself a treated "
                            "recording; a baseline row has an empty baseline_file")
    if exists is not None:
        for f in sorted({r.file for r in rows}):
            if not exists(f):
                problems.append(f"line {min(r.line for r in rows if r.file == f)}: file {f} is not there")
    if streams is not None:
        for f in sorted({r.file for r in rows if r.stream}):
            if exists is not None and not exists(f):
                continue
            try:
                have = streams(f)
            except Exception as exc:  # an unreadable file: said once, with the reader's reason
                problems.append(f"{f}: {exc}")
                continue
            if have is None:  # not known here (a file of another upload)
                continue
            have = list(have)
            for r in rows:
                if r.file == f and r.stream and r.stream not in have:
                    problems.append(f"line {r.line}: {f} has no well {r.stream!r} (it has {', '.join(have) or 'none'})")
    return problems


WELL = re.compile(r"^([A-Za-z]{1,2})0*(\d{1,3})$")


def well_position(name: str) -> tuple[int, int] | None:
    """(row, column) from 0 of a plate well named like A1, B03 or AA12; None otherwise."""
    m = WELL.match(name.strip())
    if not m:
        return None
    letters = m.group(1).upper()
    row = 0
    for ch in letters:
        row = row * 26 + (ord(ch) - 64)
    return row - 1, int(m.group(2)) - 1
