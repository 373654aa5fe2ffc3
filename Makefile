# The two commands: `make experiment` (set up + start NNI) and `make test` (set up + lint + run tests).
# `make experiment CONFIG=configs/remote.yml` starts another of the configs.
# The web UI / REST API listens on 127.0.0.1 only; `make experiment BIND=all` (or
# BIND=<address>, or SEGMODEL_BIND in the environment) opens it: docs/security.md.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8080
CONFIG ?= config.yml
BIND ?= $(SEGMODEL_BIND)
# The pinned, tested set (Python 3.11); `make setup LOCK=` resolves from pyproject's ranges instead.
LOCK ?= requirements.lock
CONSTRAINTS := $(if $(LOCK),-c $(LOCK))

.PHONY: setup experiment confirm stop lint test test-no-bf16 bench lock clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (set PYTHON=...)"; exit 2; }
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml setup.py segmodel/experiment/loopback_hook.py $(LOCK) | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(CONSTRAINTS) -e '.[test]'
	touch $@

setup: $(VENV)/.installed

experiment: setup
	@SEGMODEL_BIND="$(BIND)" $(BIN)/python -m segmodel.experiment.loopback_hook
	PATH="$(CURDIR)/$(BIN):$$PATH" SEGMODEL_BIND="$(BIND)" $(BIN)/nnictl create --config $(CONFIG) --port $(PORT)
	@$(BIN)/python -m segmodel.experiment.listening $(PORT) $(CONFIG)
	@echo "Stop it with: make stop"

# The search's top trials on seeds, as a new experiment on the search's training service:
# make confirm EXP=<id> [ARGS="--top 3 --seeds 3 --reference dense -- --epochs 12"] [CONFIRM_PORT=8081]
CONFIRM_PORT ?= 8081
confirm: setup
	@test -n "$(EXP)" || { echo "error: make confirm EXP=<experiment id or folder>"; exit 2; }
	@SEGMODEL_BIND="$(BIND)" $(BIN)/python -m segmodel.experiment.loopback_hook
	PATH="$(CURDIR)/$(BIN):$$PATH" SEGMODEL_BIND="$(BIND)" $(BIN)/python -m segmodel confirm $(EXP) --port $(CONFIRM_PORT) $(ARGS)
	@-$(BIN)/python -m segmodel.experiment.listening $(CONFIRM_PORT)

stop:
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/nnictl stop --port $(PORT)

lint: setup   # ruff (pyproject's rules) and the import contracts (layers, no cycle)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

test: lint
	$(BIN)/python -m pytest -q --durations=10 tests

test-no-bf16: setup   # the same suite as on a CPU without bf16 (precision auto = float32)
	scripts/without-bf16 $(BIN)/python -m pytest -q --durations=10 tests

bench: setup
	$(BIN)/python -m benchmarks

lock: setup   # re-pin requirements.lock to what the venv resolved from pyproject.toml
	{ sed -n '1,3p' requirements.lock; $(BIN)/python -m pip freeze --exclude-editable; } > requirements.lock.tmp
	mv requirements.lock.tmp requirements.lock

clean:
	rm -rf $(VENV) out runs .pytest_cache
