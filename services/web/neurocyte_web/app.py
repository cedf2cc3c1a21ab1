"""The web front-end as an ASGI app (Starlette, Jinja2 pages, a little plain JavaScript).

The bytes of an upload never pass through here: the page asks for presigned multipart URLs
for keys under its lab's own prefix and sends the file straight to S3 (Uppy), then asks for
the manifest, which this service writes with the signed-in user's address and lab; from
there the pipeline takes over as for any upload. Status is read from what the pipeline
writes (storage/status.py): this service keeps no second copy of it.
"""

from __future__ import annotations

import re
import secrets
import time
from collections import defaultdict, deque
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import structlog
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from neurocyte_shared.formats import InvalidRecording, identify
from neurocyte_shared.storage import layout, s3io, status
from neurocyte_shared.storage.documents import ManifestFile, UploadManifest

from .identity import Directory, InvalidToken, User, canonical_email
from .settings import WebSettings

log = structlog.get_logger()
HERE = Path(__file__).parent
SESSION_COOKIE = "neurocyte_session"
MAX_PART_BYTES = 64 * 1024 * 1024  # Uppy's parts are 5-64 MB; a bigger one is not ours
KNOWN_SUFFIXES = (".bin", ".json", ".meta", ".raw.h5", ".h5", ".brw", ".nwb")
DOWNLOADS = ("summary.json", "spikes.parquet", "report.html")
# Each part's Content-Length is signed: S3 refuses a part of another size than was checked.
SIGN_PART_SIZE = True


class RateLimit:
    """At most `limit` events per key in `window_s` (in memory: one web task; behind several,
    the limit is per task, which still bounds what one address or client can cause)."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit, self.window_s = limit, window_s
        self.seen: dict[str, deque[float]] = defaultdict(deque)

    def allow(self, key: str) -> bool:
        now, q = time.monotonic(), self.seen[key]
        while q and q[0] < now - self.window_s:
            q.popleft()
        if len(q) >= self.limit:
            return False
        q.append(now)
        return True


def create_app(settings: WebSettings, s3: Any, ses: Any) -> Starlette:
    directory = Directory(s3, settings.data_bucket, settings.secret.encode())
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    per_address, per_client = RateLimit(3, 15 * 60), RateLimit(20, 15 * 60)
    s3_origin = _origin(settings.endpoint_url) if settings.endpoint_url else "https://*.amazonaws.com"

    def page(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        return templates.TemplateResponse(request, name, {"user": getattr(request.state, "user", None),
                                                          "csrf": getattr(request.state, "csrf", ""), **context},
                                          status_code=status_code)

    def signed_in(request: Request) -> User | None:
        found = directory.session(request.cookies.get(SESSION_COOKIE))
        if found is None:
            return None
        request.state.user, request.state.sid, request.state.csrf = found
        return found[0]

    def check_csrf(request: Request, sent: str | None) -> bool:
        return bool(sent) and secrets.compare_digest(str(sent), getattr(request.state, "csrf", ""))

    # --- signing in -------------------------------------------------------------------------
    async def home(request: Request) -> Response:
        return RedirectResponse("/recordings" if signed_in(request) else "/signin", 303)

    async def signin_form(request: Request) -> Response:
        return page(request, "signin.html")

    async def signin_send(request: Request) -> Response:
        form = await request.form()
        email = str(form.get("email", "")).strip()
        try:
            UploadManifest.model_validate({"uploader_email": email, "files": [{"name": "x", "size_bytes": 0}]})
        except Exception:  # noqa: BLE001 - any invalid address gets the same plain answer
            return page(request, "signin.html", 400, error="That is not an email address. Check it and try again.",
                        email=email)
        email = canonical_email(email)
        client = request.client.host if request.client else "?"
        if not (per_address.allow(email.lower()) and per_client.allow(client)):
            return page(request, "signin.html", 429, email=email,
                        error="Too many sign-in emails were asked for. Use the last link you received, or try "
                              "again in 15 minutes.")
        link = f"{settings.base_url}/signin/{directory.link_token(email)}"
        ses.send_email(Source=settings.mail_from, Destination={"ToAddresses": [email]}, Message={
            "Subject": {"Data": "Your Neurocyte sign-in link"},
            "Body": {"Text": {"Data": f"Open this link to sign in to Neurocyte:\n\n{link}\n\nIt works once, for "
                                      "15 minutes. If you did not ask for it, ignore this email."}}})
        log.info("signin_link_sent")
        return page(request, "signin_sent.html", email=email)

    async def signin_confirm(request: Request) -> Response:
        # A page with a button, not an immediate sign-in: mail scanners that open links would
        # otherwise use up the single-use link before its owner clicks it.
        return page(request, "signin_confirm.html", token=request.path_params["token"])

    async def signin_complete(request: Request) -> Response:
        form = await request.form()
        try:
            email = directory.redeem(str(form.get("token", "")))
        except InvalidToken as exc:
            return page(request, "signin.html", 400, error=f"That sign-in link cannot be used: {exc}. Ask for a "
                                                           "new one below.")
        user = directory.user(email)
        response = RedirectResponse("/recordings", 303)  # fixed: never a redirect the request names
        response.set_cookie(SESSION_COOKIE, directory.start_session(user.email), httponly=True, samesite="lax",
                            secure=settings.secure_cookies, max_age=7 * 24 * 3600)
        log.info("signed_in", lab=user.lab)
        return response

    async def signout(request: Request) -> Response:
        if signed_in(request) is None:
            return RedirectResponse("/signin", 303)
        form = await request.form()
        if not check_csrf(request, form.get("csrf")):
            return Response("The form was out of date: reload the page and try again.", 403)
        directory.revoke(request.state.sid)
        response = RedirectResponse("/signin", 303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    # --- recordings -------------------------------------------------------------------------
    def lab_recordings(user: User) -> list[dict]:
        rows = []
        for tenant, rid in status.uploads(s3, settings.upload_bucket, prefix=f"uploads/{user.lab}/"):
            if tenant != user.lab:
                continue
            rows.append(recording_row(user, rid))
        return sorted(rows, key=lambda r: r["uploaded_at"], reverse=True)

    def recording_row(user: User, rid: str) -> dict:
        outputs = {"DataBucketName": settings.data_bucket}
        st = status.status_of(s3, outputs, user.lab, rid)
        head = s3io.head(s3, settings.upload_bucket, layout.upload_prefix(user.lab, rid) + layout.MANIFEST_NAME)
        manifest = s3io.get_json(s3, settings.upload_bucket, layout.upload_prefix(user.lab, rid) + layout.MANIFEST_NAME)
        return {"id": rid, "name": manifest.get("recording_name") or rid, "stage": st.stage, "detail": st.detail,
                "done": st.done, "failed": st.failed,
                "uploaded_at": head["LastModified"].isoformat() if head else ""}

    async def recordings_page(request: Request) -> Response:
        user = signed_in(request)
        if user is None:
            return RedirectResponse("/signin", 303)
        return page(request, "recordings.html", recordings=lab_recordings(user), members=directory.members(user.lab),
                    max_upload_bytes=settings.max_upload_bytes)

    async def recordings_api(request: Request) -> Response:
        user = signed_in(request)
        if user is None:
            return JSONResponse({"error": "sign in first"}, 401)
        return JSONResponse({"recordings": lab_recordings(user)})

    def own_recording(request: Request) -> tuple[User, str] | Response:
        user = signed_in(request)
        if user is None:
            return RedirectResponse("/signin", 303)
        rid = request.path_params["rid"]
        try:
            key = layout.upload_prefix(user.lab, rid) + layout.MANIFEST_NAME
        except layout.UnsafeKey:
            return Response("No such recording.", 404)
        if s3io.head(s3, settings.upload_bucket, key) is None:  # not this lab's: the same answer as absent
            return Response("No such recording in your lab.", 404)
        return user, rid

    def result_folder(user: User, rid: str) -> str | None:
        keys = s3io.list_keys(s3, settings.data_bucket, layout.tenant_recordings_prefix(user.lab))
        summaries = sorted(k for k in keys if f"/{rid}/results/" in k and k.endswith("/" + layout.SUMMARY_NAME))
        return summaries[-1].rsplit("/", 1)[0] + "/" if summaries else None

    async def recording_page(request: Request) -> Response:
        found = own_recording(request)
        if isinstance(found, Response):
            return found
        user, rid = found
        folder = result_folder(user, rid)
        summary = s3io.get_json(s3, settings.data_bucket, folder + layout.SUMMARY_NAME) if folder else None
        pictures = [k.rsplit("/", 1)[1] for k in s3io.list_keys(s3, settings.data_bucket, folder)
                    if k.endswith(".png")] if folder else []
        return page(request, "recording.html", row=recording_row(user, rid), summary=summary,
                    downloads=[*DOWNLOADS, *pictures] if folder else [])

    async def recording_file(request: Request) -> Response:
        found = own_recording(request)
        if isinstance(found, Response):
            return found
        user, rid = found
        name = request.path_params["name"]
        folder = result_folder(user, rid)
        if folder is None or not re.fullmatch(r"[a-z0-9_]+\.(json|parquet|html|png)", name):
            return Response("No such file (the result may not be ready yet).", 404)
        url = s3.generate_presigned_url("get_object", ExpiresIn=300, Params={
            "Bucket": settings.data_bucket, "Key": folder + name,
            **({"ResponseContentType": "text/html"} if name.endswith(".html") else
               {"ResponseContentDisposition": f'attachment; filename="{rid}-{name}"'})})
        return RedirectResponse(url, 303)

    # --- uploads: presigned multipart, straight to S3 ----------------------------------------
    async def api_guard(request: Request) -> User | Response:
        user = signed_in(request)
        if user is None:
            return JSONResponse({"error": "sign in first"}, 401)
        if request.method != "GET" and not check_csrf(request, request.headers.get("x-csrf-token")):
            return JSONResponse({"error": "the page is out of date: reload it"}, 403)
        return user

    def upload_key(user: User, rid: str, key: str) -> str | None:
        """`key` if it is a file of this lab's upload `rid`, else None."""
        try:
            prefix = layout.upload_prefix(user.lab, rid)
            name = key[len(prefix):] if key.startswith(prefix) else ""
            layout.check_segment(name, "file name")
        except layout.UnsafeKey:
            return None
        return None if name == layout.MANIFEST_NAME else key

    async def start_upload(request: Request) -> Response:
        user = await api_guard(request)
        if isinstance(user, Response):
            return user
        body = await request.json()
        files = body.get("files") or []
        problem = check_files(files)
        if problem:
            return JSONResponse({"error": problem}, 400)
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", files[0]["name"].split(".")[0]).strip("-.")[:60] or "recording"
        rid = f"{time.strftime('%Y%m%d-%H%M%S')}-{stem}-{secrets.token_hex(3)}"
        return JSONResponse({"recording_id": rid, "prefix": layout.upload_prefix(user.lab, rid)})

    def check_files(files: list[dict]) -> str | None:
        names = [str(f.get("name", "")) for f in files]
        if not names:
            return "Choose at least one file."
        for f in files:
            if int(f.get("size", 0)) > settings.max_upload_bytes:
                return f"{f['name']} is larger than your lab's limit of {settings.max_upload_bytes / 1e9:.0f} GB."
        try:
            for n in names:
                layout.check_segment(n, "file name")
            identify(names)
        except (layout.UnsafeKey, InvalidRecording) as exc:
            return str(exc)
        return None

    async def create_multipart(request: Request) -> Response:
        user = await api_guard(request)
        if isinstance(user, Response):
            return user
        body = await request.json()
        rid = request.path_params["rid"]
        key = upload_key(user, rid, layout.upload_prefix(user.lab, rid) + str(body.get("filename", ""))) \
            if _safe(rid) else None
        if key is None:
            return JSONResponse({"error": "not a file name this upload can have"}, 403)
        created = s3.create_multipart_upload(Bucket=settings.upload_bucket, Key=key)
        return JSONResponse({"uploadId": created["UploadId"], "key": key})

    async def sign_part(request: Request) -> Response:
        user = await api_guard(request)
        if isinstance(user, Response):
            return user
        q = request.query_params
        key = upload_key(user, request.path_params["rid"], q.get("key", "")) if _safe(request.path_params["rid"]) \
            else None
        part, size = int(q.get("partNumber", "0")), int(q.get("size", "-1"))
        if key is None:
            return JSONResponse({"error": "that key is not in your lab's upload"}, 403)
        if not (1 <= part <= 10_000 and 0 < size <= MAX_PART_BYTES):
            return JSONResponse({"error": f"parts are 1..10000 of at most {MAX_PART_BYTES} bytes"}, 400)
        url = s3.generate_presigned_url("upload_part", ExpiresIn=3600, Params={
            "Bucket": settings.upload_bucket, "Key": key, "UploadId": q.get("uploadId", ""), "PartNumber": part,
            **({"ContentLength": size} if SIGN_PART_SIZE else {})})
        return JSONResponse({"url": url, "method": "PUT"})

    async def list_parts(request: Request) -> Response:
        user = await api_guard(request)
        if isinstance(user, Response):
            return user
        q = request.query_params
        key = upload_key(user, request.path_params["rid"], q.get("key", ""))
        if key is None:
            return JSONResponse({"error": "that key is not in your lab's upload"}, 403)
        parts = s3.list_parts(Bucket=settings.upload_bucket, Key=key, UploadId=q.get("uploadId", "")).get("Parts", [])
        return JSONResponse([{"PartNumber": p["PartNumber"], "Size": p["Size"], "ETag": p["ETag"]} for p in parts])

    async def complete_multipart(request: Request) -> Response:
        user = await api_guard(request)
        if isinstance(user, Response):
            return user
        q, body = request.query_params, await request.json()
        key = upload_key(user, request.path_params["rid"], q.get("key", ""))
        if key is None:
            return JSONResponse({"error": "that key is not in your lab's upload"}, 403)
        parts = sorted(({"PartNumber": int(p["PartNumber"]), "ETag": str(p["ETag"])} for p in body.get("parts", [])),
                       key=lambda p: p["PartNumber"])
        s3.complete_multipart_upload(Bucket=settings.upload_bucket, Key=key, UploadId=q.get("uploadId", ""),
                                     MultipartUpload={"Parts": parts})
        return JSONResponse({"location": key})

    async def abort_multipart(request: Request) -> Response:
        user = await api_guard(request)
        if isinstance(user, Response):
            return user
        q = request.query_params
        key = upload_key(user, request.path_params["rid"], q.get("key", ""))
        if key is None:
            return JSONResponse({"error": "that key is not in your lab's upload"}, 403)
        s3.abort_multipart_upload(Bucket=settings.upload_bucket, Key=key, UploadId=q.get("uploadId", ""))
        return JSONResponse({})

    async def write_manifest(request: Request) -> Response:
        user = await api_guard(request)
        if isinstance(user, Response):
            return user
        rid, body = request.path_params["rid"], await request.json()
        if not _safe(rid):
            return JSONResponse({"error": "not an upload of yours"}, 403)
        prefix = layout.upload_prefix(user.lab, rid)
        files = []
        for name in body.get("files", []):
            meta = s3io.head(s3, settings.upload_bucket, prefix + str(name)) if upload_key(
                user, rid, prefix + str(name)) else None
            if meta is None:
                return JSONResponse({"error": f"{name} has not arrived whole yet: upload it again"}, 400)
            files.append(ManifestFile(name=str(name), size_bytes=meta["ContentLength"]))
        name = str(body.get("name") or "").strip()[:120] or None
        try:
            # The address and the lab come from the session, never from the request.
            manifest = UploadManifest(uploader_email=user.email, recording_name=name, files=tuple(files))
        except Exception as exc:  # noqa: BLE001 - shown to the user as it is
            return JSONResponse({"error": str(exc)}, 400)
        s3io.put_json(s3, settings.upload_bucket, prefix + layout.MANIFEST_NAME, manifest.model_dump_json())
        log.info("manifest_written", recording_id=rid, lab=user.lab)
        return JSONResponse({"recording_id": rid, "url": f"/recordings/{rid}"})

    async def invite(request: Request) -> Response:
        user = signed_in(request)
        if user is None:
            return RedirectResponse("/signin", 303)
        form = await request.form()
        if not check_csrf(request, form.get("csrf")):
            return Response("The form was out of date: reload the page and try again.", 403)
        email = str(form.get("email", "")).strip()
        if "@" not in email or not directory.invite(user.lab, email):
            return page(request, "recordings.html", 400, recordings=lab_recordings(user),
                        members=directory.members(user.lab), max_upload_bytes=settings.max_upload_bytes,
                        error=f"{email} could not be invited: it is not an address, or it already belongs to "
                              "another lab.")
        return RedirectResponse("/recordings", 303)

    routes = [
        Route("/", home), Route("/signin", signin_form), Route("/signin", signin_send, methods=["POST"]),
        Route("/signin/complete", signin_complete, methods=["POST"]),
        Route("/signin/{token}", signin_confirm), Route("/signout", signout, methods=["POST"]),
        Route("/recordings", recordings_page), Route("/recordings/{rid}", recording_page),
        Route("/recordings/{rid}/files/{name}", recording_file),
        Route("/lab/invite", invite, methods=["POST"]),
        Route("/api/recordings", recordings_api),
        Route("/api/uploads", start_upload, methods=["POST"]),
        Route("/api/uploads/{rid}/multipart", create_multipart, methods=["POST"]),
        Route("/api/uploads/{rid}/multipart/sign", sign_part),
        Route("/api/uploads/{rid}/multipart/parts", list_parts),
        Route("/api/uploads/{rid}/multipart/complete", complete_multipart, methods=["POST"]),
        Route("/api/uploads/{rid}/multipart/abort", abort_multipart, methods=["POST"]),
        Route("/api/uploads/{rid}/manifest", write_manifest, methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    async def headers(request: Request, call_next):
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = (
            f"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
            f"connect-src 'self' {s3_origin}; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"  # a sign-in link never leaks in a Referer
        return response

    return Starlette(routes=routes, middleware=[Middleware(BaseHTTPMiddleware, dispatch=headers)])


def _safe(rid: str) -> bool:
    try:
        layout.check_segment(rid, "recording id")
        return True
    except layout.UnsafeKey:
        return False


def _origin(url: str) -> str:
    u = urlparse(url)
    return f"{u.scheme}://{u.netloc}"
