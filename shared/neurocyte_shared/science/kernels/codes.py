"""The integer codes the kernels take, imported by both the JIT kernels and their compiled
twin (which must not import numba)."""

REF_NONE, REF_MEDIAN, REF_MEAN = 0, 1, 2
SIGN_NEG, SIGN_POS, SIGN_BOTH = 0, 1, 2
