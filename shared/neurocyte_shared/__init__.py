"""Neurocyte's common code. Nothing here touches AWS at import time."""
