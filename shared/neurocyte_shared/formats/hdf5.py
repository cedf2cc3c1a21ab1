"""Checks shared by the HDF5-based readers."""

from __future__ import annotations

import math
from typing import Any, BinaryIO

from neurocyte_shared.formats import InvalidRecording


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


def pick_stream(name: str, requested: str | None, streams: tuple[str, ...], known: object,
                what: str, plural: str, per: str) -> str:
    """The one recording of a multi-recording file to read: the one requested (any of `known`),
    or the only one of `streams`; with several and none requested, a refusal listing them."""
    if requested is None:
        if len(streams) > 1:
            raise InvalidRecording(
                f"{name} holds {len(streams)} {plural} ({', '.join(streams)}); choose one "
                f"(neurocyte detect --stream ID); uploads are split into one recording per {per}")
        return streams[0]
    if requested not in known:  # type: ignore[operator]
        raise InvalidRecording(f"{name} has no {what} {requested!r}; it has {', '.join(known)}")  # type: ignore[arg-type]
    return requested


def check_readable(dataset: Any, name: str, where: str, advice: str = "") -> None:
    """Read one small block now, so data that cannot be decoded (a compression filter that is
    not installed, e.g. MaxWell's own) is a refusal naming the filter, not a crash mid-way."""
    try:
        dataset[(slice(0, 1),) * dataset.ndim]
    except OSError as exc:
        filters = []
        try:
            plist = dataset.id.get_create_plist()
            for i in range(plist.get_nfilters()):
                code, _flags, _vals, fname = plist.get_filter(i)
                filters.append(f"{fname.decode(errors='replace') or 'unnamed'} (id {code})")
        except Exception:  # noqa: BLE001 - best effort to name the plugin
            pass
        what = (f"it uses the HDF5 filter {', '.join(filters)}, which is not installed here" if filters
                else f"it is corrupt or compressed with a filter not installed here ({exc})")
        raise InvalidRecording(f"{name}: {where} cannot be decompressed: {what}. {advice}".rstrip()) from exc


def file_size(f: BinaryIO) -> int:
    here = f.tell()
    f.seek(0, 2)
    size = f.tell()
    f.seek(here)
    return size


def check_complete(dataset: Any, size: int, name: str, what: str) -> None:
    """Every sample `dataset` declares is stored, and every stored byte lies inside the file.
    A file cut short (an interrupted upload or copy) is refused now, not found out half-way
    through chunking; so is one that declares more than it stores (HDF5 reads chunks never
    written as fill values: a 28 KB file can declare 10^12 samples). Uses the HDF5 chunk
    index, so it reads metadata only."""
    if getattr(dataset, "is_virtual", False):  # its data lives in other files: nothing to count here
        return
    dsid = dataset.id
    end = 0
    try:
        if dataset.chunks is None:
            offset = dsid.get_offset()
            stored = dsid.get_storage_size() if offset is not None else 0
            end = (offset or 0) + stored
            declared = dataset.size * dataset.dtype.itemsize
            missing = (f"stores {stored:,} of its {declared:,} bytes; the rest is not in the file"
                       if stored < declared else None)
        else:
            n_stored = dsid.get_num_chunks()
            for i in range(n_stored):
                info = dsid.get_chunk_info(i)
                end = max(end, info.byte_offset + info.size)
            n_declared = math.prod(-(-n // c) for n, c in zip(dataset.shape, dataset.chunks, strict=True))
            missing = (f"stores {n_stored:,} of its {n_declared:,} chunks; the missing ones would read as fill "
                       "values, not as a recording" if n_stored < n_declared else None)
    except (OSError, ValueError, RuntimeError) as exc:
        raise InvalidRecording(f"{name}: {what} is damaged (its storage cannot be listed: {exc})") from exc
    if missing:
        raise InvalidRecording(
            f"{name}: {what} declares {_shape(dataset)} samples but {missing} (a recording stopped before "
            "it was written out, or a damaged file). Upload the complete recording.")
    if end > size:
        raise InvalidRecording(
            f"{name} is truncated: {what} needs {end:,} bytes but the file has {size:,}. "
            "Upload the complete file again."
        )


def _shape(dataset: Any) -> str:
    return " x ".join(f"{n:,}" for n in dataset.shape)
