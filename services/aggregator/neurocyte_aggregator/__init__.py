"""Neurocyte aggregator service."""
