"""The web front-end as an ASGI app (Starlette, Jinja2 pages, a little plain JavaScript).

The bytes of an upload never pass through here (uploads.py: presigned multipart URLs under
the lab's own prefix, then the manifest); from there the pipeline takes over as for any upload.
Status is read from what the pipeline writes (storage/status.py): this service keeps no copy.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections import defaultdict, deque
from collections.abc import Callable
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

from neurocyte_shared.messaging.events import Event, RecordingRef, RerunRequested
from neurocyte_shared.storage import layout, s3io, status
from neurocyte_shared.storage.documents import UploadManifest, canonical_email

from . import rerun
from .identity import Directory, InvalidToken, User
from .settings import WebSettings
from .uploads import upload_limit, upload_routes

log = structlog.get_logger()
HERE = Path(__file__).parent
SESSION_COOKIE = "neurocyte_session"
KNOWN_SUFFIXES = (".bin", ".json", ".meta", ".raw.h5", ".h5", ".brw", ".nwb")
DOWNLOADS = ("summary.json", "spikes.parquet", "report.html")


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


def create_app(settings: WebSettings, s3: Any, ses: Any, publish: Callable[[list[Event]], None]) -> Starlette:
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
    def lab_keys(user: User) -> list[str]:
        """Every key of the lab's recordings, listed once per request (status and results both read it)."""
        return s3io.list_keys(s3, settings.data_bucket, layout.tenant_recordings_prefix(user.lab))

    def lab_recordings(user: User) -> list[dict]:
        keys = lab_keys(user)
        rows = [recording_row(user, rid, keys)
                for tenant, rid in status.uploads(s3, settings.upload_bucket, prefix=f"uploads/{user.lab}/")
                if tenant == user.lab]
        return sorted(rows, key=lambda r: r["uploaded_at"], reverse=True)

    def recording_row(user: User, rid: str, keys: list[str]) -> dict:
        st = status.status_of(s3, {"DataBucketName": settings.data_bucket}, user.lab, rid, tenant_keys=keys)
        manifest_key = layout.upload_prefix(user.lab, rid) + layout.MANIFEST_NAME
        obj = s3.get_object(Bucket=settings.upload_bucket, Key=manifest_key)
        manifest = json.loads(obj["Body"].read())
        return {"id": rid, "name": manifest.get("recording_name") or rid, "stage": st.stage, "detail": st.detail,
                "done": st.done, "failed": st.failed, "uploaded_at": obj["LastModified"].isoformat()}

    async def recordings_page(request: Request) -> Response:
        user = signed_in(request)
        if user is None:
            return RedirectResponse("/signin", 303)
        return page(request, "recordings.html", recordings=lab_recordings(user), members=directory.members(user.lab),
                    max_upload_bytes=upload_limit(settings, s3, user.lab))

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

    def versions(rid: str, keys: list[str]) -> list[dict]:
        """The recording's published result versions (one per parameter set), the defaults first."""
        out = []
        for key in sorted(k for k in keys if f"/{rid}/results/" in k and k.endswith("/" + layout.SUMMARY_NAME)):
            folder = key.rsplit("/", 1)[0] + "/"
            summary = s3io.get_json(s3, settings.data_bucket, key)
            out.append({"version": folder.rstrip("/").rsplit("/", 1)[1], "folder": folder, "summary": summary,
                        "label": rerun.differences(summary.get("parameters", {})),
                        "pictures": [k.rsplit("/", 1)[1] for k in keys if k.startswith(folder) and k.endswith(".png")]})
        return sorted(out, key=lambda v: v["label"] != "defaults")

    def pending_reruns(rid: str, keys: list[str], done: list[dict]) -> int:
        """Detection versions with shards but no published result yet: reruns under way."""
        detected = {k.split("/spikes/d=", 1)[1].split("/", 1)[0] for k in keys if f"/{rid}/spikes/d=" in k}
        published = {v["version"].removeprefix("v=").split("-", 1)[0] for v in done}
        return len(detected - published)

    async def recording_page(request: Request, error: str | None = None, status_code: int = 200) -> Response:
        found = own_recording(request)
        if isinstance(found, Response):
            return found
        user, rid = found
        keys = lab_keys(user)
        done = versions(rid, keys)
        primary = done[0] if done else None
        return page(request, "recording.html", status_code, error=error, row=recording_row(user, rid, keys),
                    summary=primary["summary"] if primary else None, versions=done,
                    downloads=[*DOWNLOADS, *primary["pictures"]] if primary else [], fields=rerun.FIELDS,
                    pending=pending_reruns(rid, keys, done), requested=waiting_for_rerun(request, done))

    def waiting_for_rerun(request: Request, done: list[dict]) -> bool:
        """After a rerun was asked for (`?versions=N`: how many there were), until one more is published."""
        before = request.query_params.get("versions", "")
        return before.isdigit() and len(done) <= int(before)

    async def request_rerun(request: Request) -> Response:
        found = own_recording(request)
        if isinstance(found, Response):
            return found
        user, rid = found
        form = await request.form()
        if not check_csrf(request, form.get("csrf")):
            return Response("The form was out of date: reload the page and try again.", 403)
        parsed = rerun.parse(form)
        if isinstance(parsed, str):
            return await recording_page(request, error=f"Not rerun: {parsed}. Correct it and submit again.",
                                        status_code=400)
        documents = [k for k in lab_keys(user) if k.endswith(f"/{rid}/{layout.RECORDING_NAME}")]
        if not documents:
            return await recording_page(request, status_code=409,
                                        error="This recording has not been validated yet: rerun it once it is done.")
        detection, metrics = parsed
        publish([RerunRequested(correlation_id=rid, recording=RecordingRef(
            tenant=user.lab, prefix=documents[0][: -len(layout.RECORDING_NAME)]),
            detection_params=detection.model_dump(), metrics_params=metrics.model_dump(), requested_by=user.email)])
        log.info("rerun_requested", recording_id=rid, lab=user.lab)
        return RedirectResponse(f"/recordings/{rid}?versions={len(versions(rid, lab_keys(user)))}", 303)

    async def recording_file(request: Request) -> Response:
        found = own_recording(request)
        if isinstance(found, Response):
            return found
        user, rid = found
        name = request.path_params["name"]
        done = versions(rid, lab_keys(user))
        wanted = request.query_params.get("v")
        folder = next((v["folder"] for v in done if v["version"] == wanted or wanted is None), None)
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
                        members=directory.members(user.lab), max_upload_bytes=upload_limit(settings, s3, user.lab),
                        error=f"{email} could not be invited: it is not an address, or it already belongs to "
                              "another lab.")
        return RedirectResponse("/recordings", 303)

    routes = [
        Route("/", home), Route("/signin", signin_form), Route("/signin", signin_send, methods=["POST"]),
        Route("/signin/complete", signin_complete, methods=["POST"]),
        Route("/signin/{token}", signin_confirm), Route("/signout", signout, methods=["POST"]),
        Route("/recordings", recordings_page), Route("/recordings/{rid}", recording_page),
        Route("/recordings/{rid}/files/{name}", recording_file),
        Route("/recordings/{rid}/rerun", request_rerun, methods=["POST"]),
        Route("/lab/invite", invite, methods=["POST"]),
        Route("/api/recordings", recordings_api),
        *upload_routes(settings, s3, api_guard),
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



def _origin(url: str) -> str:
    u = urlparse(url)
    return f"{u.scheme}://{u.netloc}"
