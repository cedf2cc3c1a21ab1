"""Checks shared by the HDF5-based readers."""

from __future__ import annotations

from typing import Any, BinaryIO

from . import InvalidRecording


def open_file(f: BinaryIO, name: str) -> Any:
    """h5py.File over a file-like object (local or S3), or a refusal saying it is not HDF5."""
    import h5py

    try:
        return h5py.File(f, "r")
    except OSError as exc:
        raise InvalidRecording(f"{name} is not a readable HDF5 file (truncated or corrupt?): {exc}") from exc


def file_size(f: BinaryIO) -> int:
    here = f.tell()
    f.seek(0, 2)
    size = f.tell()
    f.seek(here)
    return size


def check_complete(dataset: Any, size: int, name: str, what: str) -> None:
    """Every stored byte of `dataset` lies inside the file: a file cut short (an interrupted
    upload or copy) is refused now, not found out half-way through chunking. Uses the HDF5
    chunk index, so it reads metadata only."""
    dsid = dataset.id
    end = 0
    try:
        if dataset.chunks is None:
            offset = dsid.get_offset()
            if offset is not None:
                end = offset + dsid.get_storage_size()
        else:
            for i in range(dsid.get_num_chunks()):
                info = dsid.get_chunk_info(i)
                end = max(end, info.byte_offset + info.size)
    except (OSError, ValueError, RuntimeError) as exc:
        raise InvalidRecording(f"{name}: {what} is damaged (its storage cannot be listed: {exc})") from exc
    if end > size:
        raise InvalidRecording(
            f"{name} is truncated: {what} needs {end:,} bytes but the file has {size:,}. "
            "Upload the complete file again."
        )
