"""Each accepted format, end to end: upload -> validation -> shards -> spikes -> summary ->
email, on a real LocalStack. A MaxTwo file with two wells gives two recordings and two emails."""

from __future__ import annotations

import json
import re
import uuid

import pytest

from neurocyte_shared.science.synthetic import SyntheticSpec, write_recording

from ..samples import FORMATS, convert
from .conftest import mail_body as _body
from .conftest import wait_for

pytestmark = pytest.mark.e2e


def test_every_format_goes_from_upload_to_email(stack, tmp_path):
    bin_path, json_path, _ = write_recording(tmp_path, "src", SyntheticSpec(n_channels=16, duration_s=8.0,
                                                                            n_units=8, seed=11))
    email = f"formats-{uuid.uuid4().hex[:6]}@example.org"
    expected: dict[str, tuple[str, str]] = {}  # recording id -> (format label, format in the summary)
    uploaded: dict[str, tuple[dict[str, bytes], str | None]] = {}  # recording id -> (files, stream)
    for fmt in FORMATS:
        rid = f"{fmt.replace('_', '-')}-{uuid.uuid4().hex[:6]}"
        files = convert(bin_path, json_path, fmt, tmp_path / fmt)
        stack.upload(files, email=email, tenant="formats", rid=rid)
        summary_format = {"maxwell_wells": "maxwell"}.get(fmt, fmt)
        if fmt == "maxwell_wells":  # one recording per well
            for well in ("well000", "well001"):
                expected[f"{rid}-{well}"] = (fmt, summary_format)
                uploaded[f"{rid}-{well}"] = (files, well)
        else:
            expected[rid] = (fmt, summary_format)
            uploaded[rid] = (files, None)

    mails = wait_for(lambda: (m := stack.mail_to(email)) and len(m) >= len(expected) and m, 300,
                     f"{len(expected)} result emails")
    assert len(mails) == len(expected)
    seen = {}
    for m in mails:
        body = _body(m)
        rid = next(r for r in expected if re.search(rf"\b{re.escape(r)}\b", body))
        seen[rid] = body
        assert "Channels:            16" in body, (expected[rid], body[:400])
        spikes = int(re.search(r"Total spikes:\s+([\d,]+)", body).group(1).replace(",", ""))
        assert spikes > 100, (expected[rid], spikes)
    assert set(seen) == set(expected)
    for rid, (label, fmt) in expected.items():
        key = next(
            k for k in stack.keys("recordings/tenant=formats/") if f"/{rid}/" in k and k.endswith("summary.json")
        )
        summary = json.loads(stack.s3.get_object(Bucket=stack.data, Key=key)["Body"].read())
        assert summary["format"] == fmt, label
        assert summary["n_channels"] == 16
    _store_gives_back_the_upload(stack, uploaded)


def _store_gives_back_the_upload(stack, uploaded) -> None:
    """The Zarr store holds the upload's own samples, bit for bit, in every format; so each
    raw upload was tagged for Deep Archive (the lab's default), its one lossless copy the store."""
    import io

    import numpy as np

    from neurocyte_shared.formats import identify, open_reader
    from neurocyte_shared.storage import store

    for rid, (files, stream) in uploaded.items():
        fmt, roles = identify(list(files))
        reader = open_reader(fmt, roles, lambda n: io.BytesIO(files[n]), {n: len(b) for n, b in files.items()},
                             stream)
        original = reader.read(0, reader.info.n_samples)
        reader.close()
        doc_key = next(k for k in stack.keys("recordings/tenant=formats/") if f"/{rid}/recording.json" in k)
        stored = store.open_array(store.store_url(stack.data, doc_key.rsplit("/", 1)[0] + "/raw.zarr"))[:]
        assert stored.dtype == original.dtype and np.array_equal(stored, original), (rid, fmt)
        upload_key = next(k for k in json.loads(stack.s3.get_object(Bucket=stack.data, Key=doc_key)["Body"].read())
                          ["upload_keys"])
        tags = {t["Key"]: t["Value"] for t in stack.s3.get_object_tagging(Bucket=stack.uploads, Key=upload_key)
                ["TagSet"]}
        assert tags.get("neurocyte-raw") == "archive", (rid, tags)


def test_a_file_declaring_more_than_it_stores_is_refused_before_any_chunk(stack, tmp_path):
    """An NWB file whose signal declares 10^6 times the samples it stores (HDF5 would read the
    rest as fill values): one refusal email saying so, and no store, shard or summary."""
    from ..unit.test_formats_all import _declare_more_than_stored

    bin_path, json_path, _ = write_recording(tmp_path, "src", SyntheticSpec(n_channels=16, duration_s=2.0,
                                                                            n_units=4, seed=5))
    files = convert(bin_path, json_path, "nwb", tmp_path / "nwb")
    (name,) = files
    _declare_more_than_stored(tmp_path / "nwb" / name, 1_000_000, write_first_chunk=True)
    files = {name: (tmp_path / "nwb" / name).read_bytes()}
    email, rid = f"sparse-{uuid.uuid4().hex[:6]}@example.org", f"sparse-{uuid.uuid4().hex[:6]}"
    stack.upload(files, email=email, tenant="sparse", rid=rid)
    mail = wait_for(lambda: stack.mail_to(email), 120, "the refusal email")
    body = _body(mail[0])
    assert "declares 40,000,000,000 x 16 samples but stores 1 of its" in body, body[:1500]
    wait_for(lambda: stack.queue_idle("Ingest") and stack.queue_idle("Notifier"), 60, "queues to drain")
    keys = [k for k in stack.keys("recordings/tenant=sparse/") if f"/{rid}/" in k]
    assert [k.rsplit("/", 1)[1] for k in keys] == ["rejected.json"]  # nothing chunked
    assert len(stack.mail_to(email)) == 1
