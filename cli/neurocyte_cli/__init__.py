"""The neurocyte command."""


def run() -> None:
    """The `neurocyte` command. The garbage collector is off while the command's modules load:
    importing numpy, pydantic, click and rich makes some 100 K objects, and the collector walked
    the young ones about 90 times, a tenth of the start-up every command pays. They
    live as long as the process, so they are then frozen out of its collections for good."""
    import gc
    import os

    # One thread per --jobs: numpy's BLAS would start a thread per core for the templates'
    # k-means, and those threads spin against the detection threads. Set before numpy loads,
    # by the command only (not on import); a user's own setting wins.
    for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    gc.disable()
    try:
        from .main import cli
    finally:
        gc.freeze()
        gc.enable()
    cli()
