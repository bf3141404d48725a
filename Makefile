# Entry points: make install | test | lint | demo | bench
PYTHON ?= $(shell scripts/find-python)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install test lint demo bench soak clean dashboard rules

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
	$(BIN)/ruff check ingestor indicators tests bench
	$(BIN)/mypy

demo: install
	$(BIN)/python scripts/demo.py

# deploy/grafana/ingestor.json from scripts/dashboard.py (grafana-foundation-sdk).
dashboard: install
	$(BIN)/python scripts/dashboard.py

# deploy/prometheus/ingestor-rules.yaml and deploy/k8s/monitoring/prometheusrule.yaml.
rules: install
	$(BIN)/python scripts/rules.py

bench: install
	$(BIN)/python -m bench

# Not in CI: N minutes (SOAK_MINUTES, default 10) of random faults, then an audit.
soak: install
	$(BIN)/python scripts/soak.py

clean:
	rm -rf $(VENV) bench/results.json
