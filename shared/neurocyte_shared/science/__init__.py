"""The science, pure and testable without AWS: the spike table (`table.py`), detection
(`detection/`) and its kernels (`kernels/`), metrics, the report, publishing a result
(`results.py`) and the synthetic recordings of the demo and tests."""
