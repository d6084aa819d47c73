# The two commands of the quick start: `make demo` and `make test`.
# Both create .venv on first use and install nurture into it.

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-stamp
DEMO   ?= demo
# The suite runs on every core (pytest-xdist); the browser tests share one
# served site, so they stay together on one worker (tests/browser/conftest.py).
# PYTEST_JOBS= runs it in one process.
PYTEST_JOBS ?= -n auto --dist loadgroup

.PHONY: demo test lint typecheck unit schema clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m nurture.demo --dir $(DEMO)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	@# The tests start nurture as a subprocess hundreds of times: with the
	@# bytecode written once here, none of them compiles nurture's modules
	@# anew (as each would where PYTHONDONTWRITEBYTECODE is set).
	$(BIN)/python -m compileall -q nurture
	$(BIN)/pytest -q $(PYTEST_JOBS)

test: lint typecheck unit

schema: $(STAMP)
	$(BIN)/nurture schema > schemas/sequence.schema.json

clean:
	rm -rf $(VENV) $(DEMO) .mypy_cache .pytest_cache .ruff_cache
