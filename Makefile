# The two commands: `make experiment` (set up + start NNI) and `make test` (set up + run tests).
# `make experiment CONFIG=configs/remote.yml` starts another of the configs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8080
CONFIG ?= config.yml
# The pinned, tested set (Python 3.11); `make setup LOCK=` resolves from pyproject's ranges instead.
LOCK ?= requirements.lock
CONSTRAINTS := $(if $(LOCK),-c $(LOCK))

.PHONY: setup experiment stop test test-no-bf16 bench lock clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (set PYTHON=...)"; exit 2; }
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(CONSTRAINTS) -e '.[test]'
	touch $@

setup: $(VENV)/.installed

experiment: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/nnictl create --config $(CONFIG) --port $(PORT)
	@echo "Web UI: http://127.0.0.1:$(PORT)   (stop with: make stop)"

stop:
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/nnictl stop --port $(PORT)

test: setup
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
