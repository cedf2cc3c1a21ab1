"""`neurocyte`: run the local stack, submit recordings, follow them, read the mail."""

from __future__ import annotations

import atexit
import gc
import json
import secrets
import sys
import time
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table


class _Lazy:
    """A module imported on first use: `neurocyte detect` needs neither boto3 nor requests,
    and start-up time counts when a command is run on many small files."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str):
        import importlib

        return getattr(importlib.import_module(self._name, __package__), attr)


L = _Lazy(".local")
_status = _Lazy(".status")


def status_of(*args, **kwargs):
    return _status.status_of(*args, **kwargs)


def uploads(*args, **kwargs):
    return _status.uploads(*args, **kwargs)

# emoji=False: a file name such as `rat:cat:1.bin` is printed as it is, and rich's table of
# emoji codes (3 ms) is never loaded.
console = Console(stderr=True, emoji=False)
out = Console(emoji=False)


def _fail(message: str, code: int = 1) -> None:
    console.print(f"[red]error:[/red] {message}")
    sys.exit(code)


# The interpreter's last garbage collection walks every object numba's compiler made (about
# 0.4 s after `neurocyte detect` has finished its work). Freezing them at exit skips that walk;
# the commands close their own files, so no finaliser is owed anything.
atexit.register(gc.freeze)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Neurocyte: spike analysis of multi-electrode-array recordings, upload in, email out.

    Locally everything runs on LocalStack (no Docker needed): `neurocyte up`, then
    `neurocyte submit FILE... --email ADDRESS`, `neurocyte status`, `neurocyte inbox`.
    """


# --------------------------------------------------------------------------- local stack


@cli.command()
@click.option("--detectors", default=2, show_default=True, help="detector worker processes")
def up(detectors: int) -> None:
    """Start LocalStack, provision the stack and start the five services."""
    local = L.Local.from_env()
    try:
        L.start_localstack(local, say=console.print)
        outputs = L.deploy_stack(local, say=console.print)
        L.start_services(local, outputs, detectors=detectors, say=console.print)
    except L.LocalStackError as exc:
        _fail(str(exc))
    console.print(f"[green]Up.[/green] Endpoint {local.endpoint}, stack {local.stack}. Stop with `neurocyte down`.")


@cli.command()
def down() -> None:
    """Stop the services and LocalStack."""
    L.stop_all(L.Local.from_env(), say=console.print)


# --------------------------------------------------------------------------- validate / submit


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


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def validate(files: tuple[Path, ...]) -> None:
    """Check a recording as ingest would, before uploading it. A file holding several
    recordings (a MaxTwo plate's wells, NWB series) lists each: each is processed on its own."""
    found, problem = _local_check(list(files))
    if problem:
        _fail(f"refused: {problem}")
    assert found is not None
    for stream, info in found:
        where = f"{stream}: " if stream and len(found) > 1 else ""
        out.print(f"ok: {where}{info.format}, {info.n_channels} channels, {info.sampling_rate_hz:g} Hz, "
                  f"{info.duration_s:.2f} s, gain {info.gain_uv:g} uV/bit")


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--email", required=True, help="where the result (or the reason it failed) is sent")
@click.option("--name", default=None, help="recording name in the email (default: the file's stem)")
@click.option("--tenant", default=None, help="results prefix (default: derived from the email address)")
@click.option("--wait/--no-wait", default=False, help="wait for the email and print it")
@click.option("--timeout", default=900.0, show_default=True, help="seconds to wait with --wait")
@click.option("--reprocess", is_flag=True, default=False,
              help="process it even if the same content was uploaded before (by default a repeat is "
                   "recognised by its SHA-256 and not processed twice)")
def submit(files: tuple[Path, ...], email: str, name: str | None, tenant: str | None, wait: bool,
           timeout: float, reprocess: bool) -> None:
    """Upload a recording (multipart, with progress); its manifest goes last and starts processing."""
    rid = submit_files(list(files), email=email, name=name, tenant=tenant, reprocess=reprocess)
    out.print(rid)
    if wait:
        message = wait_for_email(rid, email, timeout)
        print_mail(message)


def _byte_progress() -> Progress:
    """A progress bar for work counted in bytes: checksums and uploads."""
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TimeRemainingColumn(), console=console)


def _sha256(path: Path, progress: Progress) -> str:
    import hashlib

    digest = hashlib.sha256()
    task = progress.add_task(f"checksum {path.name}", total=path.stat().st_size)
    with open(path, "rb") as f:
        while block := f.read(8 * 2**20):
            digest.update(block)
            progress.advance(task, len(block))
    return digest.hexdigest()


def submit_files(files: list[Path], *, email: str, name: str | None = None, tenant: str | None = None,
                 check: bool = True, reprocess: bool = False) -> str:
    from boto3.s3.transfer import TransferConfig
    from pydantic import ValidationError

    from neurocyte_shared import aws, layout
    from neurocyte_shared.manifest import ManifestFile, UploadManifest

    local = L.Local.from_env()
    if check:
        _, problem = _local_check(files)  # every recording of the upload must be usable
        if problem:
            _fail(f"not uploaded: {problem}")
    stem = files[0].name.split(".")[0]
    name = name or stem
    with _byte_progress() as progress:
        digests = {p.name: _sha256(p, progress) for p in files}
    try:
        manifest = UploadManifest(
            uploader_email=email, recording_name=name, created_at=datetime.now(timezone.utc), reprocess=reprocess,
            files=tuple(ManifestFile(name=p.name, size_bytes=p.stat().st_size, sha256=digests[p.name])
                        for p in files),
        )
        tenant = layout.check_segment(tenant or layout.tenant_for_email(email), "tenant")
        safe_stem = "".join(c if c.isalnum() or c in "-_" else "-" for c in stem)[:60] or "recording"
        rid = f"{safe_stem}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{secrets.token_hex(2)}"
        prefix = layout.upload_prefix(tenant, rid)
        manifest.check_names()
    except ValidationError as exc:
        _fail("; ".join(e["msg"] for e in exc.errors()))
    except layout.UnsafeKey as exc:
        _fail(str(exc))
    outputs = _outputs(local)
    s3 = aws.client("s3")
    bucket = outputs["UploadBucketName"]
    config = TransferConfig(multipart_threshold=16 * 2**20, multipart_chunksize=16 * 2**20, max_concurrency=4)
    with _byte_progress() as progress:
        for p in files:
            task = progress.add_task(f"upload {p.name}", total=p.stat().st_size)
            s3.upload_file(str(p), bucket, prefix + p.name, Config=config,
                           Callback=lambda n, t=task: progress.advance(t, n))
    s3.put_object(Bucket=bucket, Key=prefix + layout.MANIFEST_NAME, Body=manifest.model_dump_json(indent=1),
                  ContentType="application/json")
    console.print(f"Submitted [bold]{rid}[/bold] (tenant {tenant}); follow it with `neurocyte status {rid}`")
    return rid


def _outputs(local: L.Local) -> dict[str, str]:
    local.use()
    try:
        return L.stack_outputs(local)
    except Exception:  # noqa: BLE001
        _fail(f"no Neurocyte stack {local.stack!r} at {local.endpoint}: start it with `neurocyte up`")
        raise


def _detection_options(f):
    """Every DetectionParams field as an option, its default shown by --help."""
    from neurocyte_shared.detection import DetectionParams

    for name, field in reversed(list(DetectionParams.model_fields.items())):
        if field.annotation is bool:
            flag = name.replace("_", "-")
            f = click.option(f"--{flag}/--no-{flag}", name, default=field.default, show_default=True,
                             help=field.description or "")(f)
            continue
        kind = click.Choice(list(field.annotation.__args__)) if hasattr(field.annotation, "__args__") else field.annotation
        f = click.option(f"--{name.replace('_', '-')}", name, type=kind, default=field.default, show_default=True,
                         help=field.description or "")(f)
    return f


def _stream_option(f):
    return click.option("--stream", default=None, metavar="ID",
                        help="which recording of a file that holds several: a MaxWell well (well000) or an NWB "
                             "ElectricalSeries; `neurocyte validate` lists them")(f)


def _local_recording(files: tuple[Path, ...], params: dict, stream: str | None):
    """(info, DetectionParams, LocalRecording) of local files, or a clear refusal and exit 1."""
    from neurocyte_shared.detection import DetectionParams
    from neurocyte_shared.local_detect import LocalRecording

    found, problem = _local_check(list(files), stream)
    if problem:
        _fail(f"refused: {problem}")
    try:
        p = DetectionParams(**params)
    except ValueError as exc:
        _fail(str(exc))
    if len(found) > 1:
        _fail(f"refused: {files[0].name} holds {len(found)} recordings ({', '.join(str(s) for s, _ in found)}); "
              "choose one with --stream")
    stream, info = found[0]
    return info, p, LocalRecording(tuple(f.resolve() for f in files), stream)


@contextmanager
def _detecting(files: tuple[Path, ...], n_samples: int):
    """A progress bar over the recording's samples; yields detect_recording's on_progress.
    A recording that turns out bad part-way through (cut short while being read, unreadable)
    is a clear error and exit 1, not a traceback."""
    from neurocyte_shared.formats import InvalidRecording

    try:
        with Progress(TextColumn("detect"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                      TimeRemainingColumn(), console=console) as progress:
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

            from neurocyte_shared.spikes import SCHEMA

            # A file object, not a path: with a path pyarrow resolves a filesystem (0.5 s of imports).
            self._file = open(path, "wb")
            self._writer = pq.ParquetWriter(self._file, SCHEMA, compression="zstd")
        else:
            self._file = open(path, "w")
            self._file.write("sample_index,channel_index,amplitude_uv\n")

    def write(self, table) -> None:
        if self._parquet:
            from neurocyte_shared.spikes import arrow_table

            self._writer.write_table(arrow_table(table))
        else:
            self._file.writelines(map("{},{},{:.2f}\n".format, table.sample_index.tolist(),
                                      table.channel_index.tolist(), table.amplitude_uv.tolist()))

    def close(self) -> None:
        if self._parquet:
            self._writer.close()
        self._file.close()


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="spike table: .csv or .parquet (columns sample_index, channel_index, amplitude_uv)")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(1, 256),
              help="cores to use (threads; the kernels release the GIL)")
@click.option("--window-s", default=1.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="seconds per window, capped at 8 M values per window (bounds memory)")
@_stream_option
@_detection_options
def detect(files: tuple[Path, ...], out_path: Path, jobs: int, window_s: float, stream: str | None,
           **params) -> None:
    """Detect spikes in a recording file on this machine (no AWS)."""
    from neurocyte_shared.local_detect import detect_recording, keep_freed_memory

    keep_freed_memory()

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
    # import (0.1 s, holding the GIL) does not stall the --jobs workers mid-run.
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


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="directory for summary.json, spikes.parquet, the PNGs and report.html (created; must not exist)")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(1, 256), help="cores to use")
@click.option("--name", default=None, help="recording name in the report (default: the file's stem)")
@_stream_option
@_detection_options
def report(files: tuple[Path, ...], out_dir: Path, jobs: int, name: str | None, stream: str | None,
           **params) -> None:
    """Detection plus summary on this machine (no AWS): the same summary.json, pictures and
    report.html the pipeline emails a link to."""
    import shutil
    import tempfile

    import numpy as np

    from neurocyte_shared import spikes as spike_io
    from neurocyte_shared.detection import SpikeTable
    from neurocyte_shared.local_detect import detect_recording, keep_freed_memory
    from neurocyte_shared.metrics import summarize
    from neurocyte_shared.report import figures, render_html

    if out_dir.exists():
        _fail(f"{out_dir} exists; choose a new directory (results are never overwritten)")
    keep_freed_memory()
    info, p, recording = _local_recording(files, params, stream)
    noise: list[np.ndarray] = []
    clipped = np.zeros(info.n_channels, np.int64)
    tables = []
    with _detecting(files, info.n_samples) as on_progress:
        for table in detect_recording(recording, p, jobs=jobs, on_noise=noise.append,
                                      on_saturation=lambda c: np.add(clipped, c, out=clipped),
                                      on_progress=on_progress):
            tables.append(table)
    merged = SpikeTable.concat(tables)
    console.print(f"{len(merged):,} spikes; summarising and drawing ...")
    stem = files[0].name.split(".")[0] + (f"-{stream}" if stream else "")
    summary = summarize(merged, recording_id=f"local-{stem}", recording_name=name or stem, format=info.format,
                        n_channels=info.n_channels, sampling_rate_hz=info.sampling_rate_hz,
                        n_samples=info.n_samples, channel_ids=info.channel_ids,
                        channel_locations_um=info.channel_locations_um, detection_parameters=p.model_dump(),
                        noise_uv=noise[0] if noise else None, saturated_samples=clipped)
    pictures = figures(summary, merged)
    # Everything into a temporary sibling, then one rename: never a half-written result.
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        (tmp / "summary.json").write_text(summary.model_dump_json(indent=1))
        (tmp / "spikes.parquet").write_bytes(spike_io.to_parquet_bytes(merged))
        for fname, data in pictures.items():
            (tmp / fname).write_bytes(data)
        (tmp / "report.html").write_text(render_html(summary, pictures))
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    net = summary.network.count if summary.network else 0
    sync = summary.synchrony.sttc_mean if summary.synchrony else None
    out.print(f"{summary.total_spikes:,} spikes, {summary.active_electrodes}/{summary.n_channels} active electrodes, "
              f"{summary.mean_firing_rate_hz:.2f} Hz weighted mean rate, {summary.bursting_electrodes} bursting, "
              f"{net} network bursts, STTC {sync if sync is None else round(sync, 3)}")
    out.print(f"report: {out_dir / 'report.html'}")


# --------------------------------------------------------------------------- dead letters


@cli.group()
def dlq() -> None:
    """Messages that failed every delivery: look at them, and retry them after a fix."""


def _dead_letter_queues(outputs: dict[str, str], service: str | None) -> list[tuple[str, str, str]]:
    """(service, queue url, dead-letter queue url) for one service or all."""
    from .local import SERVICES

    names = [service] if service else list(SERVICES)
    if service and service not in SERVICES:
        _fail(f"unknown service {service!r}; one of {', '.join(SERVICES)}")
    return [(n, outputs[f"{n.capitalize()}QueueUrl"], outputs[f"{n.capitalize()}DeadLetterQueueUrl"]) for n in names]


@dlq.command("list")
@click.option("--service", default=None, help="one service (default: all)")
def dlq_list(service: str | None) -> None:
    """Count and show dead-lettered messages per service (they stay where they are)."""
    from neurocyte_shared import aws

    outputs = _outputs(L.Local.from_env())
    sqs = aws.client("sqs")
    table = Table("service", "messages", "event", "recording", "sent (UTC)")
    total = 0
    for name, _, dead in _dead_letter_queues(outputs, service):
        count = int(sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=["ApproximateNumberOfMessages"])
                    ["Attributes"]["ApproximateNumberOfMessages"])
        total += count
        # A peek: visibility 0 leaves each message where it was, for the next look or redrive.
        peeked = sqs.receive_message(QueueUrl=dead, MaxNumberOfMessages=10, VisibilityTimeout=0,
                                     AttributeNames=["SentTimestamp"]).get("Messages", []) if count else []
        if not peeked:
            table.add_row(name, str(count), "", "", "")
        for i, m in enumerate(peeked):
            kind, rid = _describe(m["Body"])
            sent = datetime.fromtimestamp(int(m["Attributes"]["SentTimestamp"]) / 1000, timezone.utc)
            table.add_row(name if i == 0 else "", str(count) if i == 0 else "", kind, rid, f"{sent:%Y-%m-%d %H:%M:%S}")
    out.print(table)
    out.print(f"{total} dead-lettered message(s)." + (" Retry after a fix: neurocyte dlq redrive" if total else ""))


def _describe(body: str) -> tuple[str, str]:
    try:
        doc = json.loads(body)
        return str(doc.get("detail-type", "?")), str(doc.get("detail", {}).get("correlation_id", "?"))
    except (ValueError, AttributeError):
        return "undecodable", "?"


@dlq.command("redrive")
@click.option("--service", default=None, help="one service (default: all)")
def dlq_redrive(service: str | None) -> None:
    """Move dead-lettered messages back to their service's queue to be processed again.
    Work already done is reused: shards and results that exist are not redone."""
    from neurocyte_shared import aws

    outputs = _outputs(L.Local.from_env())
    sqs = aws.client("sqs")
    moved = 0
    for name, queue, dead in _dead_letter_queues(outputs, service):
        while True:
            batch = sqs.receive_message(QueueUrl=dead, MaxNumberOfMessages=10, VisibilityTimeout=60,
                                        WaitTimeSeconds=1).get("Messages", [])
            if not batch:
                break
            for m in batch:  # send first, then delete: a crash in between duplicates, never loses
                sqs.send_message(QueueUrl=queue, MessageBody=m["Body"])
                sqs.delete_message(QueueUrl=dead, ReceiptHandle=m["ReceiptHandle"])
                moved += 1
                out.print(f"{name}: {' '.join(_describe(m['Body']))} -> back on the queue")
    out.print(f"{moved} message(s) redriven.")


# --------------------------------------------------------------------------- status / inbox


@cli.command()
@click.argument("recording", required=False)
def status(recording: str | None) -> None:
    """Which stage each recording (or one) is in."""
    from neurocyte_shared import aws

    local = L.Local.from_env()
    outputs = _outputs(local)
    s3 = aws.client("s3")
    found = [(t, r) for t, r in uploads(s3, outputs["UploadBucketName"]) if recording in (None, r)]
    if recording and not found:
        _fail(f"no recording {recording!r}")
    table = Table("recording", "tenant", "stage", "detail")
    for tenant, rid in found:
        st = status_of(s3, outputs, tenant, rid)
        colour = "red" if st.failed else "green" if st.done else "yellow"
        table.add_row(rid, tenant, f"[{colour}]{st.stage}[/{colour}]", st.detail)
    out.print(table)


@cli.command()
@click.option("--to", "to", default=None, help="only mail to this address")
@click.option("--json", "as_json", is_flag=True, help="raw JSON as LocalStack keeps it")
def inbox(to: str | None, as_json: bool) -> None:
    """Mail sent by the local stack (LocalStack keeps it instead of sending it)."""
    local = L.Local.from_env()
    messages = L.mail_to(local, to) if to else L.inbox(local)
    if as_json:
        out.print_json(data=messages)
        return
    if not messages:
        console.print("No mail.")
    for m in messages:
        print_mail(m)


def print_mail(m: dict) -> None:
    body = m.get("Body", {})
    text = body.get("text_part") or body.get("html_part") or ""
    try:  # SNS email deliveries carry the published message as the text
        text = json.loads(text).get("Message", text)
    except (ValueError, AttributeError):
        pass
    out.print(f"[bold]From:[/bold] {m.get('Source')}\n[bold]To:[/bold] "
              f"{', '.join(m.get('Destination', {}).get('ToAddresses', []))}\n"
              f"[bold]Date:[/bold] {m.get('Timestamp')}\n[bold]Subject:[/bold] {m.get('Subject')}\n")
    out.print(text, markup=False, highlight=False, soft_wrap=True)
    out.print("-" * 72)


def wait_for_email(rid: str, email: str, timeout: float) -> dict:
    """Wait (with the recording's stage shown) until the email about `rid` arrives."""
    from neurocyte_shared import aws

    local = L.Local.from_env()
    outputs = _outputs(local)
    s3 = aws.client("s3")
    tenant = next((t for t, r in uploads(s3, outputs["UploadBucketName"]) if r == rid), None)
    started = time.monotonic()
    with console.status("waiting for the email ...") as spinner:
        while time.monotonic() - started < timeout:
            mine = [m for m in L.mail_to(local, email) if rid in json.dumps(m)]
            if mine:
                console.print(f"Email arrived {time.monotonic() - started:.1f} s after upload.")
                return mine[-1]
            if tenant:
                st = status_of(s3, outputs, tenant, rid)
                spinner.update(f"{rid}: {st.stage} ({st.detail}) - {time.monotonic() - started:.0f} s")
            time.sleep(1.0)
    _explain_timeout(local, outputs, rid, tenant)
    raise SystemExit(1)


def _explain_timeout(local: L.Local, outputs: dict, rid: str, tenant: str | None) -> None:
    from neurocyte_shared import aws

    console.print(f"[red]No email for {rid} in time.[/red]")
    if tenant:
        st = status_of(aws.client("s3"), outputs, tenant, rid)
        console.print(f"Last stage: {st.stage} ({st.detail})")
    dead = {k: v for k, v in L.running(local).items() if not v}
    if dead:
        console.print(f"Processes not running: {', '.join(dead)} (logs in {local.logs})")
    sqs = aws.client("sqs")
    for key, url in outputs.items():
        if key.endswith("DeadLetterQueueUrl"):
            n = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
            count = int(n["Attributes"]["ApproximateNumberOfMessages"])
            if count:
                console.print(f"{key[:-len('DeadLetterQueueUrl')]}: {count} message(s) dead-lettered")
    for log in sorted(local.logs.glob("*.log")):
        errors = [line for line in log.read_text(errors="replace").splitlines() if '"level": "error"' in line]
        for line in errors[-3:]:
            console.print(f"{log.name}: {line[:400]}", markup=False)


# --------------------------------------------------------------------------- demo


@cli.command()
@click.option("--email", default="you@example.org", show_default=True)
@click.option("--channels", default=64, show_default=True)
@click.option("--duration", "duration_s", default=60.0, show_default=True, help="seconds")
@click.option("--keep-running", is_flag=True, help="leave the stack up afterwards")
def demo(email: str, channels: int, duration_s: float, keep_running: bool) -> None:
    """The whole path: start the stack, upload a synthetic recording, print the email, stop."""
    from neurocyte_shared.synthetic import SyntheticSpec, write_recording

    local = L.Local.from_env()
    was_up = L.localstack_healthy(local) and any(L.running(local).values())
    ctx = click.get_current_context()
    try:
        ctx.invoke(up)
        folder = local.home / "demo"
        spec = SyntheticSpec(n_channels=channels, duration_s=duration_s, network_burst_every_s=6.0)
        console.print(f"Generating a synthetic recording: {channels} channels, {duration_s:g} s, "
                      f"{spec.sampling_rate_hz / 1000:g} kHz, {spec.n_units} units ...")
        bin_path, json_path, gt = write_recording(folder, "demo", spec)
        console.print(f"  planted {sum(s.size for s in gt.spike_samples):,} spikes -> {bin_path}")
        # reprocess: the demo recording is the same every time; show the whole path every time.
        rid = submit_files([bin_path, json_path], email=email, name="demo", reprocess=True)
        message = wait_for_email(rid, email, timeout=900)
        console.print()
        print_mail(message)
    finally:
        if not keep_running and not was_up:
            ctx.invoke(down)


if __name__ == "__main__":
    cli()
