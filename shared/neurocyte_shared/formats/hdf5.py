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


class Hdf5Reader:
    """Base of the HDF5 readers: opens the file, lets the subclass's `_open(name, stream)` read
    the layout, and closes the file again if that refuses it (a refused upload leaves no open
    handle). A malformed layout the subclass did not foresee is a refusal naming the format."""

    kind = "HDF5"

    def __init__(self, f: BinaryIO, name: str, stream: str | None = None) -> None:
        self._raw = f
        self._h5 = open_file(f, name)
        try:
            self._open(name, stream)
        except InvalidRecording:
            self._h5.close()
            raise
        except (KeyError, ValueError, TypeError, OSError) as exc:
            self._h5.close()
            raise InvalidRecording(f"{name}: not a readable {self.kind} recording ({exc})") from exc
        except BaseException:
            self._h5.close()
            raise

    def _open(self, name: str, stream: str | None) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._h5.close()
        self._raw.close()


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
