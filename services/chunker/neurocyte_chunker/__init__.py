"""Neurocyte chunker service."""
