"""Spike detection: a pure function of arrays and parameters (no AWS, no files).

    params.py     DetectionParams (units in the names) and peeling's fixed constants
    filters.py    raw -> microvolts, bandpass, common reference; noise; clipped samples
    peaks.py      threshold, dead time, spatial de-duplication over neighbours
    templates.py  spike templates learned from isolated spikes (k-means)
    peeling.py    subtract spikes found, detect again on what remains
    detect.py     detect_spikes (one array) and learn_recording (what the whole recording gives)
    windows.py    the window executor: a recording in windows with margins, in threads

Names are loaded on first use (PEP 562): `DetectionParams` alone loads no numerical kernels,
`detect_spikes` does. The spike table is `neurocyte_shared.science.table`.
"""

import importlib

_WHERE = {
    ".detect": ("Learned", "detect_spikes", "estimate_noise", "learn_recording", "noise_chunk_starts", "warm_up"),
    ".filters": ("butter_bandpass_sos", "median_network", "noise_levels", "preprocess", "saturated_samples"),
    ".params": ("DetectionParams", "peel_reach"),
    ".peaks": ("find_peaks", "neighbours"),
    ".peeling": ("peel_and_detect",),
    ".templates": ("Templates", "learn_templates"),
    "..table": ("SpikeTable",),
}
_MODULE_OF = {name: module for module, names in _WHERE.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
