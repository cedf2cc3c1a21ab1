"""numba, imported once for the kernels: with its BLAS probe skipped (see below)."""

from __future__ import annotations

import sys


def _skip_numba_blas_probe() -> None:
    """Numba probes for BLAS when its numpy support loads (at the first kernel call) by
    importing scipy.linalg: ~0.3 s of every command's start-up. These kernels use no linear
    algebra, so the probe is made to fail fast, once; scipy.linalg stays importable for
    everyone else. (Numba jitted code in this process then has no np.dot: none is used.)"""
    if "numba.np.arraymath" in sys.modules or "scipy.linalg" in sys.modules:
        return
    sys.modules["scipy.linalg"] = None  # type: ignore[assignment]
    try:
        import numba.np.arraymath  # noqa: F401
    finally:
        del sys.modules["scipy.linalg"]


_skip_numba_blas_probe()
from numba import njit  # noqa: E402, F401 - the kernels' decorator
