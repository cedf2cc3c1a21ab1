"""After a recording's summary: if it is a row of an experiment's plate map and every row now
has its summary, publish the experiment's report (once: experiment.json is claimed last) and
say so with ExperimentSummarized, which the notifier emails."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from typing import Any

import structlog

from neurocyte_shared.messaging.events import Event, ExperimentSummarized
from neurocyte_shared.science.experiments import analysis, platemap
from neurocyte_shared.science.experiments import report as experiment_report
from neurocyte_shared.science.metrics import Summary
from neurocyte_shared.storage import claims, layout, s3io
from neurocyte_shared.storage.documents import RecordingDocument

log = structlog.get_logger()


def after_summary(s3: Any, bucket: str, doc: RecordingDocument, result_version: str, link_expiry_s: int) -> list[Event]:
    """result_version: the results folder (`v=<detection>-<metrics>`) just published; every
    row's summary is looked for under the same one (one set of parameters per experiment)."""
    exp = doc.experiment
    if exp is None:
        return []
    text = s3io.get_bytes_if_exists(s3, bucket, layout.experiment_plate_map_key(doc.tenant, exp.name))
    if text is None:
        return []
    try:
        plate = platemap.parse(text.decode())
    except platemap.PlateMapError as exc:  # checked at ingest; a later upload's map could still differ
        log.warning("experiment_plate_map_unusable", experiment=exp.name, problems=exc.problems[:5])
        return []
    members = {}
    for key in s3io.list_keys(s3, bucket, layout.experiment_prefix(doc.tenant, exp.name) + "members/"):
        m = s3io.get_json(s3, bucket, key)
        members[(m["file"], m["stream"])] = m["prefix"]
    summaries, keys = {}, []
    for row in plate.rows:
        prefix = members.get(row.key)
        key = f"{prefix}results/{result_version}/{layout.SUMMARY_NAME}" if prefix else None
        raw = s3io.get_bytes_if_exists(s3, bucket, key) if key else None
        if raw is None:
            log.info("experiment_waiting", experiment=exp.name, missing=f"{row.file} {row.stream or ''}".strip(),
                     rows=len(plate.rows))
            return []
        summaries[row.key] = Summary.model_validate_json(raw)
        keys.append(key)
    result_id = hashlib.sha256(text + b"\0" + "\n".join(sorted(keys)).encode()).hexdigest()[:16]
    out = layout.experiment_results_prefix(doc.tenant, exp.name, result_id)
    if s3io.head(s3, bucket, out + layout.EXPERIMENT_NAME) is None:
        receipt = _receipt(doc, summaries, members, plate, s3, bucket)
        result, rows = analysis.analyse(exp.name, plate, summaries, analysis.ExperimentParams(), receipt)
        files = experiment_report.files(result, rows)
        last = files.pop(layout.EXPERIMENT_NAME)
        for name, data in files.items():
            s3.put_object(Bucket=bucket, Key=out + name, Body=data, ContentType=_type(name))
        for row in plate.rows:  # one at a time: a recording's spikes in memory, never the plate's
            name, data = _nwb(s3, bucket, exp.name, row, members[row.key], result_version)
            s3.put_object(Bucket=bucket, Key=out + f"nwb/{name}.nwb", Body=data, ContentType="application/x-hdf5")
        if claims.claim(s3, bucket, out + layout.EXPERIMENT_NAME, last.decode()) is None:
            log.info("experiment_published", experiment=exp.name, result_id=result_id, recordings=len(plate.rows))
    result = s3io.get_json(s3, bucket, out + layout.EXPERIMENT_NAME)
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": out + "report.html", "ResponseContentType": "text/html"},
        ExpiresIn=link_expiry_s)
    return [ExperimentSummarized(
        correlation_id=exp.name, tenant=doc.tenant, experiment=exp.name, result_id=result_id,
        uploader_email=doc.uploader_email, recordings=len(plate.rows), report_key=out + "report.html",
        report_url=url, report_url_expires_at=datetime.now(UTC) + timedelta(seconds=link_expiry_s),
        headline=tuple(result.get("headline", ())))]


def _nwb(s3: Any, bucket: str, experiment: str, row, prefix: str, result_version: str) -> tuple[str, bytes]:
    """(file name, bytes) of one recording's NWB file: its spikes, electrodes and plate-map row."""
    import re
    import tempfile
    from pathlib import Path

    from neurocyte_shared.science.experiments import nwb
    from neurocyte_shared.storage import spikes

    doc = RecordingDocument.model_validate_json(s3io.get_bytes(s3, bucket, layout.recording_document_key(prefix)))
    key = f"{prefix}results/{result_version}/{layout.SPIKES_NAME}"
    table = spikes.from_parquet_bytes(s3io.get_bytes(s3, bucket, key))
    day = re.search(r"/date=(\d{4}-\d{2}-\d{2})/", prefix)
    start = datetime.fromisoformat(day.group(1)).replace(tzinfo=UTC) if day else datetime(1970, 1, 1, tzinfo=UTC)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.nwb"
        nwb.write(path, identifier=doc.recording_id, session_start=start, experiment=experiment,
                  description=f"well {row.well}: {row.file}" + (f" {row.stream}" if row.stream else ""),
                  sampling_rate_hz=doc.info.sampling_rate_hz, channel_ids=doc.info.channel_ids,
                  channel_locations_um=doc.info.channel_locations_um, sample_index=table.sample_index,
                  channel_index=table.channel_index, row=row)
        return doc.recording_id, path.read_bytes()


def _type(name: str) -> str:
    return {"html": "text/html; charset=utf-8", "png": "image/png", "csv": "text/csv",
            "parquet": "application/vnd.apache.parquet"}.get(name.rsplit(".", 1)[-1], "application/octet-stream")


def _receipt(doc: RecordingDocument, summaries: dict, members: dict, plate, s3, bucket: str) -> dict:
    """The inputs (each recording's upload, by its checksum where the uploader gave one, else
    the storage version validated), the code, every parameter with its hash, and when."""
    inputs = {}
    for row in plate.rows:
        rdoc = RecordingDocument.model_validate_json(
            s3io.get_bytes(s3, bucket, layout.recording_document_key(members[row.key])))
        for key, ver in sorted(rdoc.upload_versions.items()):
            name = key.rsplit("/", 1)[-1]
            inputs[name] = rdoc.claimed_sha256.get(key) or f"version {ver}"
    first = next(iter(summaries.values()))
    params = first.parameters

    def digest(d: dict) -> str:
        import json

        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    return {
        "inputs_sha256": dict(sorted(inputs.items())),
        "code_version": f"neurocyte {version('neurocyte-shared')}",
        "detection_parameters": params.get("detection", {}),
        "detection_parameters_hash": digest(params.get("detection", {})),
        "metrics_parameters": params.get("metrics", {}),
        "metrics_parameters_hash": digest(params.get("metrics", {})),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
