# Entry points: make install | test | lint | check | demo | bench
PYTHON ?= $(shell scripts/find-python)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install test lint check demo bench soak clean

$(BIN)/ingestor: pyproject.toml
	@test -n "$(PYTHON)" || { echo "no Python >= 3.12 found"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(BIN)/ingestor

LINTED := ingestor indicators tests bench scripts

# Everything, on a clone alone (../shared is optional).
test: install
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: install
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy

# What CI runs (.ci/run): the linters, then every test with coverage of ingestor/ and
# indicators/ (child processes included; the floor is [tool.coverage.report] fail_under).
check: lint
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=15 --cov --cov-report=term

demo: install
	$(BIN)/python scripts/demo.py

bench: install
	$(BIN)/python -m bench

# Not in CI: N minutes (SOAK_MINUTES, default 10) of random faults, then an audit.
soak: install
	$(BIN)/python scripts/soak.py

clean:
	rm -rf $(VENV) bench/results.json
