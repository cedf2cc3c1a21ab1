"""The kernels the detection modules call: loaded once, when detection is first imported."""

from neurocyte_shared.science.kernels.aot import load

kernels = load()  # compiled ahead of time when built (`make setup`), else numba's JIT
