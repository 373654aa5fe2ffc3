# The two commands: `make experiment` (set up + start NNI) and `make test` (set up + run tests).
# `make experiment CONFIG=configs/remote.yml` starts another of the configs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8080
CONFIG ?= config.yml

.PHONY: setup experiment stop test bench clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (set PYTHON=...)"; exit 2; }
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

setup: $(VENV)/.installed

experiment: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/nnictl create --config $(CONFIG) --port $(PORT)
	@echo "Web UI: http://127.0.0.1:$(PORT)   (stop with: make stop)"

stop:
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/nnictl stop --port $(PORT)

test: setup
	$(BIN)/python -m pytest -q --durations=10 tests

bench: setup
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) out runs .pytest_cache
