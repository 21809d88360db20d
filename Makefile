# Every target sets itself up: a fresh machine needs only Python 3.10+ and make.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
RUN    := $(PY) scripts/pipeline_orchestrator.py
ARGS   ?=

.DEFAULT_GOAL := help
.PHONY: help run test test-unit test-integration lint format generate screenshots db-start db-stop db-status db-url dashboard bi-kit bench bench-large clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.python-ok:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python 3.10 or newer is needed (found " + sys.version.split()[0] + "); set PYTHON=python3.x")'
	$(PYTHON) -m venv $(VENV)
	@touch $@

$(VENV)/.runtime-installed: requirements.txt $(VENV)/.python-ok
	$(PIP) install -r requirements.txt
	@touch $@

$(VENV)/.dev-installed: requirements.txt requirements-dev.txt $(VENV)/.runtime-installed
	$(PIP) install -r requirements-dev.txt
	@touch $@

run: $(VENV)/.runtime-installed ## set up, start the embedded PostgreSQL (unless DATABASE_URL is set) and run the whole pipeline
	$(RUN) run $(ARGS)

test: $(VENV)/.dev-installed ## set up and run the whole test suite with coverage
	$(PY) -m pytest --cov=scripts/dwh --cov-report=term-missing:skip-covered $(ARGS)

test-unit: $(VENV)/.dev-installed ## only the tests that need no database
	$(PY) -m pytest tests/unit $(ARGS)

test-integration: $(VENV)/.dev-installed ## only the database tests (TEST_DATABASE_URL or the embedded server)
	$(PY) -m pytest -m "integration or e2e" $(ARGS)

lint: $(VENV)/.dev-installed ## ruff check and ruff format --check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.dev-installed ## apply ruff format and the safe ruff fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

generate: $(VENV)/.runtime-installed ## write a batch of generated CSV files (ARGS="--next-batch" for the next day)
	$(RUN) generate $(ARGS)

$(VENV)/.bench-installed: requirements-bench.txt $(VENV)/.runtime-installed
	$(PIP) install -r requirements-bench.txt
	@touch $@

screenshots: $(VENV)/.dev-installed ## refresh dashboards/screenshots/ (the browser test, headless Chromium)
	DWH_UPDATE_SCREENSHOTS=1 $(PY) -m pytest tests/e2e/test_dashboard_browser.py --no-cov $(ARGS)

bench: $(VENV)/.bench-installed ## benchmark 100k and 1M order lines against the COPY floor (bench/results, docs/performance.md)
	$(PY) bench/run_benchmark.py --update-docs $(ARGS)

bench-large: $(VENV)/.bench-installed ## the benchmark with 10M order lines as well (several minutes)
	$(PY) bench/run_benchmark.py --large --update-docs $(ARGS)

db-start: $(VENV)/.runtime-installed ## start the embedded PostgreSQL
	$(RUN) db start
db-stop: $(VENV)/.runtime-installed ## stop the embedded PostgreSQL
	$(RUN) db stop
db-status: $(VENV)/.runtime-installed ## is the embedded PostgreSQL running?
	$(RUN) db status
db-url: $(VENV)/.runtime-installed ## print the connection URL (for BI tools)
	@$(RUN) db url

dashboard: $(VENV)/.runtime-installed ## start the Streamlit dashboard (embedded PostgreSQL unless DATABASE_URL is set; PORT=8501)
	$(PY) -m streamlit run dashboards/app.py --server.headless=true --server.address=$(or $(HOST),127.0.0.1) --server.port=$(or $(PORT),8501) --browser.gatherUsageStats=false --client.toolbarMode=minimal

bi-kit: $(VENV)/.runtime-installed ## write the Power BI (.pbids) and Tableau (.tds) connection files into dashboards/
	$(RUN) bi-kit $(ARGS)

clean: ## stop the embedded server and remove the venv and generated data
	-@[ -x $(PY) ] && $(RUN) db stop >/dev/null 2>&1 || true
	rm -rf $(VENV) data/raw data/processed data/postgres logs .pytest_cache .coverage
