# Quanyi: `make run` runs the service with demo data, `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint services install migrate schema demo loadtest loadtest-cluster bench bench-fulfil bench-audience bench-offers bench-simulate bench-goals bench-reports bench-issuance bench-sustained bench-cluster clean console

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ needed"; exit 1; }
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@# The editable build's advice about folders named like the package is about us: quanyi/ is it.
	PYTHONWARNINGS=ignore $(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

services:
	@bash deploy/services.sh

migrate: install services
	$(BIN)/quanyi migrate

## quanyi/stores/schema.sql from every migration, applied to a throwaway database (then dropped).
schema: install services
	$(BIN)/python -m tests.support.schema

demo: migrate
	$(BIN)/quanyi demo

## One command: dependencies, services, schema, demo data, then the API and workers in the foreground.
run: demo
	$(BIN)/quanyi run --demo-vendor-sim

## One command: lint, the layers contract, types, then the whole test suite against real Redis and
## PostgreSQL (and Debian's Prometheus, nginx and systemd-analyze, installed if missing, for the
## monitoring and deploy tests).
test: install services
	@bash deploy/tools.sh prometheus promtool chromium nginx systemd-analyze
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## A short Locust run against a fresh API, then the invariant audit.
loadtest: install services
	$(BIN)/python -m loadtests.run --short

## The same run against a scratch 3-master Redis Cluster of its own (16 shards), audited over
## every shard; the cluster is killed at the end.
loadtest-cluster: install services
	$(BIN)/python -m loadtests.run --short --cluster

## Throughput and latency figures on this machine (installs wrk and redis-benchmark if missing):
## claims, the sustained pipeline (claims with both workers running), then the marketing loop's
## targets (card events and the audience check, offers, audience import, dry run), the report
## summary over 10M grants, a bulk issuance of 1M, each against its baseline or target in the same
## run. Every part runs even when one before it missed a target; the target fails if any did.
bench: install services
	@bash deploy/tools.sh wrk redis-benchmark
	@status=0; \
	$(BIN)/python -m loadtests.bench || status=1; \
	$(BIN)/python -m loadtests.bench_sustained || status=1; \
	$(BIN)/python -m loadtests.bench_goals || status=1; \
	$(BIN)/python -m loadtests.bench_offers || status=1; \
	$(BIN)/python -m loadtests.bench_audience || status=1; \
	$(BIN)/python -m loadtests.bench_simulate || status=1; \
	$(BIN)/python -m loadtests.bench_reports || status=1; \
	$(BIN)/python -m loadtests.bench_issuance || status=1; \
	$(BIN)/python -m loadtests.bench_cluster || status=1; \
	exit $$status

## Claims for 60 s with the ledger and fulfilment workers running, `quanyi run` and `quanyi serve` +
## workers, rights with no vendor and with the simulated vendor: rate, latency, every consumer
## group's lag, the outbox over time, CPU per claim (BENCH_ARGS="--quick --profile" for a short
## run with py-spy profiles).
bench-sustained: install services
	@bash deploy/tools.sh wrk
	$(BIN)/python -m loadtests.bench_sustained $(BENCH_ARGS)

## Claims against one scratch Redis and a scratch 3-master Redis Cluster in the same run (1 and 2
## API processes, 16 campaigns over 16 shards): claims/s, p50/p99, Redis CPU per claim, the ratio.
bench-cluster: install services
	@bash deploy/tools.sh wrk
	$(BIN)/python -m loadtests.bench_cluster $(BENCH_ARGS)

## The report summary over a ledger of 10,000,000 grants (loaded into a scratch database).
bench-reports: install services
	$(BIN)/python -m loadtests.bench_reports

## One bulk issuance of 1,000,000 members, until every grant is in the ledger, fulfilled.
bench-issuance: install services
	$(BIN)/python -m loadtests.bench_issuance

## Card events into one API process, and a claim's audience check against a claim without one.
bench-goals: install services
	$(BIN)/python -m loadtests.bench_goals

## One fulfilment worker against a 50 ms vendor, and claims that wait for their fulfilment.
bench-fulfil: install services
	$(BIN)/python -m loadtests.bench_fulfil

## 1,000,000 customer ids imported into one audience: seconds and Redis bytes per member.
bench-audience: install services
	$(BIN)/python -m loadtests.bench_audience

## A campaign's dry run over a month of 1,000,000 card transactions: seconds and rows/s.
bench-simulate: install services
	$(BIN)/python -m loadtests.bench_simulate

## GET offers latency with 50 live campaigns over HTTP (target p99 <= 10 ms).
bench-offers: install services
	$(BIN)/python -m loadtests.bench_offers

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache .mypy_cache .hypothesis .import_linter_cache build

## The staff console (frontend/) rebuilt into quanyi/web/static/console/, which is committed: `make
## run`, CI and the wheel serve it without node. Needs Node 20.19+ and the npm registry.
console:
	cd frontend && npm ci --no-audit --no-fund && npm run build
