"""Spike tables on disk: Parquet with the columns sample_index, channel_index, amplitude_uv."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .detection import SpikeTable

SCHEMA = pa.schema(
    [("sample_index", pa.int64()), ("channel_index", pa.int32()), ("amplitude_uv", pa.float32())]
)


def to_parquet_bytes(table: SpikeTable) -> bytes:
    t = pa.Table.from_arrays(
        [pa.array(table.sample_index, pa.int64()), pa.array(table.channel_index, pa.int32()),
         pa.array(table.amplitude_uv, pa.float32())],
        schema=SCHEMA,
    )
    buf = io.BytesIO()
    pq.write_table(t, buf, compression="zstd")
    return buf.getvalue()


def from_parquet_bytes(data: bytes) -> SpikeTable:
    t = pq.read_table(io.BytesIO(data))
    return SpikeTable(
        t.column("sample_index").to_numpy().astype(np.int64),
        t.column("channel_index").to_numpy().astype(np.int32),
        t.column("amplitude_uv").to_numpy().astype(np.float32),
    )
