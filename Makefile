# The few verbs everyone uses. Each target creates the virtual environment it needs.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# bench-esdb's second venv: eventsourcing-eventstoredb 1.1.2 needs eventsourcing 9.3, our dev extra 9.5+
ES_VENV  ?= .venv-es93
ES_STAMP := $(ES_VENV)/.installed

.PHONY: demo test check lint imports typecheck wheel-check format bench bench-full bench-esdb bench-reactors bench-segments clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found; set PYTHON=/path/to/python3.11" >&2; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[esdb,postgres,dev]'
	@touch $(STAMP)

## demo: run the example bank end to end on the embedded SQLite store
demo: $(STAMP)
	$(BIN)/escqrs demo

## test: run the whole test suite (PostgreSQL tests skip when no server is reachable)
test: $(STAMP)
	$(BIN)/python -m pytest

## check: lint, format check, the import rules and strict type check
check: lint imports typecheck

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## imports: the dependency rules between the packages (pyproject.toml, [tool.importlinter])
imports: $(STAMP)
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy eventsourcing_cqrs projections escqrs tests/typing

## wheel-check: build the wheel, install it into a fresh venv (no checkout in sight), run escqrs there
wheel-check: $(STAMP)
	@set -e; dir=$$(mktemp -d); trap 'rm -rf "$$dir"' EXIT; \
	$(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir "$$dir" .; \
	$(PYTHON) -m venv "$$dir/venv"; \
	"$$dir/venv/bin/python" -m pip install --quiet "$$dir"/*.whl; \
	cd "$$dir"; \
	venv/bin/escqrs --help >/dev/null; \
	venv/bin/escqrs demo >demo.out 2>&1 || { cat demo.out; exit 1; }; \
	echo "wheel-check: $$(basename "$$dir"/*.whl) installs, and escqrs --help and escqrs demo run from it"

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## bench: quick side-by-side benchmarks (under two minutes); bench-full: the full sizes
bench: $(STAMP)
	$(BIN)/python benchmarks/compare.py

bench-full: $(STAMP)
	$(BIN)/python benchmarks/compare.py --full

$(ES_STAMP):
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found; set PYTHON=/path/to/python3.11" >&2; exit 2; }
	$(PYTHON) -m venv $(ES_VENV)
	$(ES_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(ES_VENV)/bin/python -m pip install --quiet 'eventsourcing==9.3.*' 'eventsourcing-eventstoredb==1.1.2' 'esdbclient>=1.1,<1.2'
	@touch $(ES_STAMP)

## bench-esdb: ours vs eventsourcing 9.3 + eventsourcing-eventstoredb on the EventStoreDB test server
## (7-10 minutes on a 2-core VM; ESDB_BENCH_ARGS=--quick for a one-minute smoke run)
bench-esdb: $(STAMP) $(ES_STAMP)
	$(BIN)/python benchmarks/esdb_compare.py --es-python $(ES_VENV)/bin/python $(ESDB_BENCH_ARGS)

## bench-reactors: reactor and process-manager throughput beside the projection rebuild, on SQLite
## and the EventStoreDB test server (about two minutes; REACTORS_BENCH_ARGS=--quick for a smoke run)
bench-reactors: $(STAMP)
	$(BIN)/python benchmarks/reactors.py $(REACTORS_BENCH_ARGS)

## bench-segments: a segmented projection (~0.2 ms of CPU per event) rebuilt by 1, 2 and 4 worker
## processes beside the unsegmented runner, on SQLite (about a minute; SEGMENTS_BENCH_ARGS=--postgres
## adds PostgreSQL read models, --quick for a smoke run)
bench-segments: $(STAMP)
	$(BIN)/python benchmarks/segments.py $(SEGMENTS_BENCH_ARGS)

clean:
	rm -rf $(VENV) $(ES_VENV) .mypy_cache .ruff_cache .pytest_cache
