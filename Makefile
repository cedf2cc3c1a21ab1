# Two commands for a fresh machine:  make demo  (a recording in, an email out)  and  make test.
# Everything installs into the repository: .tools/ (uv), .venv/ (Neurocyte, Python 3.11+),
# .localstack-venv/ (LocalStack, Python 3.13, pinned in deploy/localstack/requirements-host.txt).

PYTHON ?= python3
UV := .tools/bin/uv
UV_VERSION := 0.13.9

.PHONY: demo test setup localstack lint clean bench bench-pipeline bench-compression

demo: setup
	.venv/bin/neurocyte demo

test: setup localstack .nwb-venv/.synced
	.venv/bin/python -m pytest

setup: .venv/.synced .venv/.kernels .venv/.bytecode

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install -q uv==$(UV_VERSION)

.venv/.synced: $(UV) uv.lock pyproject.toml shared/pyproject.toml cli/pyproject.toml services/*/pyproject.toml
	$(UV) sync --all-packages --frozen --compile-bytecode --python $(PYTHON)
	touch $@

# The detection kernels compiled ahead of time (about a minute, once per change of kernels.py):
# `neurocyte detect` then starts without numba (0.8 s sooner). Needs a C compiler; without
# one the build says so and neurocyte uses numba's JIT kernels (same results).
.venv/.kernels: .venv/.synced $(wildcard shared/neurocyte_shared/science/kernels/*.py)
	.venv/bin/python -m neurocyte_shared.science.kernels.aot
	touch $@

# The project's own modules compiled to bytecode, as uv compiles the dependencies': where
# PYTHONDONTWRITEBYTECODE is set (CI machines, many images) Python would otherwise compile them
# from source on every command, 13 ms of `neurocyte detect`'s start-up. A stale file is not used:
# Python checks each against its source.
.venv/.bytecode: .venv/.synced $(shell find shared cli services -name '*.py')
	.venv/bin/python -m compileall -q shared cli services
	touch $@

# pynwb, which the tests use to write NWB files, in its own environment (see the file).
.nwb-venv/.synced: tests/requirements-nwb.txt $(UV)
	$(UV) venv -q --allow-existing --python $(PYTHON) .nwb-venv
	$(UV) pip install -q --python .nwb-venv/bin/python --compile-bytecode -r tests/requirements-nwb.txt
	touch $@

localstack: setup
	.venv/bin/python -c "from neurocyte_cli.local import ensure_localstack_installed as e; e()"

# Detection against SpikeInterface on ground truth, then summary speed (a benchmark, not a
# test; ~15 minutes).
# SpikeInterface lives in its own environment: it pins zarr<3.
bench: setup .bench-venv/.synced
	.venv/bin/python benchmarks/bench.py
	.venv/bin/python benchmarks/jobs_scaling.py
	.venv/bin/python benchmarks/overlap_bound.py
	.venv/bin/python benchmarks/metrics_bench.py

# The size labs record (1024 channels x 5 min, 12.3 GB, generated once) through the local stack
# against `neurocyte detect --jobs 2` on the same file, in one run: `QUICK=1` for 64 s (2.6 GB).
bench-compression: setup .codec-venv/.synced
	.venv/bin/python benchmarks/compression.py

.codec-venv/.synced: benchmarks/requirements-codecs.txt $(UV)
	$(UV) venv -q --allow-existing --python $(PYTHON) .codec-venv
	$(UV) pip install -q --python .codec-venv/bin/python -r benchmarks/requirements-codecs.txt
	touch $@

bench-pipeline: setup localstack
	.venv/bin/python benchmarks/pipeline.py $(if $(QUICK),--quick,)

.bench-venv/.synced: benchmarks/requirements-spikeinterface.txt $(UV)
	$(UV) venv -q --allow-existing --python $(PYTHON) .bench-venv
	$(UV) pip install -q --python .bench-venv/bin/python --compile-bytecode -r benchmarks/requirements-spikeinterface.txt
	touch $@

# ruff (rules and line length in pyproject.toml) and the CloudFormation template.
lint: setup
	.venv/bin/ruff check shared services cli tests benchmarks
	.venv/bin/cfn-lint deploy/template.yaml

clean:
	-.venv/bin/neurocyte down
	rm -rf .venv .tools .localstack-venv .bench-venv .codec-venv .nwb-venv shared/neurocyte_shared/science/kernels/_kernels_* $(shell find shared cli services -name __pycache__ -type d)
