# Two commands on a fresh Debian 12 machine: `make run` and `make test`.
# Each does all of its own set-up (Debian packages, a virtual environment built
# from the lock in requirements/).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
ENV_INPUTS := pyproject.toml requirements/build.txt requirements/dev.txt \
	tools/make-venv tools/ensure-debian-deps
DEMO := .demo

.PHONY: run test test-latest test-debian lint typecheck unit docs lock bench bench-memory \
	bench-pacing soak clean deb \
	package-tools

$(STAMP): $(ENV_INPUTS)
	PYTHON=$(PYTHON) tools/make-venv locked $(VENV)

## run: the supervisor on the native backend with a demo fleet (hub + 3 bots); Ctrl-C stops it
run: $(STAMP)
	mkdir -p $(DEMO)
	$(BIN)/kissbot-supervisor --workdir $(DEMO) --config $(CURDIR)/docs/examples/demo.yaml

# Linters, format and type checks, then the whole suite, with the tools of venv $(1).
define all_checks
	$(1)/bin/ruff check .
	$(1)/bin/ruff format --check .
	$(1)/bin/mypy
	$(1)/bin/pytest
endef

# Debian's packaging tools and nspawn: `make deb`, and the suite's end-to-end tests
# of the package on a fresh Debian 12 (tests/debian/).
package-tools:
	tools/ensure-debian-deps package

## deb: dist/kissbot-supervisor_VERSION_all.deb, built with debhelper and checked by lintian
deb: package-tools
	tools/build-deb
	lintian --fail-on error,warning dist/kissbot-supervisor_*_all.deb

## test: linters, format and type checks, and the whole test suite, in the locked environment
test: $(STAMP) package-tools
	$(call all_checks,$(VENV))

## test-latest: the same with the newest release of everything (may fail: see README)
test-latest:
	PYTHON=$(PYTHON) tools/make-venv latest .venv-latest
	$(call all_checks,.venv-latest)

## test-debian: the test suite on Debian 12's own python3-* packages (what the .deb runs on)
test-debian: .venv-debian/.installed-stamp package-tools
	.venv-debian/bin/pytest

.venv-debian/.installed-stamp: pyproject.toml requirements/debian-tools.txt \
		tools/make-venv tools/ensure-debian-deps
	tools/make-venv debian .venv-debian

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests/unit

## lock: regenerate requirements/*.txt from pyproject.toml and requirements/*.in
lock:
	PYTHON=$(PYTHON) tools/lock

## docs: regenerate docs/configuration.md from the setting declarations
docs: $(STAMP)
	$(BIN)/python -m kissbot_supervisor.config.docgen > docs/configuration.md

## soak: random faults for an hour on a native fleet, then on a systemd one
## (KISSBOT_SOAK_SECONDS shortens it, KISSBOT_SOAK_SEED replays a run), a 2-minute Twitch
## outage that must heal by itself (KISSBOT_OUTAGE_SECONDS), then 1,000 native
## bots (KISSBOT_SCALE_BOTS; figures in docs/scale.md) and 500 units (KISSBOT_SCALE_UNITS);
## not part of `make test`
soak: $(STAMP)
	$(BIN)/pytest -m soak -s tests/faults/test_soak.py tests/systemd_sandbox/test_soak_systemd.py \
		tests/process/test_outage.py
	KISSBOT_SCALE_REPORT=docs/scale.md $(BIN)/pytest -m scale -s tests/faults/test_scale.py
	KISSBOT_SCALE_REPORT=docs/scale.md $(BIN)/pytest -m scale -s \
		tests/systemd_sandbox/test_soak_systemd.py

## bench: the benchmarks (figures go to docs/benchmarks.md and docs/fleet-memory.md)
bench: $(STAMP)
	$(BIN)/python tests/bench/run.py
	$(BIN)/python tests/bench/fleet_memory.py

## bench-memory: the fleet's memory with bot.preload off and on (docs/fleet-memory.md)
bench-memory: $(STAMP)
	$(BIN)/python tests/bench/fleet_memory.py

## bench-pacing: start time of 30/100/300 bots, login pacing on and off (docs/scale.md)
bench-pacing: $(STAMP)
	$(BIN)/python tests/bench/pacing.py

clean:
	rm -rf $(VENV) .venv-latest .venv-debian .venv-lock $(DEMO) build *.egg-info
