"""Spike tables on disk: Parquet with the columns sample_index, channel_index, amplitude_uv,
peeled (found by peeling). A shard's file also carries, in its metadata, its clipped-sample
counts and its waveform sums, so a shard's spikes and what the report draws from them are
written (and seen) together."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from neurocyte_shared.science.table import SpikeTable
from neurocyte_shared.science.waveforms import Waveforms

SCHEMA = pa.schema(
    [("sample_index", pa.int64()), ("channel_index", pa.int32()), ("amplitude_uv", pa.float32()),
     ("peeled", pa.bool_())]
)


SATURATION_KEY = b"neurocyte.saturated_samples"
SILENCED_KEY = b"neurocyte.silenced_samples"
ARTEFACTS_KEY = b"neurocyte.stimulation_artefacts"
WAVEFORMS_KEY = b"neurocyte.waveforms"
VERIFIED_KEY = b"neurocyte.samples_verified"  # the shard's decoded samples matched the upload's digest


def _column(values: np.ndarray, dtype: np.dtype, arrow_type: pa.DataType) -> pa.Array:
    """A numpy column as an Arrow array, zero-copy. Not pa.array(): it checks whether the input
    is a pandas object, which imports pandas (seconds of start-up) wherever pandas is installed."""
    values = np.ascontiguousarray(values, dtype=dtype)
    return pa.Array.from_buffers(arrow_type, len(values), [None, pa.py_buffer(values)])


def arrow_table(table: SpikeTable, schema: pa.Schema = SCHEMA) -> pa.Table:
    peeled = pa.Array.from_buffers(pa.bool_(), len(table), [None, pa.py_buffer(np.packbits(
        table.peeled_mask, bitorder="little"))])  # Arrow's booleans are bits, least significant first
    return pa.Table.from_arrays(
        [_column(table.sample_index, np.int64, pa.int64()), _column(table.channel_index, np.int32, pa.int32()),
         _column(table.amplitude_uv, np.float32, pa.float32()), peeled],
        schema=schema,
    )


def to_parquet_bytes(table: SpikeTable, saturated: np.ndarray | None = None,
                     waveforms: Waveforms | None = None, *, silenced: np.ndarray | None = None,
                     artefacts: list[int] | None = None, samples_verified: bool = False) -> bytes:
    """saturated: per-channel clipped-sample counts of the window; silenced: per-channel counts
    of the samples detection silenced around clipped ones and stimulation artefacts; artefacts:
    the first sample of each stimulation artefact that begins in the window; waveforms: its
    spikes' waveform sums; samples_verified: the store's samples were checked against the
    upload's; all kept in the file's metadata."""
    meta = {VERIFIED_KEY: b"true"} if samples_verified else {}
    if saturated is not None:
        meta[SATURATION_KEY] = json.dumps([int(v) for v in saturated]).encode()
    if silenced is not None:
        meta[SILENCED_KEY] = json.dumps([int(v) for v in silenced]).encode()
    if artefacts is not None:
        meta[ARTEFACTS_KEY] = json.dumps([int(v) for v in artefacts]).encode()
    if waveforms is not None:
        meta[WAVEFORMS_KEY] = base64.b64encode(waveforms.to_bytes())
    t = arrow_table(table, SCHEMA.with_metadata(meta) if meta else SCHEMA)
    buf = io.BytesIO()
    pq.write_table(t, buf, compression="zstd")
    return buf.getvalue()


def from_parquet_bytes(data: bytes) -> SpikeTable:
    t = pq.read_table(io.BytesIO(data))
    return SpikeTable(
        t.column("sample_index").to_numpy().astype(np.int64),
        t.column("channel_index").to_numpy().astype(np.int32),
        t.column("amplitude_uv").to_numpy().astype(np.float32),
        t.column("peeled").to_numpy(zero_copy_only=False).astype(bool) if "peeled" in t.column_names else None,
    )


def waveforms_from_parquet_bytes(data: bytes) -> Waveforms | None:
    raw = (pq.read_schema(io.BytesIO(data)).metadata or {}).get(WAVEFORMS_KEY)
    return None if raw is None else Waveforms.from_bytes(base64.b64decode(raw))


def saturation_from_parquet_bytes(data: bytes) -> np.ndarray | None:
    return _ints(data, SATURATION_KEY)


def silenced_from_parquet_bytes(data: bytes) -> np.ndarray | None:
    return _ints(data, SILENCED_KEY)


def artefacts_from_parquet_bytes(data: bytes) -> np.ndarray | None:
    return _ints(data, ARTEFACTS_KEY)


def _ints(data: bytes, key: bytes) -> np.ndarray | None:
    raw = (pq.read_schema(io.BytesIO(data)).metadata or {}).get(key)
    return None if raw is None else np.asarray(json.loads(raw), dtype=np.int64)


def samples_verified(data: bytes) -> bool:
    return (pq.read_schema(io.BytesIO(data)).metadata or {}).get(VERIFIED_KEY) == b"true"
