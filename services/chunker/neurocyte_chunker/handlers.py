"""Chunker: a validated recording -> a sharded Zarr v3 store on S3, one window at a time
(never the whole recording in memory) -> one ShardReady per window.

Shards are announced while chunking goes on, so detection overlaps it: shard i as soon as
shard i+1 is written (the detector reads a margin of each neighbour), the last one only
once the whole upload has been checked against what ingest validated. A changed upload is
refused before its last shard is announced, so the aggregator, which needs every shard,
never summarises it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import structlog
from pydantic import Field

from neurocyte_shared.formats import Opener
from neurocyte_shared.messaging.config import EnvSettings, Settings
from neurocyte_shared.messaging.events import Event, RecordingValidated, RerunRequested, ShardReady
from neurocyte_shared.storage import layout, pins, s3io, store
from neurocyte_shared.storage.documents import RecordingDocument

log = structlog.get_logger()


@dataclass
class Deps:
    s3: Any
    data_bucket: str
    opener_for: Callable[..., Opener]  # (bucket, prefix, versions) -> opener of the pinned versions
    window_s: float = 10.0


def on_recording_validated(event: RecordingValidated, deps: Deps) -> Iterator[Event]:
    ref = event.recording
    doc = RecordingDocument.model_validate_json(
        s3io.get_bytes(deps.s3, deps.data_bucket, layout.recording_document_key(ref.prefix)))
    info = doc.info
    opener, reader = pins.open_pinned(deps.s3, doc, deps.opener_for)
    store_key = layout.store_key(ref.prefix)
    url = store.store_url(deps.data_bucket, store_key)
    array = _resumable(deps, url, store_key, info)
    if array is None:
        array = store.create(
            url, n_samples=info.n_samples, n_channels=info.n_channels, dtype=info.dtype,
            sampling_rate_hz=info.sampling_rate_hz, window_s=deps.window_s,
            attributes={"sampling_rate_hz": info.sampling_rate_hz, "gain_uv": info.gain_uv,
                        "offset_uv": info.offset_uv, "recording_id": doc.recording_id},
        )
    window = array.shards[0]
    n_shards = -(-info.n_samples // window)

    digests: dict[int, str] = {}

    def ready(i: int) -> ShardReady:
        return ShardReady(correlation_id=event.correlation_id, recording=ref, store_key=store_key,
                          shard_index=i, n_shards=n_shards, start_sample=i * window,
                          stop_sample=min((i + 1) * window, info.n_samples), samples_digest=digests.get(i))

    # The output-exists gate: a shard is one object written in one PUT, so one that exists is
    # whole; a redelivered or resumed run writes only the missing ones (and announces all again).
    # Every shard is still read: the upload's SHA-256 and each shard's digest need all of it.
    written = set(s3io.list_keys(deps.s3, deps.data_bucket, store_key + "/c/"))
    started = time.perf_counter()
    # The next shard is read (from S3, hashed) while this one is encoded and written: the two
    # wait on different things. The reader is used by that one thread only, in order.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-ahead")
    bounds = [(i * window, min((i + 1) * window, info.n_samples)) for i in range(n_shards)]
    pending = {0: pool.submit(reader.read, *bounds[0])}
    try:
        for i in range(n_shards):
            t0 = time.perf_counter()
            data = pending.pop(i).result()
            if i + 1 < n_shards:
                pending[i + 1] = pool.submit(reader.read, *bounds[i + 1])
            t1 = time.perf_counter()
            digests[i] = store.samples_digest(data)  # the detector checks what it decodes against it
            start, stop = bounds[i]
            if f"{store_key}/c/{i}/0" in written:
                log.info("shard_already_written", shard=i + 1, of=n_shards)
            else:
                array[start:stop, :] = data  # one whole shard: one object, written once
                log.info("shard_written", shard=i + 1, of=n_shards, wait_read_s=round(t1 - t0, 3),
                         write_s=round(time.perf_counter() - t1, 3),
                         mb_per_s=round(stop * info.n_channels * array.dtype.itemsize / 1e6
                                        / (time.perf_counter() - started), 1))
            del data
            if i > 0:
                yield ready(i - 1)  # both its neighbours are in the store now
    finally:
        for f in pending.values():
            f.cancel()
        pool.shutdown(wait=True)
        reader.close()
    wrong = opener.mismatches(doc.claimed_sha256)
    if wrong:
        log.warning("upload_checksum_mismatch", files=wrong)
        yield pins.refusal(deps.s3, deps.data_bucket, doc, ref.prefix, pins.CHANGED.format(
            what=f"{', '.join(wrong)}: the bytes are not those the manifest's SHA-256 describes"))
        return
    changed = pins.changed_files(deps.s3, doc.upload_bucket, doc.upload_versions)
    if changed:
        log.warning("upload_changed", files=changed)
        yield pins.refusal(deps.s3, deps.data_bucket, doc, ref.prefix,
                           pins.CHANGED.format(what=f"{', '.join(changed)} was written over"))
        return
    yield ready(n_shards - 1)


def on_rerun_requested(event: RerunRequested, deps: Deps) -> list[Event]:
    """Announce a chunked recording's shards again, with the rerun's parameters: the detector
    and aggregator write a new version beside the others (finished shards of it are reused)."""
    ref = event.recording
    store_key = layout.store_key(ref.prefix)
    if s3io.head(deps.s3, deps.data_bucket, layout.rejected_key(ref.prefix)) is not None:
        log.info("rerun_of_refused_recording_ignored")
        return []
    array = store.open_array(store.store_url(deps.data_bucket, store_key))
    n_samples, window = array.shape[0], array.shards[0]
    n_shards = -(-n_samples // window)
    log.info("rerun_requested", n_shards=n_shards, detection_params=event.detection_params,
             metrics_params=event.metrics_params)
    return [ShardReady(correlation_id=event.correlation_id, recording=ref, store_key=store_key, shard_index=i,
                       n_shards=n_shards, start_sample=i * window, stop_sample=min((i + 1) * window, n_samples),
                       detection_params=event.detection_params, metrics_params=event.metrics_params)
            for i in range(n_shards)]


def _resumable(deps: Deps, url: str, store_key: str, info) -> Any:
    """The store a previous attempt created, if it matches this recording; else None."""
    if s3io.head(deps.s3, deps.data_bucket, store_key + "/zarr.json") is None:
        return None
    try:
        array = store.open_array(url, writable=True)
    except Exception:  # unreadable metadata: start over
        return None
    if array.shape == (info.n_samples, info.n_channels) and str(array.dtype) == info.dtype:
        return array
    return None


class ChunkerSettings(EnvSettings):
    shard_s: float = Field(10.0, gt=0, alias="NEUROCYTE_SHARD_S", description="chunker: seconds of recording per shard")


def build(settings: Settings) -> dict:
    from neurocyte_shared.messaging.service import s3
    from neurocyte_shared.storage.s3io import S3Opener

    deps = Deps(s3=s3(settings), data_bucket=settings.data_bucket,
                opener_for=lambda bucket, prefix, versions=None: S3Opener(bucket, prefix, versions=versions),
                window_s=ChunkerSettings.from_env().shard_s)
    return {RecordingValidated: partial(on_recording_validated, deps=deps),
            RerunRequested: partial(on_rerun_requested, deps=deps)}
