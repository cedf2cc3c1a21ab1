"""The science on this machine, without AWS: detect and report."""

from __future__ import annotations

from contextlib import contextmanager, suppress
from pathlib import Path

import click
from rich.progress import (
    BarColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from neurocyte_cli.ui import _fail, console, out


def _local_check(paths: list[Path], stream: str | None = None):
    """The checks ingest runs, on local files, before anything is uploaded: ([(stream, info)]
    for each recording the files hold, or for the one `stream` named), or (None, reason)."""
    from neurocyte_shared.formats import InvalidRecording, check_all, identify, open_reader

    folder = {p.name: p for p in paths}
    opener = lambda n: open(folder[n], "rb")  # noqa: E731
    sizes = {p.name: p.stat().st_size for p in paths}
    try:
        fmt, roles = identify(list(folder))
        if stream is None:
            return check_all(fmt, roles, opener, sizes), None
        reader = open_reader(fmt, roles, opener, sizes, stream)
        reader.close()
        return [(stream, reader.info)], None
    except InvalidRecording as exc:
        return None, str(exc)


def with_companions(files: tuple[Path, ...]) -> tuple[Path, ...]:
    """The files named plus each one's companion lying beside it when not named: a raw
    binary's `.json` sidecar, a SpikeGLX `.bin`'s `.meta` (a user names the data file only)."""
    named = {p.resolve() for p in files}
    out = list(files)
    for p in files:
        if p.suffix != ".bin":
            continue
        for suffix in (".json", ".meta"):
            companion = p.with_suffix(suffix)
            if companion.is_file() and companion.resolve() not in named:
                out.append(companion)
                named.add(companion.resolve())
                break
    return tuple(out)


def _detection_options(f):
    """Every DetectionParams field as an option, its default shown by --help."""
    from neurocyte_shared.science.detection import DetectionParams

    for name, field in reversed(list(DetectionParams.model_fields.items())):
        if field.annotation is bool:
            flag = name.replace("_", "-")
            f = click.option(f"--{flag}/--no-{flag}", name, default=field.default, show_default=True,
                             help=field.description or "")(f)
            continue
        kind = (
            click.Choice(list(field.annotation.__args__)) if hasattr(field.annotation, "__args__") else field.annotation
        )
        f = click.option(
            f"--{name.replace('_', '-')}",
            name,
            type=kind,
            default=field.default,
            show_default=True,
            help=field.description or "",
        )(f)
    return f


def _stream_option(f):
    return click.option(
        "--stream",
        default=None,
        metavar="ID",
        help="which recording of a file that holds several: a MaxWell well (well000) or an NWB "
        "ElectricalSeries; `neurocyte validate` lists them",
    )(f)


def _local_recording(files: tuple[Path, ...], params: dict, stream: str | None):
    """(info, DetectionParams, LocalRecording) of local files, or a clear refusal and exit 1."""
    from neurocyte_shared.science.detection import DetectionParams
    from neurocyte_shared.science.detection.windows import LocalRecording

    found, problem = _local_check(list(files), stream)
    if problem:
        _fail(f"refused: {problem}")
    try:
        p = DetectionParams(**params)
    except ValueError as exc:
        _fail(str(exc))
    if len(found) > 1:
        _fail(
            f"refused: {files[0].name} holds {len(found)} recordings ({', '.join(str(s) for s, _ in found)}); "
            "choose one with --stream"
        )
    stream, info = found[0]
    return info, p, LocalRecording(tuple(f.resolve() for f in files), stream)


@contextmanager
def _detecting(files: tuple[Path, ...], n_samples: int):
    """A progress bar over the recording's samples; yields detect_recording's on_progress.
    A recording that turns out bad part-way through (cut short while being read, unreadable)
    is a clear error and exit 1, not a traceback."""
    from neurocyte_shared.formats import InvalidRecording

    try:
        with Progress(
            TextColumn("detect"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeRemainingColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("detect", total=n_samples)
            yield lambda done, _total: progress.update(task, completed=done)
    except (InvalidRecording, OSError) as exc:
        _fail(f"{files[0].name}: {exc}")


class _SpikeFile:
    """`neurocyte detect`'s output, written window by window: .parquet (zstd) or .csv.
    pyarrow is imported only for Parquet: it costs start-up time."""

    def __init__(self, path: Path, parquet: bool) -> None:
        self._parquet = parquet
        if self._parquet:
            import pyarrow.parquet as pq

            from neurocyte_shared.storage.spikes import SCHEMA

            # A file object, not a path: with a path pyarrow resolves a filesystem (slow imports).
            self._file = open(path, "wb")
            self._writer = pq.ParquetWriter(self._file, SCHEMA, compression="zstd")
        else:
            self._file = open(path, "w")
            self._file.write("sample_index,channel_index,amplitude_uv,peeled\n")

    def write(self, table) -> None:
        if self._parquet:
            from neurocyte_shared.storage.spikes import arrow_table

            self._writer.write_table(arrow_table(table))
        else:
            self._file.writelines(
                map(
                    "{},{},{:.2f},{:d}\n".format,
                    table.sample_index.tolist(),
                    table.channel_index.tolist(),
                    table.amplitude_uv.tolist(),
                    table.peeled_mask.tolist(),
                )
            )

    def close(self) -> None:
        if self._parquet:
            self._writer.close()
        self._file.close()


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_path",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="spike table: .csv or .parquet (columns sample_index, channel_index, amplitude_uv); "
    "default NAME.spikes.parquet beside the recording",
)
@click.option(
    "--jobs",
    default=1,
    show_default=True,
    type=click.IntRange(1, 256),
    help="cores to use (threads; the kernels release the GIL)",
)
@click.option(
    "--window-s",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="seconds per window, capped at 8 M values per window (bounds memory)",
)
@_stream_option
@_detection_options
def detect(
    files: tuple[Path, ...], out_path: Path | None, jobs: int, window_s: float, stream: str | None, **params
) -> None:
    """Detect spikes in a recording file on this machine (no AWS)."""
    files = with_companions(files)
    from neurocyte_shared.science.detection.windows import detect_recording, keep_freed_memory

    keep_freed_memory()

    if out_path is None:
        data = files[0]
        out_path = data.with_name(data.name.split(".")[0] + (f"-{stream}" if stream else "") + ".spikes.parquet")
        if out_path.exists():
            _fail(f"{out_path} exists: name another file with --out (results are never overwritten unasked)")
    # Checked before the work, not found out at the first window.
    if out_path.suffix.lower() not in (".csv", ".parquet"):
        _fail(f"--out {out_path.name}: the spike table is written as .csv or .parquet; end the name with one")
    if not out_path.parent.is_dir():
        _fail(f"--out {out_path}: the folder {out_path.parent} does not exist")
    info, p, recording = _local_recording(files, params, stream)
    total = 0
    tmp = out_path.with_name(out_path.name + ".partial")  # never a half-written result
    parquet = out_path.suffix.lower() == ".parquet"
    # Opened before the work: a --out that cannot be written fails at once, and pyarrow's
    # import (holding the GIL) does not stall the --jobs workers mid-run.
    try:
        out = _SpikeFile(tmp, parquet)
    except OSError as exc:
        _fail(f"--out {out_path}: cannot write there ({exc.strerror or exc})")
    try:
        with _detecting(files, info.n_samples) as on_progress:
            for table in detect_recording(recording, p, window_s=window_s, jobs=jobs, on_progress=on_progress):
                out.write(table)
                total += len(table)
            out.close()
    except BaseException:  # an error, a bad file's exit or Ctrl-C: no half-written table left behind
        with suppress(Exception):  # already failing; the first error is the one to show
            out.close()
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(out_path)
    console.print(f"{total:,} spikes in {info.n_channels} channels x {info.duration_s:.1f} s -> {out_path}")


class _FolderSink:
    """A result written into a local folder (the caller renames the folder into place)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def write(self, name: str, data: bytes, content_type: str) -> None:
        (self.folder / name).write_bytes(data)

    def write_last(self, name: str, data: bytes, content_type: str) -> bool:
        self.write(name, data, content_type)
        return True


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="directory for summary.json, spikes.parquet, the PNGs and report.html (created; must not exist)",
)
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(1, 256), help="cores to use")
@click.option("--name", default=None, help="recording name in the report (default: the file's stem)")
@_stream_option
@_detection_options
def report(files: tuple[Path, ...], out_dir: Path, jobs: int, name: str | None, stream: str | None, **params) -> None:
    """Detection plus summary on this machine (no AWS): the same summary.json, pictures and
    report.html the pipeline emails a link to."""
    files = with_companions(files)
    import shutil
    import tempfile

    from neurocyte_shared.science import results

    if out_dir.exists():
        _fail(f"{out_dir} exists; choose a new directory (results are never overwritten)")
    summary, merged, waveforms, _ = analyse_recording(files, params, stream, jobs, name)
    # Everything into a temporary sibling, then one rename: never a half-written result.
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        results.publish(summary, merged, _FolderSink(tmp), waveforms, {f.name: sha256_of(f) for f in files})
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    net = summary.network.count if summary.network else 0
    sync = summary.synchrony.sttc_mean if summary.synchrony else None
    out.print(
        f"{summary.total_spikes:,} spikes, {summary.active_electrodes}/{summary.n_channels} active electrodes, "
        f"{summary.mean_firing_rate_hz:.2f} Hz weighted mean rate, {summary.bursting_electrodes} bursting, "
        f"{net} network bursts, STTC {sync if sync is None else round(sync, 3)}"
    )
    r = summary.stimulus_response
    if r is not None:
        lat = "" if r.median_latency_ms is None else f" (median latency {r.median_latency_ms:.1f} ms)"
        out.print(f"{r.responding_electrodes} of {r.electrodes_tested} electrodes with spikes respond to "
                  f"{r.stimuli} stimuli{lat}")
    out.print(f"report: {out_dir / 'report.html'}")


def analyse_recording(files: tuple[Path, ...], params: dict, stream: str | None, jobs: int, name: str | None):
    """(summary, spikes, waveforms, DetectionParams) of a local recording, with a progress bar;
    a recording that cannot be read is a clear error and exit 1. `neurocyte report` and
    `neurocyte experiment report` both run it."""
    import numpy as np

    from neurocyte_shared.science.detection.windows import detect_recording, keep_freed_memory
    from neurocyte_shared.science.metrics import summarize
    from neurocyte_shared.science.table import SpikeTable
    from neurocyte_shared.science.waveforms import Waveforms

    keep_freed_memory()
    info, p, recording = _local_recording(files, params, stream)
    noise: list[np.ndarray] = []
    clipped = np.zeros(info.n_channels, np.int64)
    silenced = np.zeros(info.n_channels, np.int64)
    artefacts: list[int] = []

    def unread(u) -> None:  # each window's clipped and silenced samples, and its artefacts
        np.add(clipped, u.clipped, out=clipped)
        np.add(silenced, u.silenced, out=silenced)
        artefacts.extend(u.artefacts)

    waveforms: list = []
    tables = []
    with _detecting(files, info.n_samples) as on_progress:
        for table in detect_recording(
            recording,
            p,
            jobs=jobs,
            on_noise=noise.append,
            on_unread=unread,
            on_waveforms=waveforms.append,
            on_progress=on_progress,
        ):
            tables.append(table)
    merged = SpikeTable.concat(tables)
    console.print(f"{len(merged):,} spikes; summarising and drawing ...")
    stem = files[0].name.split(".")[0] + (f"-{stream}" if stream else "")
    summary = summarize(
        merged,
        recording_id=f"local-{stem}",
        recording_name=name or stem,
        format=info.format,
        n_channels=info.n_channels,
        sampling_rate_hz=info.sampling_rate_hz,
        n_samples=info.n_samples,
        channel_ids=info.channel_ids,
        channel_locations_um=info.channel_locations_um,
        detection_parameters=p.model_dump(),
        noise_uv=noise[0] if noise else None,
        saturated_samples=clipped,
        silenced_samples=silenced,
        artefact_samples=np.sort(np.asarray(artefacts, np.int64)),
    )
    return summary, merged, Waveforms.merged(waveforms), p


def sha256_of(path: Path) -> str:
    """The file's SHA-256, read in blocks (a recording can be tens of GB)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()
