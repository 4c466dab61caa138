# Each target creates .venv when missing, so these work as pasted on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench bench-redis bench-consistency bench-chaos lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/cacheaside demo $(ARGS)

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest

bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/bench_memory.py

bench-redis: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/bench_redis.py

bench-consistency: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/bench_consistency.py

bench-chaos: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/bench_consistency.py --chaos

lint: $(VENV)/.installed-dev
	$(BIN)/python -m ruff check cacheaside tests benchmarks
	$(BIN)/python -m mypy --strict cacheaside

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
