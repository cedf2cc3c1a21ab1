"""The detection kernels (`jit.py`) compiled ahead of time, for start-up.

Why: a one-shot command such as `neurocyte detect` pays numba's start-up before its first
sample: importing numba (0.45 s) and loading the cached kernels through its dispatcher
(0.35 s). That is a quarter of a minute-long recording's whole run. `make setup` compiles the
same kernels into a plain extension module once (`python -m neurocyte_shared.science.kernels.aot`,
about a minute, with numba's AOT compiler and the C compiler); importing it takes
milliseconds and needs no numba.

`load()` gives what the detection core calls: the compiled module when it was built from
exactly this source on this kind of CPU (its name carries a hash of `jit.py`, `codes.py`, of this
file and of the CPU's instruction sets), or else numba's just-in-time kernels, which give
the same results (tested) and are what the long-running services use: there, start-up is
paid once per container. NEUROCYTE_KERNELS=jit forces the JIT kernels, =aot the compiled ones.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from neurocyte_shared.science.kernels.codes import (
    REF_MEAN,
    REF_MEDIAN,
    REF_NONE,
    SIGN_BOTH,
    SIGN_NEG,
    SIGN_POS,
)

_HERE = Path(__file__).resolve().parent
_PREFIX = "_kernels_"

# Sample types the recording formats store, compiled as they are; others are converted to
# float32 first, which is exactly what the kernel does to each sample anyway.
_RAW = {"i2": np.int16, "u2": np.uint16, "i4": np.int32, "f4": np.float32}

# Exported name -> (the kernel it runs, its signature). Arrays are C-contiguous; the
# wrappers in `_Compiled` make sure of it, as a compiled function cannot check.
_EXPORTS = {
    **{f"bandpass_reference_{k}": ("bandpass_reference",
                                   f"void({k}[:, ::1], f8, f8, f4[:, ::1], i8, i8[:, ::1], f4[::1], f4[::1], "
                                   "f4[:, ::1])")
       for k in _RAW},
    "median_abs_deviation": ("median_abs_deviation", "void(f4[:, ::1], f4[::1])"),
    "find_peaks": ("find_peaks",
                   "Tuple((i8[::1], i4[::1]))(f4[:, ::1], f4[::1], i8, i8, i8, i8, f4, i8, i8, i4[:, ::1], i4[::1])"),
    "pooled_marks": ("pooled_marks", "Tuple((i8[::1], i4[::1]))(f4[:, ::1], f4[::1], f8, f8, f8, i4[:, ::1], "
                                     "f4[:, ::1], i4[::1], f4[::1], i8, i8)"),
    "matched_marks": ("matched_marks", "Tuple((i8[::1], i4[::1], f4[::1]))(f4[:, ::1], f4[::1], f8, i8, i4[:, ::1], "
                                       "f4[:, ::1], i4[::1], f4[::1], i8, i8, f4[::1], f8, f4[::1], f8, i8, "
                                       "i8, i8)"),
    "pooled_rows": ("pooled_rows", "void(f4[:, ::1], f4[::1], i4[:, ::1], f4[:, ::1], i4[::1], i8, f4[:, ::1])"),
    "peel": ("peel", "void(f4[:, ::1], i8[::1], i4[::1], f4[:, :, ::1], i4[:, ::1], i4[::1], f4[::1], i8[::1], "
                     "i8[::1], i8, i8, f8, f8, i8, i8, i8, f8, f8, i8[::1], i4[::1], f4[::1], i8[::1], i4[::1], "
                     "f4[::1])"),
    "subtracted_at": ("subtracted_at", "f4[::1](i8[::1], i4[::1], i8[::1], i4[::1], f4[::1], f4[:, :, ::1], "
                                       "i4[:, ::1], i4[::1])"),
    "gather_snippets": ("gather_snippets", "void(u4[:, ::1], i8[::1], i4[::1], i4[:, ::1], i4[::1], i8, "
                                           "u2[:, :, ::1])"),
}


def _cpu() -> bytes:
    """What the compiled code may use of this CPU: its instruction-set flags. A repository on
    a shared disk (a cluster's login and compute nodes) must not run one node's build on
    another without that node's instructions."""
    try:
        with open("/proc/cpuinfo", "rb") as f:
            for line in f:
                if line.startswith((b"flags", b"Features")):
                    return line
    except OSError:
        pass
    return platform.machine().encode() + platform.processor().encode()


def module_name() -> str:
    """The compiled module's name for the current sources and CPU."""
    sources = b"".join((_HERE / f).read_bytes() for f in ("jit.py", "jit_peaks.py", "_numba.py", "codes.py"))
    digest = hashlib.sha256(sources + Path(__file__).read_bytes() + _cpu()).hexdigest()
    return _PREFIX + digest[:16]


def _c(a: np.ndarray, dtype) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=dtype)


def _out(a: np.ndarray, dtype, ndim: int) -> np.ndarray:
    """An array the kernel writes into: it must already be what the signature says."""
    if a.dtype != dtype or a.ndim != ndim or not a.flags.c_contiguous or not a.flags.writeable:
        raise TypeError(
            f"output must be a writeable C-contiguous {np.dtype(dtype).name} array of {ndim} dims, "
            f"got {a.dtype} {a.shape}"
        )
    return a


class _Compiled:
    """The kernels' interface (as in `jit.py`) over the compiled module."""

    REF_NONE, REF_MEDIAN, REF_MEAN = REF_NONE, REF_MEDIAN, REF_MEAN
    SIGN_NEG, SIGN_POS, SIGN_BOTH = SIGN_NEG, SIGN_POS, SIGN_BOTH

    def __init__(self, module) -> None:
        self.module = module
        self._bandpass = {np.dtype(t): getattr(module, f"bandpass_reference_{k}") for k, t in _RAW.items()}

    def bandpass_reference(self, raw, gain, offset, sos, reference, net, ref_gain, ref_out, out):
        raw = np.asarray(raw)
        run = self._bandpass.get(raw.dtype)
        if run is None:
            raw, run = raw.astype(np.float32), self._bandpass[np.dtype(np.float32)]
        run(
            _c(raw, raw.dtype),
            float(gain),
            float(offset),
            _c(sos, np.float32),
            int(reference),
            _c(net, np.int64).reshape(-1, 2),
            _c(ref_gain, np.float32),
            _out(ref_out, np.float32, 1),
            _out(out, np.float32, 2),
        )

    def median_abs_deviation(self, x, out):
        self.module.median_abs_deviation(_c(x, np.float32), _out(out, np.float32, 1))

    def find_peaks(
        self, x, threshold, sign, half, spatial_half, echo, echo_ratio, start, stop, neighbours, n_neighbours
    ):
        return self.module.find_peaks(
            _c(x, np.float32),
            _c(threshold, np.float32),
            int(sign),
            int(half),
            int(spatial_half),
            int(echo),
            float(echo_ratio),
            int(start),
            int(stop),
            _c(neighbours, np.int32),
            _c(n_neighbours, np.int32),
        )

    def pooled_marks(self, x, inv_noise, z_min, threshold, pooled_threshold, index, weight, count, inv_scale,
                     start, stop):
        return self.module.pooled_marks(
            _c(x, np.float32), _c(inv_noise, np.float32), float(z_min), float(threshold), float(pooled_threshold),
            _c(index, np.int32), _c(weight, np.float32), _c(count, np.int32), _c(inv_scale, np.float32), int(start),
            int(stop))

    def matched_marks(self, x, inv_noise, z_min, half, index, weight, count, kernel, at, shift, inv_pool,
                      pool_min, inv_scale, threshold, start, stop, silence):
        return self.module.matched_marks(
            _c(x, np.float32), _c(inv_noise, np.float32), float(z_min), int(half), _c(index, np.int32),
            _c(weight, np.float32), _c(count, np.int32), _c(kernel, np.float32), int(at), int(shift),
            _c(inv_pool, np.float32), float(pool_min), _c(inv_scale, np.float32), float(threshold), int(start),
            int(stop), int(silence))

    def pooled_rows(self, x, inv_noise, index, weight, count, step, out):
        self.module.pooled_rows(_c(x, np.float32), _c(inv_noise, np.float32), _c(index, np.int32),
                                _c(weight, np.float32), _c(count, np.int32), int(step), _out(out, np.float32, 2))

    def peel(
        self,
        x,
        times,
        channels,
        templates,
        support,
        n_support,
        noise_var,
        first,
        cand,
        before,
        shift,
        a_min,
        a_max,
        fit_before,
        fit_after,
        fit_channels,
        min_share,
        prior_min_share,
        prior_start,
        prior_template,
        prior_amplitude,
        placed_start,
        placed_template,
        placed_amplitude,
    ):
        self.module.peel(
            _out(x, np.float32, 2),
            _c(times, np.int64),
            _c(channels, np.int32),
            _c(templates, np.float32),
            _c(support, np.int32),
            _c(n_support, np.int32),
            _c(noise_var, np.float32),
            _c(first, np.int64),
            _c(cand, np.int64),
            int(before),
            int(shift),
            float(a_min),
            float(a_max),
            int(fit_before),
            int(fit_after),
            int(fit_channels),
            float(min_share),
            float(prior_min_share),
            _out(prior_start, np.int64, 1),
            _out(prior_template, np.int32, 1),
            _out(prior_amplitude, np.float32, 1),
            _out(placed_start, np.int64, 1),
            _out(placed_template, np.int32, 1),
            _out(placed_amplitude, np.float32, 1),
        )

    def subtracted_at(self, t, c, starts, which, amplitudes, templates, support, n_support):
        return self.module.subtracted_at(
            _c(t, np.int64),
            _c(c, np.int32),
            _c(starts, np.int64),
            _c(which, np.int32),
            _c(amplitudes, np.float32),
            _c(templates, np.float32),
            _c(support, np.int32),
            _c(n_support, np.int32),
        )

    def gather_snippets(self, bits, times, channels, support, n_support, before, out):
        self.module.gather_snippets(
            _c(bits, np.uint32),
            _c(times, np.int64),
            _c(channels, np.int32),
            _c(support, np.int32),
            _c(n_support, np.int32),
            int(before),
            _out(out, np.uint16, 3),
        )


def compiled() -> _Compiled | None:
    """The compiled kernels for the current sources, or None when not built (or stale)."""
    try:
        return _Compiled(importlib.import_module(f"{__package__}.{module_name()}"))
    except ImportError:
        return None


def load():
    """The kernels the detection core runs: compiled ahead of time when available.
    NEUROCYTE_KERNELS=jit: numba's JIT always; =aot: the compiled ones or an error (the bench:
    a measurement must not fall back silently)."""
    choice = os.environ.get("NEUROCYTE_KERNELS", "").lower()
    if choice != "jit":
        fast = compiled()
        if fast is not None:
            return fast
        if choice == "aot":
            raise RuntimeError(
                f"NEUROCYTE_KERNELS=aot, but {module_name()} is not built for the current sources: run `make setup`"
            )
    from neurocyte_shared.science.kernels import jit

    return jit


# --- Building (`make setup`): numba's AOT compiler, at build time only -----------------------


def build(output_dir: Path = _HERE) -> Path:
    """Compile every kernel into output_dir/<module_name()>.so, for this machine's CPU, with
    the GIL released during each call (as the JIT kernels' nogil) so `--jobs N` threads run in
    parallel. Removes modules built from older sources."""
    import numba.pycc.compiler as pycc_compiler
    from numba.core import codegen
    from numba.pycc import CC

    from neurocyte_shared.science.kernels import jit

    class _ReleasingGil(pycc_compiler.Flags):  # pycc has no option for it; its Flags are built here
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.release_gil = True

    name = module_name()
    cc = CC(name)
    cc.output_dir = str(output_dir)
    cc.target_cpu = "host"  # a local build, for this machine: AVX2 where it has it
    cc.verbose = False
    for exported, (kernel, signature) in _EXPORTS.items():
        # A thin Python function calling the JIT kernel: the kernel keeps its own compile
        # options (fastmath, inlining), which pycc would not apply to an exported function.
        params = ", ".join(f"a{i}" for i in range(getattr(jit, kernel).py_func.__code__.co_argcount))
        namespace = {"kernel": getattr(jit, kernel)}
        exec(f"def {exported}({params}):\n    return kernel({params})\n", namespace)
        cc.export(exported, signature)(namespace[exported])
    # pycc gives LLVM the host's CPU model but not its feature list, so LLVM assumes every
    # feature of that model: a virtual machine reporting "znver4" without AVX-512 then gets
    # AVX-512 code and dies with SIGILL. Pass the features the CPU does report, as numba's JIT does.
    saved = pycc_compiler.Flags, codegen.AOTCPUCodegen._customize_tm_features
    pycc_compiler.Flags = _ReleasingGil
    codegen.AOTCPUCodegen._customize_tm_features = lambda self: self._get_host_cpu_features()
    try:
        cc.compile()
    finally:
        pycc_compiler.Flags, codegen.AOTCPUCodegen._customize_tm_features = saved
    built = next(output_dir.glob(f"{name}.*"))
    for old in output_dir.glob(f"{_PREFIX}*"):
        if old.name.split(".")[0] != name:
            old.unlink()
    return built


def main() -> int:
    compiler = os.environ.get("CC", "cc")
    if shutil.which(compiler) is None:
        print(
            f"kernels not compiled ahead of time: no C compiler ({compiler}) on PATH; neurocyte uses numba's "
            "JIT kernels (same results, ~0.8 s more start-up per command)"
        )
        return 0
    if compiled() is not None:
        print(f"kernels already compiled ahead of time: {module_name()}")
        return 0
    print("compiling the detection kernels ahead of time (about a minute, once) ...", flush=True)
    t0 = time.perf_counter()
    try:
        path = build()
    except Exception as e:  # an accelerator: its failure must not stop the set-up
        print(
            f"kernels not compiled ahead of time ({type(e).__name__}: {str(e)[-500:]}); neurocyte uses "
            "numba's JIT kernels (same results, ~0.8 s more start-up per command)"
        )
        return 0
    print(f"compiled in {time.perf_counter() - t0:.0f} s: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
