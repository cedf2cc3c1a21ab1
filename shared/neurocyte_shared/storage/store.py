"""The recording's Zarr v3 store on S3: int samples x channels, sharded by time window.

Inner chunks are 50 ms x up to 128 channels (what a reader of a few channels or of a
margin fetches: the detector reads ~17 ms of each neighbouring shard, and with 1 s chunks
it fetched and decoded three shards' worth of data for one); a shard is one detection
window across all channels (one object per window, written once by the chunker, fetched
whole in one GET). Blosc zstd with bit-shuffle suits slowly varying int16 data.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, BloscShuffle
from zarr.storage import FsspecStore

from neurocyte_shared.messaging.aws import s3fs_options

SHARD_TARGET_BYTES = 64 * 1024 * 1024
CHUNK_S = 0.05


def samples_digest(samples: np.ndarray, algorithm: str = "xxh3-128") -> str:
    """A digest of samples (C order, their own dtype), named by its algorithm: the chunker's of
    what it read from the upload and the detector's of what it decoded from the store must be
    equal. It guards against bugs and corruption, not an adversary (the upload's SHA-256 does
    that), so the fast non-cryptographic XXH3 serves; a digest without a prefix is blake2b-128,
    as announced before XXH3, so shards in flight across an upgrade still check."""
    data = np.ascontiguousarray(samples).data
    if algorithm == "xxh3-128":
        import xxhash

        return "xxh3-128:" + xxhash.xxh3_128_hexdigest(data)
    if algorithm == "blake2b-128":
        import hashlib

        return hashlib.blake2b(data, digest_size=16).hexdigest()
    raise ValueError(f"unknown samples digest {algorithm!r}")


def digest_matches(samples: np.ndarray, announced: str) -> tuple[bool, str]:
    """(whether `samples` have the `announced` digest, their digest by the same algorithm)."""
    algorithm = announced.partition(":")[0] if ":" in announced else "blake2b-128"
    got = samples_digest(samples, algorithm)
    return got == announced, got


class StoreMismatch(RuntimeError):
    """The store does not give back the samples the upload had (raised, so retried, then failed)."""


def store_url(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key.rstrip('/')}"


def _store(url: str, read_only: bool) -> FsspecStore:
    return FsspecStore.from_url(url, storage_options=s3fs_options(), read_only=read_only)


def shard_samples(n_channels: int, sampling_rate_hz: float, itemsize: int, window_s: float) -> int:
    """Samples per shard: the requested window, shortened so one shard stays near 64 MiB,
    and a whole number of 1 s chunks."""
    chunk = int(round(sampling_rate_hz))
    by_memory = max(1, SHARD_TARGET_BYTES // (n_channels * itemsize * chunk)) * chunk
    wanted = max(1, int(round(window_s))) * chunk
    return min(wanted, by_memory)


def create(url: str, *, n_samples: int, n_channels: int, dtype: str, sampling_rate_hz: float,
           window_s: float, attributes: dict[str, Any]) -> zarr.Array:
    itemsize = np.dtype(dtype).itemsize
    shard = min(shard_samples(n_channels, sampling_rate_hz, itemsize, window_s), n_samples)
    chunk_t = min(max(1, int(round(sampling_rate_hz * CHUNK_S))), shard)
    chunk_c = n_channels if n_channels <= 128 else 128
    shard = max(chunk_t, shard // chunk_t * chunk_t)
    shard_c = math.ceil(n_channels / chunk_c) * chunk_c
    return zarr.create_array(
        store=_store(url, read_only=False),
        shape=(n_samples, n_channels),
        dtype=dtype,
        chunks=(chunk_t, chunk_c),
        shards=(shard, shard_c),
        compressors=BloscCodec(cname="zstd", clevel=5, shuffle=BloscShuffle.bitshuffle),
        attributes=attributes,
        overwrite=True,
    )


def open_array(url: str, *, writable: bool = False) -> zarr.Array:
    """Read-only unless `writable` (the chunker resuming a store a killed attempt began)."""
    if writable:
        return zarr.open_array(store=_store(url, read_only=False), mode="r+")
    return zarr.open_array(store=_store(url, read_only=True), mode="r")
