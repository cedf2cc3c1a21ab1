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


MAX_FILES = 64  # a recording is a few files; thousands would cost ingest a request each


def canonical_email(email: str) -> str:
    """The one form an address is compared, filtered and sent in: the domain lower-cased (it
    is case-insensitive), the local part as given (a mail server may tell `Ana` from `ana`)."""
    local, _, domain = email.strip().rpartition("@")
    return f"{local}@{domain.lower()}"


def printable_line(value: str) -> bool:
    """One line of visible text: no control, format (bidi overrides, zero-width), line or
    paragraph separator characters, which would break or disguise an email subject."""
    import unicodedata

    return bool(value.strip()) and not any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in value)


class ManifestExperiment(BaseModel):
    """The experiment an upload belongs to: its name, its plate map (the CSV text; every upload
    of the experiment carries the map as the lab knows it then) and which of the map's `file`
    values this upload holds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    plate_map: str = Field(min_length=1, max_length=200_000)
    file: str = Field(min_length=1)


class ExperimentMember(BaseModel):
    """In recording.json: which plate-map row this recording is."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    file: str
    stream: str | None = None


class UploadManifest(BaseModel):
    """`uploads/<tenant>/<recording_id>/manifest.json`, written after every data file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    uploader_email: EmailStr
    recording_name: str | None = Field(None, max_length=120)
    files: tuple[ManifestFile, ...] = Field(min_length=1, max_length=MAX_FILES)
    created_at: datetime | None = None
    # Process even if the tenant uploaded the same content before (e.g. after a failure).
    reprocess: bool = False
    experiment: ManifestExperiment | None = None

    @field_validator("recording_name")
    @classmethod
    def _printable(cls, v: str | None) -> str | None:
        # It ends up in an email subject and a web page.
        if v is not None and not printable_line(v):
            raise ValueError("recording_name must be printable text on one line (no control or format characters)")
        return v

    @field_validator("uploader_email")
    @classmethod
    def _canonical(cls, v: str) -> str:
        return canonical_email(str(v))

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
    # The versions ingest validated, by key: every later read names them, so what is analysed
    # is what was validated, whatever is written over the upload meanwhile.
    upload_versions: dict[str, str] = Field(default_factory=dict)
    # The SHA-256 the manifest claimed, by key: the chunker compares it with what it read.
    claimed_sha256: dict[str, str] = Field(default_factory=dict)
    experiment: ExperimentMember | None = None  # the plate-map row this recording is, if any
