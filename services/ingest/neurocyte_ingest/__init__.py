"""Neurocyte ingest service."""
