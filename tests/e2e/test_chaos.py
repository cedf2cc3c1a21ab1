"""Workers killed at random points while several recordings are in flight: each recording
still ends in exactly one published summary and one email, and its spike table equals that
of an undisturbed run. Killed workers are restarted, as ECS restarts a stopped task."""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import uuid

import numpy as np
import pytest

from neurocyte_cli import local as L
from neurocyte_shared.science.synthetic import SyntheticSpec, write_recording
from neurocyte_shared.storage import s3io, spikes

from .conftest import wait_for

pytestmark = pytest.mark.e2e

# The notifier is left alone: between SNS accepting a message and the marker recording it,
# a kill would send the email twice (at-least-once delivery has that one window).
VICTIMS = ("chunker-0", "detector-0", "detector-1", "aggregator-0")
MAX_UPLOADS = 8


def _upload(stack, files, tenant: str) -> tuple[str, str]:
    email, rid = f"{tenant}@example.org", f"chaos-{uuid.uuid4().hex[:8]}"
    stack.upload(files, email=email, tenant=tenant, rid=rid)
    return email, rid


def _emails(stack, email: str, rid: str) -> list[dict]:
    return [m for m in stack.mail_to(email) if rid in json.dumps(m)]


def _table(stack, tenant: str, rid: str):
    summaries = [k for k in stack.keys(f"recordings/tenant={tenant}/") if f"/{rid}/results/" in k
                 and k.endswith("/summary.json")]
    assert len(summaries) == 1, summaries
    folder = summaries[0][: -len("summary.json")]
    summary = s3io.get_json(stack.s3, stack.data, summaries[0])
    return summary, spikes.from_parquet_bytes(s3io.get_bytes(stack.s3, stack.data, folder + "spikes.parquet"))


def test_recordings_survive_workers_killed_at_random(stack, tmp_path):
    bin_path, json_path, _ = write_recording(tmp_path, "c", SyntheticSpec(n_channels=32, duration_s=20.0,
                                                                         n_units=16, seed=11))
    files = {"c.bin": bin_path.read_bytes(), "c.json": json_path.read_bytes()}

    clean_email, clean_rid = _upload(stack, files, "chaosclean")
    wait_for(lambda: _emails(stack, clean_email, clean_rid), 240, "the undisturbed run's email")
    _, clean = _table(stack, "chaosclean", clean_rid)

    def dead_letters() -> dict[str, int]:
        return {n: stack.dead_letters(n) for n in ("Chunker", "Detector", "Aggregator")}

    before = dead_letters()
    uploads = [_upload(stack, files, f"chaos{i}") for i in range(3)]
    done = threading.Event()
    kills: list[str] = []

    def chaos() -> None:
        rng = random.Random(1234)
        # Each kind once: the two detectors share a queue, so a shard is killed on at most two
        # of its three deliveries and the third finishes it. (A kill on every delivery is the
        # dead-letter path, tested on its own.)
        while not done.is_set() and len(kills) < len(VICTIMS):
            done.wait(rng.uniform(0.3, 1.5))  # a random point in whatever each worker is doing
            if done.is_set():
                break
            victim = VICTIMS[len(kills) % len(VICTIMS)]  # every kind of worker gets killed
            pid = L._read_pid(stack.local, victim)
            if pid and L._alive(pid):
                os.killpg(pid, signal.SIGKILL)
                kills.append(victim)
            done.wait(1.0)
            L.start_services(stack.local, stack.outputs, detectors=2, say=lambda *_: None)

    monkey = threading.Thread(target=chaos, daemon=True)
    monkey.start()
    try:
        # The pipeline may finish three recordings before every kind of worker was killed once;
        # then one more goes in, so each kill lands while some recording is in flight.
        while True:
            for email, rid in uploads:
                wait_for(lambda: _emails(stack, email, rid), 600, f"the email of {rid} despite the kills")
            if set(kills) == set(VICTIMS) or len(uploads) == MAX_UPLOADS:
                break
            uploads.append(_upload(stack, files, f"chaos{len(uploads)}"))
    finally:
        done.set()
        monkey.join(30)
    L.start_services(stack.local, stack.outputs, detectors=2, say=lambda *_: None)
    assert set(kills) == set(VICTIMS), f"the test killed too few kinds of worker to prove anything: {kills}"

    wait_for(lambda: all(stack.queue_idle(q) for q in ("Chunker", "Detector", "Aggregator", "Notifier")), 180,
             "every queue to drain")
    for i, (email, rid) in enumerate(uploads):
        assert len(_emails(stack, email, rid)) == 1, f"{rid}: not exactly one email"
        summary, table = _table(stack, f"chaos{i}", rid)
        assert summary["total_spikes"] == len(clean)
        np.testing.assert_array_equal(table.sample_index, clean.sample_index)
        np.testing.assert_array_equal(table.channel_index, clean.channel_index)
        np.testing.assert_allclose(table.amplitude_uv, clean.amplitude_uv)
    assert dead_letters() == before, "a kill sent a message to a dead-letter queue"
    print(f"killed: {kills}")
