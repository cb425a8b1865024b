# Two commands on a fresh Debian 12 machine: `make run` and `make test`.
# Each does all of its own set-up (Debian packages, virtual environment).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO := .demo

.PHONY: run test lint typecheck unit docs bench soak clean

$(STAMP): pyproject.toml packaging/ensure-debian-deps
	PYTHON=$(PYTHON) ./packaging/ensure-debian-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## run: the supervisor on the native backend with a demo fleet (hub + 3 bots); Ctrl-C stops it
run: $(STAMP)
	mkdir -p $(DEMO)
	$(BIN)/kissbot-supervisor --workdir $(DEMO) --config $(CURDIR)/docs/examples/demo.yaml

## test: linters, type checks and the whole test suite
test: $(STAMP) lint typecheck
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests/unit

## docs: regenerate docs/configuration.md from the setting declarations
docs: $(STAMP)
	$(BIN)/python -m kissbot_supervisor.docgen > docs/configuration.md

## soak: random faults on a native fleet for an hour (KISSBOT_SOAK_SECONDS shortens it,
## KISSBOT_SOAK_SEED replays a run); not part of `make test`
soak: $(STAMP)
	$(BIN)/pytest -m soak -s tests/faults/test_soak.py

## bench: the benchmarks (figures go to docs/benchmarks.md)
bench: $(STAMP)
	$(BIN)/python tests/bench/run.py

clean:
	rm -rf $(VENV) $(DEMO) build *.egg-info
