# invsync: make demo | make test. Only Python 3.11+ and make are needed; the venv is built here.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
FILE   ?=
LOCATION ?=
DRY_RUN ?=
CONFIG ?=
PROFILE ?=
RUN ?=
# --config/--profile for the runbook targets (INVSYNC_CONFIG / INVSYNC_PROFILE work too)
CFG = $(if $(CONFIG),--config "$(CONFIG)") $(if $(PROFILE),--profile "$(PROFILE)")
# The runbook targets run this invsync. Given (an installed one, e.g.
# INVSYNC=/opt/invsync/bin/invsync), nothing is installed; else the checkout's venv is made.
INVSYNC ?=
RUNBOOK_DEPS = $(if $(INVSYNC),,install)
INVSYNC_BIN = $(or $(INVSYNC),$(BIN)/invsync)

.DEFAULT_GOAL := help
.PHONY: help install test test-fast soak lint mutate demo serve screenshots bench sync plan runs show resume revert drift verify doctor clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

install: $(STAMP) ## Create .venv and install invsync with its dev tools (idempotent)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "invsync needs Python 3.11+ (found: $$($(PYTHON) --version))"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# Two workers a core: most tests wait on a child process or a socket, not on the CPU.
WORKERS ?= $(shell $(PYTHON) -c 'import os; print(2 * (os.cpu_count() or 1))')
FAST = not integration and not browser and not package

test: install ## Every test, in parallel (WORKERS=2 a core; property tests derandomized)
	$(BIN)/python -m pytest -n $(WORKERS) -p no:cacheprovider --durations=25

test-fast: install ## The in-process tests only (no sandbox, CLI, browser or wheel): under a minute
	INVSYNC_TIER=fast $(BIN)/python -m pytest -n $(WORKERS) -p no:cacheprovider -q -m "$(FAST)"

soak: install ## Explore: property tests with a random seed and 10x the examples, long stateful runs [EXAMPLES= STEPS=]
	INVSYNC_HYPOTHESIS=soak $(BIN)/python -m pytest -n $(WORKERS) -q --timeout 7200 \
		--ignore tests/test_stateful.py \
		-m property tests
	INVSYNC_HYPOTHESIS=soak INVSYNC_STATEFUL_EXAMPLES=$(or $(EXAMPLES),60) \
		INVSYNC_STATEFUL_STEPS=$(or $(STEPS),25) \
		$(BIN)/python -m pytest tests/test_stateful.py -q --timeout 7200

lint: install ## ruff, mypy and the import contracts (the layers)
	$(BIN)/ruff check pipeline schemas tests sample_data bench tools
	$(BIN)/mypy
	PYTHONPATH=pipeline $(BIN)/lint-imports

# mutmut runs from pipeline/ (the source root: it names modules invsync.*), one module
# against its unit tests; tools/mutate.py says why and rewrites docs/development.md's table.
mutate: install ## Mutation testing of the core modules, one at a time (slow) [MODULES="run/brakes ..."]
	$(BIN)/python tools/mutate.py $(MODULES)

demo: install ## Start the sandbox store, sync sample_data/ three times, show the reports
	$(BIN)/python -m invsync.sandbox.demo

serve: install ## The merchant upload page against the sandbox, with a demo user (printed) [PORT=8000]
	$(BIN)/python -m invsync.sandbox.serve_demo

screenshots: install ## Redo docs/screenshots/ (the README's) from the browser end-to-end test
	INVSYNC_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest -q tests/test_web_browser.py -k 'confirm_result_history or lock or encoding_and_header_row'

bench: install ## Benchmarks: speed, memory, quota use (writes bench/results.json)
	$(BIN)/python bench/run.py

sync: $(RUNBOOK_DEPS) ## Runbook: make sync FILE=stock.csv [LOCATION=1] [DRY_RUN=1] [CONFIG=f.toml] [PROFILE=p] [INVSYNC=path]
	@test -n "$(FILE)" || { echo "usage: make sync FILE=path [LOCATION=id] [DRY_RUN=1] [CONFIG=file] [PROFILE=name]"; exit 64; }
	$(INVSYNC_BIN) sync "$(FILE)" $(CFG) $(if $(LOCATION),--location-id $(LOCATION)) $(if $(DRY_RUN),--dry-run)

plan: $(RUNBOOK_DEPS) ## Runbook: make plan FILE=stock.csv [LOCATION=1] [CONFIG=f.toml] [PROFILE=p] [INVSYNC=path]
	@test -n "$(FILE)" || { echo "usage: make plan FILE=path [LOCATION=id] [CONFIG=file] [PROFILE=name]"; exit 64; }
	$(INVSYNC_BIN) plan "$(FILE)" $(CFG) $(if $(LOCATION),--location-id $(LOCATION))

runs: $(RUNBOOK_DEPS) ## Runbook: make runs [CONFIG=f.toml] [PROFILE=p] [INVSYNC=path]
	$(INVSYNC_BIN) runs $(CFG)

show: $(RUNBOOK_DEPS) ## Runbook: make show [RUN=last] [CONFIG=f.toml] [PROFILE=p] [INVSYNC=path]
	$(INVSYNC_BIN) show "$(or $(RUN),last)" $(CFG)

resume: $(RUNBOOK_DEPS) ## Runbook: finish an interrupted run: make resume [CONFIG=f.toml] [PROFILE=p] [INVSYNC=path]
	$(INVSYNC_BIN) resume $(CFG)

revert: $(RUNBOOK_DEPS) ## Runbook: make revert RUN=id|last [DRY_RUN=1] [CONFIG=f.toml] [PROFILE=p] [INVSYNC=path]
	@test -n "$(RUN)" || { echo "usage: make revert RUN=id|last [DRY_RUN=1] [CONFIG=file] [PROFILE=name]"; exit 64; }
	$(INVSYNC_BIN) revert "$(RUN)" $(CFG) $(if $(DRY_RUN),--dry-run)

drift: $(RUNBOOK_DEPS) ## Runbook: make drift [FILE=stock.csv] [CONFIG=f.toml] [PROFILE=p] [INVSYNC=path]
	$(INVSYNC_BIN) drift $(if $(FILE),"$(FILE)") $(CFG)

verify: $(RUNBOOK_DEPS) ## Runbook: make verify [RUN=last] [CONFIG=f.toml] [PROFILE=p] [INVSYNC=path]
	$(INVSYNC_BIN) verify "$(or $(RUN),last)" $(CFG)

doctor: $(RUNBOOK_DEPS) ## Runbook: check a setup before the first night [CONFIG=f.toml] [PROFILE=p] [INVSYNC=path]
	$(INVSYNC_BIN) doctor $(CFG)

clean: ## Remove the venv, caches and demo output
	rm -rf $(VENV) .lint .mutate .mutate-*.log .mutate-scores.json pipeline/mutants pipeline/setup.cfg .pytest_cache .mypy_cache .ruff_cache .import_linter_cache .hypothesis .demo .demo-serve *.egg-info
