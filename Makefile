# Each target creates .venv when missing, so these work as pasted on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: cluster demo test test-lowest test-redis-py bench bench-redis bench-cluster bench-consistency bench-chaos bench-stampede bench-all lint docs docs-build clean

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

# A local Redis Cluster (3 primaries, 3 replicas, on free ports) to try the store on; Ctrl-C stops it.
cluster: $(VENV)/.installed-dev
	$(BIN)/python -m tests.redis_server

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest

# The suite on the oldest Python (3.10, when installed) with the lowest dependency versions
# pyproject.toml allows, in a venv of its own made afresh: floors that stopped working fail here.
LOWEST_PYTHON ?= $(or $(shell for p in python3.10 $$HOME/.pyenv/versions/3.10*/bin/python3.10; do \
	$$p -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null && { echo $$p; break; }; done),$(PYTHON))
test-lowest: | $(BIN)/python
	rm -rf .venv-lowest
	$(LOWEST_PYTHON) -m venv .venv-lowest
	.venv-lowest/bin/python -m pip install --quiet --upgrade pip
	.venv-lowest/bin/python -m pip install --quiet -e '.[dev]' $$($(BIN)/python .ci/lowest.py)
	.venv-lowest/bin/python -c 'import sys; print("test-lowest: Python", sys.version.split()[0])'
	.venv-lowest/bin/python -m pip list --format=freeze | grep -iE '^(wrapt|cachetools|redis|msgpack)=='
	.venv-lowest/bin/python -m pytest

# The suite on the newest redis-py of majors 6 and 7, each in a venv of its own (5.0.8, the floor,
# runs in test-lowest; the newest, 8.x, in test), and on the protocol each does not default to:
# RESP3 on 7.x (whose default is RESP2) and RESP2 on 8.x (whose default is RESP3).
REDIS_PY ?= 6.4.0 7.4.1
test-redis-py: $(VENV)/.installed-dev
	@set -e; for v in $(REDIS_PY); do \
	  if [ ! -x .venv-redis-$$v/bin/python ]; then \
	    $(PYTHON) -m venv .venv-redis-$$v; \
	    .venv-redis-$$v/bin/python -m pip install --quiet -e '.[dev]' "redis==$$v"; \
	  fi; \
	  echo "test-redis-py: redis-py $$(.venv-redis-$$v/bin/python -c 'import redis; print(redis.__version__)')"; \
	  .venv-redis-$$v/bin/python -m pytest -q -p no:cacheprovider; \
	done
	@echo "test-redis-py: redis-py 7.4.1 with RESP3 clients"
	CACHEASIDE_TEST_PROTOCOL=3 .venv-redis-7.4.1/bin/python -m pytest -q -p no:cacheprovider
	@echo "test-redis-py: redis-py $$($(BIN)/python -c 'import redis; print(redis.__version__)') with RESP2 clients"
	CACHEASIDE_TEST_PROTOCOL=2 $(BIN)/python -m pytest -q -p no:cacheprovider

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@ $(VENV)/.installed $(VENV)/.installed-dev

bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/bench_memory.py

bench-redis: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/bench_redis.py

bench-cluster: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/bench_cluster.py

bench-consistency: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/bench_consistency.py

bench-chaos: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/bench_consistency.py --chaos

bench-all: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/bench_all.py $(ARGS)

bench-stampede: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/bench_stampede.py --write $(ARGS)

# The documentation site (mkdocs.yml): docs serves it on http://127.0.0.1:8000 with live reload,
# docs-build builds it into site/ with every warning an error, as CI does.
$(VENV)/.installed-docs: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[docs]'
	touch $@ $(VENV)/.installed

docs: $(VENV)/.installed-docs
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs serve $(ARGS)

docs-build: $(VENV)/.installed-docs
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict $(ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/python -m ruff check cacheaside tests benchmarks examples
	$(BIN)/python -m mypy --strict cacheaside

clean:
	rm -rf $(VENV) .venv-lowest .venv-redis-* .pytest_cache .mypy_cache .ruff_cache .hypothesis
