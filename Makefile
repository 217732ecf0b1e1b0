# Flourish: two commands from a fresh clone. Each creates the virtual environment if missing.
#   make demo   simulate a field study, ingest it, score it, show what landed and what was quarantined
#   make test   run the whole test suite (what CI runs)
SHELL := /bin/bash
PYTHON ?= python3
UV := .tools/bin/uv
export UV_COMPILE_BYTECODE := 1
export OMP_NUM_THREADS := 1
export OPENBLAS_NUM_THREADS := 1
export MKL_NUM_THREADS := 1

.PHONY: demo test venv bench clean

# uv lives in its own folder (.tools/) so that syncing the project environment never removes it.
$(UV):
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --target .tools "uv>=0.5,<1"

.venv/.synced: pyproject.toml uv.lock $(UV)
	PYTHONPATH=.tools $(UV) sync --frozen --python $(PYTHON)
	@touch .venv/.synced

venv: .venv/.synced

demo: venv
	.venv/bin/flourish demo --out demo-out

test: venv
	.venv/bin/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: venv
	.venv/bin/python benchmarks/ingest.py

clean:
	rm -rf demo-out .pytest_cache
