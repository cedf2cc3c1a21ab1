"""Sending a recording to the pipeline: validate it here, upload it, wait for its email."""

from __future__ import annotations

import json
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path

import click
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from neurocyte_cli.commands.offline import _local_check, with_companions
from neurocyte_cli.commands.operate import print_mail
from neurocyte_cli.ui import L, _fail, _outputs, console, out, status_of, uploads

# --------------------------------------------------------------------------- validate / submit


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def validate(files: tuple[Path, ...]) -> None:
    """Check a recording as ingest would, before uploading it. A file holding several
    recordings (a MaxTwo plate's wells, NWB series) lists each: each is processed on its own."""
    files = with_companions(files)
    found, problem = _local_check(list(files))
    if problem:
        _fail(f"refused: {problem}")
    assert found is not None
    for stream, info in found:
        where = f"{stream}: " if stream and len(found) > 1 else ""
        out.print(f"ok: {where}{info.format}, {info.n_channels} channels, {info.sampling_rate_hz:g} Hz, "
                  f"{info.duration_s:.2f} s, gain {info.gain_uv:g} uV/bit")


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--email", required=True, help="where the result (or the reason it failed) is sent")
@click.option("--name", default=None, help="recording name in the email (default: the file's stem)")
@click.option("--tenant", default=None, help="results prefix (default: derived from the email address)")
@click.option("--wait/--no-wait", default=False, help="wait for the email and print it")
@click.option("--timeout", default=900.0, show_default=True, help="seconds to wait with --wait")
@click.option("--reprocess", is_flag=True, default=False,
              help="process it even if the same content was uploaded before (by default a repeat is "
                   "recognised by its SHA-256 and not processed twice)")
@click.option("--experiment", default=None, metavar="NAME",
              help="the experiment these recordings belong to (with --plate-map): each file named is uploaded as "
                   "its own recording, and one more email comes once every row of the map is analysed")
@click.option("--plate-map", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="the experiment's plate map (CSV; docs/experiments.md); FILES are rows of it")
def submit(files: tuple[Path, ...], email: str, name: str | None, tenant: str | None, wait: bool,
           timeout: float, reprocess: bool, experiment: str | None, plate_map: Path | None) -> None:
    """Upload a recording (multipart, with progress); its manifest goes last and starts processing."""
    if (experiment is None) != (plate_map is None):
        _fail("--experiment and --plate-map go together")
    uploads = [(with_companions(files), None)] if experiment is None else _experiment_uploads(
        files, experiment, plate_map)
    for group, exp in uploads:
        rid = submit_files(list(group), email=email, name=name if exp is None else None, tenant=tenant,
                           reprocess=reprocess, experiment=exp)
        out.print(rid)
        if wait:
            print_mail(wait_for_email(rid, email, timeout))


def _experiment_uploads(files: tuple[Path, ...], name: str, plate_map: Path) -> list[tuple[tuple[Path, ...], object]]:
    """One upload per data file named, each carrying the experiment's name, its plate map and
    the row(s) it is; the map checked first (with the files named: the others may come later,
    a days-in-vitro series arrives one upload at a time)."""
    from pydantic import ValidationError

    from neurocyte_shared.science.experiments import platemap
    from neurocyte_shared.storage.documents import ManifestExperiment

    folder = plate_map.resolve().parent
    text = plate_map.read_text(encoding="utf-8-sig")
    named = {}
    for f in files:
        try:
            named[f.resolve().relative_to(folder).as_posix()] = f
        except ValueError:
            _fail(f"{f} is not inside the plate map's folder {folder}: the map names files relative to it")
    try:
        plate = platemap.parse(text, exists=lambda f: f not in named or named[f].is_file(),
                               streams=lambda f: platemap.local_streams(named[f]) if f in named else None)
    except platemap.PlateMapError as exc:
        _fail(f"{plate_map.name}: {exc}")
    rows = {r.file for r in plate.rows}
    stray = [f for f in named if f not in rows]
    if stray:
        _fail(f"not in the plate map: {', '.join(stray)} (each file uploaded for an experiment is a row of its map)")
    try:
        return [(with_companions((named[f],)), ManifestExperiment(name=name, plate_map=text, file=f)) for f in named]
    except ValidationError as exc:
        _fail("; ".join(e["msg"] for e in exc.errors()))


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
                 check: bool = True, reprocess: bool = False, experiment=None) -> str:
    from boto3.s3.transfer import TransferConfig
    from pydantic import ValidationError

    from neurocyte_shared.messaging import aws
    from neurocyte_shared.storage import layout
    from neurocyte_shared.storage.documents import ManifestFile, UploadManifest

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
            uploader_email=email, recording_name=name, created_at=datetime.now(UTC), reprocess=reprocess,
            experiment=experiment,
            files=tuple(ManifestFile(name=p.name, size_bytes=p.stat().st_size, sha256=digests[p.name])
                        for p in files),
        )
        tenant = layout.check_segment(tenant or layout.tenant_for_email(email), "tenant")
        safe_stem = "".join(c if c.isalnum() or c in "-_" else "-" for c in stem)[:60] or "recording"
        rid = f"{safe_stem}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(2)}"
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


def wait_for_email(rid: str, email: str, timeout: float) -> dict:
    """Wait (with the recording's stage shown) until the email about `rid` arrives."""
    from neurocyte_shared.messaging import aws

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
    from neurocyte_shared.messaging import aws

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
