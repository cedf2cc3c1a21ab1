"""Storage: every S3 key (`layout.py`), S3 helpers (`s3io.py`), the Zarr store (`store.py`), spike
files (`spikes.py`), the upload and recording documents (`documents.py`) and the
first-writer-wins claims (`claims.py`)."""
