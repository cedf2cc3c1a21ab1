"""The numerical kernels of detection: `jit.py` (numba), `aot.py` (the same compiled ahead of
time, and `load()`, which picks one), `codes.py` (the integer codes both take)."""
