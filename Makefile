# Entry points: make install | test | lint | check | demo | bench | soak | stress
PYTHON ?= $(shell scripts/find-python)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install test lint check demo bench soak stress clean dashboard rules lock

# Dependencies come from the lock (versions and hashes, checked by pip), never from a resolver at
# install time; the package itself goes in without dependencies. `make lock` regenerates the
# locks from pyproject.toml (tests/test_lock.py fails while they disagree).
$(BIN)/ingestor: pyproject.toml requirements-dev.lock
	@test -n "$(PYTHON)" || { echo "no Python >= 3.12 found"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements-dev.lock
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $@

install: $(BIN)/ingestor

LINTED := ingestor indicators tests bench scripts

# Everything, on a clone alone (../shared is optional). COVERAGE=1 (CI): with coverage of
# ingestor/ and indicators/ (child processes included; the floor is [tool.coverage.report]
# fail_under) and the slowest tests listed.
test: install
	$(BIN)/python -m pytest -q -p no:cacheprovider $(if $(COVERAGE),--durations=15 --cov --cov-report=term)

lint: install
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy

# What CI runs (.ci/run): the linters, then the README's test command with coverage.
check: lint
	$(MAKE) test COVERAGE=1

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

# requirements-dev.lock: everything make install puts in .venv (extras dev + embedded);
# requirements.lock: the production image's runtime set, at the same versions. Python 3.12, Linux
# x86_64. Needs uv (pip install uv).
UV ?= $(shell command -v uv || echo $(BIN)/uv)
LOCK_FLAGS := --generate-hashes --python-version 3.12 --python-platform x86_64-unknown-linux-gnu \
	--custom-compile-command "make lock" --quiet
lock:
	$(UV) pip compile pyproject.toml --extra dev --extra embedded $(LOCK_FLAGS) -o requirements-dev.lock
	$(UV) pip compile pyproject.toml -c requirements-dev.lock $(LOCK_FLAGS) -o requirements.lock

# Not in CI: the whole suite STRESS_ROUNDS times (default 5) with STRESS_BUSY cores spinning
# (default 1); STRESS_MINUTES caps the wall time, STRESS_ARGS passes pytest args (a subset).
stress: install
	$(BIN)/python scripts/stress.py

clean:
	rm -rf $(VENV) bench/results.json
