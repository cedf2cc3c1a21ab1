"""What an uploader sends: the manifest (uploaded last, it starts processing) and the
recording's description, as pydantic models with messages a person can act on."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator

from neurocyte_shared.errors import explain  # noqa: F401 - documents' errors, said plainly
from neurocyte_shared.formats.info import RecordingInfo
from neurocyte_shared.storage.layout import check_segment


class ManifestFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    size_bytes: int = Field(ge=0)
    # Hex SHA-256 of the file (neurocyte submit writes it): recognises the same content
    # uploaded again, whatever tool or part size uploaded it. Without it, S3's ETag is used.
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")


class UploadManifest(BaseModel):
    """`uploads/<tenant>/<recording_id>/manifest.json`, written after every data file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    uploader_email: EmailStr
    recording_name: str | None = Field(None, max_length=120)
    files: tuple[ManifestFile, ...] = Field(min_length=1)
    created_at: datetime | None = None
    # Process even if the tenant uploaded the same content before (e.g. after a failure).
    reprocess: bool = False

    @field_validator("recording_name")
    @classmethod
    def _printable(cls, v: str | None) -> str | None:
        # It ends up in an email subject and a web page: no line breaks or control characters.
        if v is not None and (not v.strip() or any(ord(c) < 32 or ord(c) == 127 for c in v)):
            raise ValueError("recording_name must be printable text on one line")
        return v

    def check_names(self) -> None:
        for f in self.files:
            check_segment(f.name, "file name")


class RecordingDocument(BaseModel):
    """recording.json: the validated recording, its uploader and where its files are."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    recording_id: str
    recording_name: str
    tenant: str
    uploader_email: EmailStr
    upload_bucket: str
    upload_keys: tuple[str, ...]
    info: RecordingInfo
    stream: str | None = None  # which recording of a multi-recording file (a MaxWell well, an NWB series)
    upload_id: str | None = None  # the upload it came from, when one upload made several recordings
