# Entry points: make install | test | lint | demo | bench | soak | stress
PYTHON ?= $(shell scripts/find-python)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install test lint demo bench soak stress clean

$(BIN)/ingestor: pyproject.toml
	@test -n "$(PYTHON)" || { echo "no Python >= 3.12 found"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(BIN)/ingestor

test: install
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: install
	$(BIN)/ruff check ingestor indicators tests bench scripts
	$(BIN)/mypy

demo: install
	$(BIN)/python scripts/demo.py

bench: install
	$(BIN)/python -m bench

# Not in CI: N minutes (SOAK_MINUTES, default 10) of random faults, then an audit.
soak: install
	$(BIN)/python scripts/soak.py

# Not in CI: the whole suite STRESS_ROUNDS times (default 5) with STRESS_BUSY cores spinning
# (default 1); STRESS_MINUTES caps the wall time, STRESS_ARGS passes pytest args (a subset).
stress: install
	$(BIN)/python scripts/stress.py

clean:
	rm -rf $(VENV) bench/results.json
