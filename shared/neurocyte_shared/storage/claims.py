"""First writer wins: a claim is a small JSON object written with a conditional PUT
(If-None-Match: *), so of several workers doing the same thing at once exactly one proceeds.

Used for a recording's content fingerprint (ingest), a result version's summary.json
(aggregator) and an email's marker (notifier). A claim may carry a state: written
"claimed", then "done" once the work it guards is finished, so a redelivery of the claim's
own owner can finish what a crash interrupted while everyone else stops.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from neurocyte_shared.messaging.aws import is_precondition_failed
from neurocyte_shared.storage import s3io


def claim(s3: Any, bucket: str, key: str, record: dict | str, *,
          is_mine: Callable[[dict], bool] = lambda existing: False) -> dict | None:
    """Write `record` at `key` unless something is there. None: the caller holds the claim
    (it wrote it now, or `is_mine(existing)` says an earlier attempt of its own did); else
    the record another writer left there."""
    try:
        s3io.put_json(s3, bucket, key, record, if_none_match=True)
        return None
    except ClientError as exc:
        if not is_precondition_failed(exc):
            raise
    existing = s3io.get_json(s3, bucket, key)
    return None if is_mine(existing) else existing


def complete(s3: Any, bucket: str, key: str, record: dict) -> None:
    """Mark a claim's work done (the owner's write; unconditional, the claim is already held)."""
    s3io.put_json(s3, bucket, key, {**record, "state": "done"})
