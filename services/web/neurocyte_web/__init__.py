"""The web front-end: sign in by emailed link, drop recordings (straight to S3), follow them,
read their reports. State lives in S3 beside the pipeline's (storage/layout.py)."""
