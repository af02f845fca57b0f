# `make demo` and `make test` are each self-sufficient on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The core-only job: innersight with numpy and pluggy only (no framework, no extra), its own venv.
CORE_VENV  := .venv-core
CORE_PY    := $(CORE_VENV)/bin/python
CORE_STAMP := $(CORE_VENV)/.installed
CORE_PINS  := tests/core_only/constraints.txt
# Keep freed activation buffers in the process: glibc otherwise returns them to the OS after
# every layer, which makes large torch batches on CPU ~2.5x slower (see docs/performance.md).
export GLIBC_TUNABLES ?= glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=4294967296
export PYTHONHASHSEED := 0

.PHONY: install demo test lint typecheck pytest test-core bench clean

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

# Built once (about half a minute); `.gitignore` inside keeps git from seeing it. The example
# plugin needs nothing but innersight and numpy, so it is tested here too.
$(CORE_STAMP): pyproject.toml $(CORE_PINS) examples/innersight-example-plugin/pyproject.toml
	$(PYTHON) -m venv $(CORE_VENV)
	echo '*' > $(CORE_VENV)/.gitignore
	$(CORE_PY) -m pip install --quiet --upgrade pip
	$(CORE_PY) -m pip install --quiet -c $(CORE_PINS) numpy pluggy pytest
	$(CORE_PY) -m pip install --quiet --no-deps -e . -e examples/innersight-example-plugin
	touch $(CORE_STAMP)

# The whole suite without any framework: what needs one is skipped with the reason
# (tests/core_only/optional.py), and the rest must pass.
test-core: $(CORE_STAMP)
	INNERSIGHT_CORE_ONLY=1 $(CORE_PY) -m pytest -q -p no:cacheprovider tests

test: lint typecheck pytest test-core

# Captum (a dev dependency: the peer library tests and benchmarks compare with).
bench: $(STAMP)
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) $(CORE_VENV) out .pytest_cache .mypy_cache .ruff_cache
