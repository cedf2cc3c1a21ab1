"""Neurocyte detector service."""
