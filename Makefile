# `make demo` and `make test` are each self-sufficient on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Keep freed activation buffers in the process: glibc otherwise returns them to the OS after
# every layer, which makes large torch batches on CPU ~2.5x slower (see docs/performance.md).
export GLIBC_TUNABLES ?= glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=4294967296
export PYTHONHASHSEED := 0

.PHONY: install demo test lint typecheck pytest bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml constraints.txt examples/innersight-example-plugin/pyproject.toml
	$(PY) -m pip install --quiet -c constraints.txt -e ".[all,dev,ray]"
	$(PY) -m pip install --quiet -c constraints.txt -e examples/innersight-example-plugin
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m innersight demo -o out

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests examples benchmarks
	$(VENV)/bin/ruff format --check src tests examples benchmarks

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP)
	$(PY) -m pytest -q

test: lint typecheck pytest

# Captum (a dev dependency: the peer library tests and benchmarks compare with).
bench: $(STAMP)
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache
