"""The neurocyte command."""

import os

# One thread per --jobs: numpy's BLAS would start a thread per core for the templates'
# k-means, and those threads spin against the detection threads (k-means 0.03 -> 0.32 s of a
# minute's detection with the other core busy). Set before numpy loads; a user's own wins.
for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
