"""The digest the chunker announces for each shard and the detector checks the decoded store
against: named by its algorithm, sensitive to one sample, and still readable from before XXH3."""

import hashlib

import numpy as np
import pytest

from neurocyte_shared.storage import store


def _samples() -> np.ndarray:
    return np.random.default_rng(3).integers(-2000, 2000, size=(2000, 16), dtype=np.int16)


def test_the_digest_names_its_algorithm_and_changes_with_one_sample():
    x = _samples()
    d = store.samples_digest(x)
    assert d.startswith("xxh3-128:") and len(d) == len("xxh3-128:") + 32
    y = x.copy()
    y[1234, 7] += 1
    assert store.digest_matches(x, d) == (True, d)
    same, got = store.digest_matches(y, d)
    assert not same and got != d


def test_a_digest_of_a_strided_view_is_that_of_its_samples_in_c_order():
    x = _samples()
    view = x[100:900]  # what the detector checks: its shard out of a window with margins
    assert store.samples_digest(view) == store.samples_digest(np.array(view, order="C"))
    assert store.samples_digest(x.astype(np.int32)) != store.samples_digest(x)  # the dtype counts


def test_a_digest_announced_before_xxh3_still_checks():
    x = _samples()
    legacy = hashlib.blake2b(x.tobytes(), digest_size=16).hexdigest()  # no prefix: blake2b-128
    assert store.digest_matches(x, legacy)[0]
    assert not store.digest_matches(x[:-1], legacy)[0]


def test_an_unknown_algorithm_is_refused():
    with pytest.raises(ValueError, match="unknown samples digest"):
        store.digest_matches(_samples(), "md5:0123")
