import io
import json

import pytest

from neurocyte_shared.messaging.events import S3ObjectCreated
from neurocyte_shared.science.synthetic import SyntheticSpec, write_recording

from .fakes import FakeS3, FakeSNS

UPLOADS, DATA = "uploads-bucket", "data-bucket"


@pytest.fixture
def s3():
    return FakeS3()


@pytest.fixture
def sns():
    return FakeSNS()


@pytest.fixture(scope="session")
def recording(tmp_path_factory):
    """A small synthetic raw-binary recording: (bin bytes, sidecar bytes)."""
    folder = tmp_path_factory.mktemp("rec")
    bin_path, json_path, _ = write_recording(folder, "rec", SyntheticSpec(n_channels=8, duration_s=2.0, n_units=4,
                                                                          seed=1))
    return bin_path.read_bytes(), json_path.read_bytes()


def opener_for(s3):
    """(bucket, prefix, versions) -> name -> the pinned version's bytes, as S3Opener does."""
    def opener(bucket, prefix, versions=None):
        def open_(name):
            key = prefix + name
            version = (versions or {}).get(key)
            obj = s3.versions[(bucket, key, version)] if version else s3.objects[(bucket, key)]
            return io.BytesIO(obj.body)
        return open_
    return opener


def upload(s3, tenant, rid, files: dict[str, bytes], email="ana@lab.org", **manifest) -> S3ObjectCreated:
    prefix = f"uploads/{tenant}/{rid}/"
    for name, data in files.items():
        s3.put(UPLOADS, prefix + name, data)
    doc = {"uploader_email": email, "files": [{"name": n, "size_bytes": len(d)} for n, d in files.items()],
           **manifest}
    s3.put(UPLOADS, prefix + "manifest.json", json.dumps(doc))
    version = s3.objects[(UPLOADS, prefix + "manifest.json")].version  # as EventBridge names it
    return S3ObjectCreated(bucket={"name": UPLOADS},
                           object={"key": prefix + "manifest.json", "size": 1, "version-id": version})
