"""Neurocyte notifier service."""
