"""Who is signed in, and which lab they belong to: signed tokens, sessions and labs in S3.

- A sign-in link carries a token: {email, expiry, id} signed with HMAC-SHA256. It works once
  (its id is claimed in S3 with a conditional write when used) and for 15 minutes.
- A session is a signed cookie {session id, email, expiry}, checked on every request against
  its record in S3 (`web/sessions/<id>.json`); signing out or revoking deletes the record.
- A user belongs to one lab (`web/users/<email>.json`); a lab lists its members
  (`web/labs/<lab>.json`, updated with If-Match so two invitations at once both land). The
  lab is the tenant of everything its members upload.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from neurocyte_shared.messaging.aws import is_precondition_failed
from neurocyte_shared.storage import claims, layout, s3io
from neurocyte_shared.storage.documents import canonical_email

LINK_TTL_S = 15 * 60
SESSION_TTL_S = 7 * 24 * 3600


class InvalidToken(ValueError):
    """A link or cookie that is forged, altered, expired or already used."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(secret: bytes, purpose: str, payload: dict[str, Any]) -> str:
    body = _b64(json.dumps({**payload, "p": purpose}, separators=(",", ":")).encode())
    mac = hmac.new(secret, body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}"


def verify(secret: bytes, purpose: str, token: str, now: float | None = None) -> dict[str, Any]:
    try:
        body, mac = token.split(".", 1)
        expected = hmac.new(secret, body.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _unb64(mac)):
            raise InvalidToken("the link's signature does not match")
        payload = json.loads(_unb64(body))
    except InvalidToken:
        raise
    except Exception as exc:  # noqa: BLE001 - any malformed token is simply invalid
        raise InvalidToken("the link is malformed") from exc
    if payload.get("p") != purpose:
        raise InvalidToken("the token is not meant for this")
    if float(payload.get("exp", 0)) < (time.time() if now is None else now):
        raise InvalidToken("the link has expired")
    return payload


@dataclass(frozen=True)
class User:
    email: str
    lab: str


class Directory:
    """Users, labs, used links and sessions, as JSON objects in the data bucket."""

    def __init__(self, s3: Any, bucket: str, secret: bytes) -> None:
        self.s3, self.bucket, self.secret = s3, bucket, secret

    # --- sign-in links --------------------------------------------------------------------
    def link_token(self, email: str) -> str:
        return sign(self.secret, "signin", {"email": canonical_email(email), "exp": time.time() + LINK_TTL_S,
                                            "jti": secrets.token_hex(16)})

    def redeem(self, token: str) -> str:
        """The address a sign-in link was for; the link is used up by this call."""
        payload = verify(self.secret, "signin", token)
        taken = claims.claim(self.s3, self.bucket, layout.web_used_link_key(payload["jti"]),
                             {"email": payload["email"], "used_at": time.time()})
        if taken is not None:
            raise InvalidToken("the link has already been used")
        return str(payload["email"])

    # --- sessions -------------------------------------------------------------------------
    def start_session(self, email: str) -> str:
        sid = secrets.token_hex(16)
        s3io.put_json(self.s3, self.bucket, layout.web_session_key(sid),
                      {"email": email, "started_at": time.time(), "csrf": secrets.token_hex(16)})
        return sign(self.secret, "session", {"sid": sid, "email": email, "exp": time.time() + SESSION_TTL_S})

    def session(self, cookie: str | None) -> tuple[User, str, str] | None:
        """(user, session id, CSRF token) of a valid, unrevoked session cookie, else None."""
        if not cookie:
            return None
        try:
            payload = verify(self.secret, "session", cookie)
        except InvalidToken:
            return None
        record = s3io.get_bytes_if_exists(self.s3, self.bucket, layout.web_session_key(payload["sid"]))
        if record is None:  # revoked (signed out) or never existed
            return None
        doc = json.loads(record)
        return self.user(payload["email"]), payload["sid"], doc["csrf"]

    def revoke(self, sid: str) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=layout.web_session_key(sid))

    # --- users and labs -------------------------------------------------------------------
    def user(self, email: str) -> User:
        """The user of an address; someone new gets a lab of their own."""
        key = layout.web_user_key(email)
        existing = s3io.get_bytes_if_exists(self.s3, self.bucket, key)
        if existing is not None:
            return User(email, json.loads(existing)["lab"])
        lab = layout.tenant_for_email(email)
        claims.claim(self.s3, self.bucket, key, {"email": email, "lab": lab})
        self._add_member(lab, email)
        return User(email, json.loads(s3io.get_bytes(self.s3, self.bucket, key))["lab"])

    def members(self, lab: str) -> list[str]:
        data = s3io.get_bytes_if_exists(self.s3, self.bucket, layout.web_lab_key(lab))
        return sorted(json.loads(data)["members"]) if data else []

    def invite(self, lab: str, email: str) -> bool:
        """Put `email` into `lab`. False when the address already belongs to another lab."""
        email = canonical_email(email)
        taken = claims.claim(self.s3, self.bucket, layout.web_user_key(email), {"email": email, "lab": lab},
                             is_mine=lambda existing: existing.get("lab") == lab)
        if taken is not None:
            return False
        self._add_member(lab, email)
        return True

    def _add_member(self, lab: str, email: str) -> None:
        key = layout.web_lab_key(lab)
        for _ in range(10):  # optimistic: read, add, write only if unchanged since the read
            try:
                obj = self.s3.get_object(Bucket=self.bucket, Key=key)
                doc, etag = json.loads(obj["Body"].read()), obj["ETag"]
            except ClientError:
                doc, etag = {"lab": lab, "members": []}, None
            if email in doc["members"]:
                return
            doc["members"].append(email)
            kwargs = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
            try:
                self.s3.put_object(Bucket=self.bucket, Key=key, Body=json.dumps(doc), **kwargs)
                return
            except ClientError as exc:
                if not is_precondition_failed(exc):
                    raise
        raise RuntimeError(f"lab {lab}: too many concurrent changes")
