"""Uploads from the page: presigned multipart URLs for keys under the lab's own prefix (the
bytes go straight to S3), and the manifest, written here with the session's address and lab."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from neurocyte_shared.errors import human_size
from neurocyte_shared.formats import InvalidRecording, identify
from neurocyte_shared.storage import layout, s3io, usage
from neurocyte_shared.storage.documents import ManifestExperiment, ManifestFile, UploadManifest

from .identity import User
from .settings import WebSettings

log = structlog.get_logger()
MAX_PART_BYTES = 64 * 1024 * 1024  # Uppy's parts are 5-64 MB; a bigger one is not ours
NOT_YOURS = "that key is not in your lab's upload"

Guard = Callable[[Request], Awaitable["User | Response"]]


def file_key(user: User, rid: str, key: str) -> str | None:
    """`key` if it names a data file of this lab's upload `rid` (never its manifest), else None."""
    try:
        prefix = layout.upload_prefix(user.lab, rid)
        name = key[len(prefix):] if key.startswith(prefix) else ""
        layout.check_segment(name, "file name")
    except layout.UnsafeKey:
        return None
    return None if name == layout.MANIFEST_NAME else key


def upload_limit(settings: WebSettings, s3: Any, lab: str) -> int:
    """The most a lab may upload at once, in bytes: the page's own ceiling or the lab's limit
    (storage/usage.py; ingest enforces it too), whichever is lower."""
    lab_gb = usage.limits_for(s3, settings.data_bucket, lab, usage.Limits()).max_upload_gb
    return min(settings.max_upload_bytes, int(lab_gb * 1e9))


def upload_routes(settings: WebSettings, s3: Any, guard: Guard) -> list[Route]:
    """The page's upload API; `guard` answers for a request without a session or CSRF token."""

    async def target(request: Request) -> tuple[User, str] | Response:
        """The signed-in user and the upload key the query names, or the refusal."""
        user = await guard(request)
        if isinstance(user, Response):
            return user
        key = file_key(user, request.path_params["rid"], request.query_params.get("key", ""))
        return (user, key) if key else JSONResponse({"error": NOT_YOURS}, 403)

    def check_files(files: list[dict], limit: int) -> str | None:
        names = [str(f.get("name", "")) for f in files]
        if not names:
            return "Choose at least one file."
        total = sum(int(f.get("size", 0)) for f in files)
        if total > limit:
            return (f"These files are {human_size(total)} together, over your lab's limit of {human_size(limit)} "
                    "per upload. Upload the recording in shorter files, or ask your administrator.")
        try:
            for n in names:
                layout.check_segment(n, "file name")
            identify(names)
        except (layout.UnsafeKey, InvalidRecording) as exc:
            return str(exc)
        return None

    async def start(request: Request) -> Response:
        user = await guard(request)
        if isinstance(user, Response):
            return user
        files = (await request.json()).get("files") or []
        problem = check_files(files, upload_limit(settings, s3, user.lab))
        if problem:
            return JSONResponse({"error": problem}, 400)
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", files[0]["name"].split(".")[0]).strip("-.")[:60] or "recording"
        rid = f"{time.strftime('%Y%m%d-%H%M%S')}-{stem}-{secrets.token_hex(3)}"
        return JSONResponse({"recording_id": rid, "prefix": layout.upload_prefix(user.lab, rid)})

    async def create(request: Request) -> Response:
        user = await guard(request)
        if isinstance(user, Response):
            return user
        rid, body = request.path_params["rid"], await request.json()
        try:
            key = file_key(user, rid, layout.upload_prefix(user.lab, rid) + str(body.get("filename", "")))
        except layout.UnsafeKey:
            key = None
        if key is None:
            return JSONResponse({"error": "not a file name this upload can have"}, 403)
        created = s3.create_multipart_upload(Bucket=settings.upload_bucket, Key=key)
        return JSONResponse({"uploadId": created["UploadId"], "key": key})

    async def sign(request: Request) -> Response:
        found = await target(request)
        if isinstance(found, Response):
            return found
        q = request.query_params
        part, size = int(q.get("partNumber", "0")), int(q.get("size", "-1"))
        if not (1 <= part <= 10_000 and 0 < size <= MAX_PART_BYTES):
            return JSONResponse({"error": f"parts are 1..10000 of at most {MAX_PART_BYTES} bytes"}, 400)
        # The part's length is signed: S3 refuses a part of another size than was checked here.
        url = s3.generate_presigned_url("upload_part", ExpiresIn=3600, Params={
            "Bucket": settings.upload_bucket, "Key": found[1], "UploadId": q.get("uploadId", ""), "PartNumber": part,
            "ContentLength": size})
        return JSONResponse({"url": url, "method": "PUT"})

    async def parts(request: Request) -> Response:
        found = await target(request)
        if isinstance(found, Response):
            return found
        listed = s3.list_parts(Bucket=settings.upload_bucket, Key=found[1],
                               UploadId=request.query_params.get("uploadId", "")).get("Parts", [])
        return JSONResponse([{"PartNumber": p["PartNumber"], "Size": p["Size"], "ETag": p["ETag"]} for p in listed])

    async def complete(request: Request) -> Response:
        found = await target(request)
        if isinstance(found, Response):
            return found
        done = sorted(({"PartNumber": int(p["PartNumber"]), "ETag": str(p["ETag"])}
                       for p in (await request.json()).get("parts", [])), key=lambda p: p["PartNumber"])
        s3.complete_multipart_upload(Bucket=settings.upload_bucket, Key=found[1],
                                     UploadId=request.query_params.get("uploadId", ""), MultipartUpload={"Parts": done})
        return JSONResponse({"location": found[1]})

    async def abort(request: Request) -> Response:
        found = await target(request)
        if isinstance(found, Response):
            return found
        s3.abort_multipart_upload(Bucket=settings.upload_bucket, Key=found[1],
                                  UploadId=request.query_params.get("uploadId", ""))
        return JSONResponse({})

    async def manifest(request: Request) -> Response:
        user = await guard(request)
        if isinstance(user, Response):
            return user
        rid, body = request.path_params["rid"], await request.json()
        try:
            prefix = layout.upload_prefix(user.lab, rid)
        except layout.UnsafeKey:
            return JSONResponse({"error": "not an upload of yours"}, 403)
        files = []
        for name in body.get("files", []):
            key = file_key(user, rid, prefix + str(name))
            meta = s3io.head(s3, settings.upload_bucket, key) if key else None
            if meta is None:
                return JSONResponse({"error": f"{name} has not arrived whole yet: upload it again"}, 400)
            files.append(ManifestFile(name=str(name), size_bytes=meta["ContentLength"]))
        name = str(body.get("name") or "").strip()[:120] or None
        experiment = None
        if body.get("experiment"):
            exp = body["experiment"]
            experiment, problem = experiment_of(exp.get("name"), exp.get("plate_map"), [f.name for f in files])
            if problem:
                return JSONResponse({"error": problem}, 400)
        try:
            # The address and the lab come from the session, never from the request.
            doc = UploadManifest(uploader_email=user.email, recording_name=name, files=tuple(files),
                                 experiment=experiment)
        except Exception as exc:  # noqa: BLE001 - shown to the user as it is
            return JSONResponse({"error": str(exc)}, 400)
        s3io.put_json(s3, settings.upload_bucket, prefix + layout.MANIFEST_NAME, doc.model_dump_json())
        log.info("manifest_written", recording_id=rid, lab=user.lab)
        return JSONResponse({"recording_id": rid, "url": f"/recordings/{rid}"})

    async def check_experiment(request: Request) -> Response:
        user = await guard(request)
        if isinstance(user, Response):
            return user
        body = await request.json()
        names = [str(n) for n in body.get("files", [])]
        groups: dict[str, list[str]] = {}
        for n in names:
            groups.setdefault(n.split(".")[0], []).append(n)
        for group in groups.values():  # each recording of the drop must be a row of the map
            _, problem = experiment_of(body.get("name"), body.get("plate_map"), group)
            if problem:
                return JSONResponse({"error": problem}, 400)
        return JSONResponse({"ok": True})

    return [
        Route("/api/experiments/check", check_experiment, methods=["POST"]),
        Route("/api/uploads", start, methods=["POST"]),
        Route("/api/uploads/{rid}/multipart", create, methods=["POST"]),
        Route("/api/uploads/{rid}/multipart/sign", sign),
        Route("/api/uploads/{rid}/multipart/parts", parts),
        Route("/api/uploads/{rid}/multipart/complete", complete, methods=["POST"]),
        Route("/api/uploads/{rid}/multipart/abort", abort, methods=["POST"]),
        Route("/api/uploads/{rid}/manifest", manifest, methods=["POST"]),
    ]


def experiment_of(name: Any, plate_map: Any, names: list[str]) -> tuple[ManifestExperiment | None, str | None]:
    """The manifest's experiment for a recording made of these files, or why it cannot be: the
    map must be usable, and exactly one of the files must be a row's `file`."""
    from pydantic import ValidationError

    from neurocyte_shared.errors import explain
    from neurocyte_shared.science.experiments.platemap import PlateMapError, parse

    if not name or not plate_map:
        return None, "An experiment needs both its name and its plate map."
    try:
        plate = parse(str(plate_map))
    except PlateMapError as exc:
        return None, "The plate map cannot be used: " + "; ".join(exc.problems)
    rows = {r.file for r in plate.rows}
    mine = [n for n in names if n in rows]
    if len(mine) != 1:
        return None, f"The plate map has no row for {' or '.join(names)}: each recording uploaded is a row of it."
    try:
        return ManifestExperiment(name=str(name), plate_map=str(plate_map), file=mine[0]), None
    except ValidationError as exc:
        return None, explain(exc, "experiment")
