# trustplane — `make run` shows the gate working, `make test` runs every test.
# Both start from a fresh clone: they create .venv, install, and fetch Kafka with Maven.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
STATE  := .state
TP     := $(BIN)/trustplane

.DEFAULT_GOAL := help
.PHONY: help install run stop worker test test-unit bench lint format typecheck clean

help: ## Show the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@command -v java >/dev/null || { echo "java (17+) is missing: apt-get install openjdk-17-jre-headless"; exit 1; }
	@command -v mvn >/dev/null || { echo "maven is missing: apt-get install maven"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*; touch $@

install: $(STAMP) ## Create .venv and install trustplane with its dev tools

run: install ## Start Kafka and a gate worker, publish a demo stream, print a summary (both stay up; `make stop`)
	$(TP) kafka up
	$(TP) keys init
	@mkdir -p $(STATE)
	@# each service is its own Kafka user (streams/acls.py): worker=gate, sink=sink, notary=notary
	@for pair in worker:gate sink:sink notary:notary; do \
		svc=$${pair%%:*}; role=$${pair##*:}; \
		if [ -f $(STATE)/$$svc.pid ] && kill -0 $$(cat $(STATE)/$$svc.pid) 2>/dev/null; then \
			echo "$$svc already running (pid $$(cat $(STATE)/$$svc.pid))"; \
		else \
			TRUSTPLANE_KAFKA_PRINCIPAL=$$role nohup $(TP) $$svc > $(STATE)/$$svc.log 2>&1 & echo $$! > $(STATE)/$$svc.pid; \
			echo "$$svc started as Kafka user $$role (pid $$(cat $(STATE)/$$svc.pid), log $(STATE)/$$svc.log)"; \
		fi; \
	done
	@# the operator's CLI (the default principal) registers the demo agents; they publish as `agent`
	$(TP) demo --agents
	@sleep 2
	@echo; echo "Lineage in ClickHouse (embedded chDB), by SQL:"
	$(TP) sql "SELECT stage, status, count() AS events FROM lineage_events GROUP BY stage, status ORDER BY stage, status"
	@echo
	@echo "Left running: Kafka (SASL/SCRAM + ACLs; passwords in $(STATE)/kafka/credentials), the gate worker (http://127.0.0.1:6066/metrics, /healthz), the lineage sink (SQL on 127.0.0.1:6068) and the notary (proofs on 127.0.0.1:6067)."
	@echo "Try: $(TP) tail denied --from-beginning --idle 2    Stop everything: make stop"

stop: ## Stop the gate worker, the sink and Kafka
	@for svc in worker sink notary; do \
		if [ -f $(STATE)/$$svc.pid ]; then kill $$(cat $(STATE)/$$svc.pid) 2>/dev/null || true; rm -f $(STATE)/$$svc.pid; echo "$$svc stopped"; fi; \
	done
	@if [ -x $(TP) ]; then $(TP) kafka down; fi

test: install ## Run the whole test suite (starts its own Kafka broker)
	$(BIN)/pytest

test-unit: install ## Only the fast tests that need no broker
	$(BIN)/pytest -m "not broker"

bench: install ## Benchmark the gate end to end (`make bench ARGS=--quick` for the smoke)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench.e2e $(ARGS)

lint: install ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install ## Format the code
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: install ## mypy (strict on processors/ and sinks/)
	$(BIN)/mypy

clean: stop ## Stop everything and delete .state (broker data) and .venv
	rm -rf $(STATE) $(VENV)
