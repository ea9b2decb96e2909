# trustplane — `make run` shows the gate working, `make test` runs every test.
# Both start from a fresh clone: they create .venv, install, and fetch Kafka with Maven.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
STATE  := .state
TP     := $(BIN)/trustplane

.DEFAULT_GOAL := help
.PHONY: help install run stop worker test test-unit screenshots bench chaos eval kafka-cluster kafka-cluster-down lint format typecheck clean

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

run: install ## Start Kafka, the worker, sink, notary, console, demo runner, Prometheus; run the demo; print the console URL (`make stop`)
	$(TP) kafka up
	$(TP) keys init
	@mkdir -p $(STATE)
	@# each service is its own Kafka user (streams/acls.py): worker=gate, sink=sink, notary=notary,
	@# console=console (it reads, and relays commands that operators' browsers signed)
	@for pair in worker:gate sink:sink notary:notary console:console; do \
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
	@# the demo's scripted estate for the console's Demo page: it signs as the operator and
	@# publishes as `agent`, so it runs with no fixed principal (the local default)
	@if [ -f $(STATE)/demo-runner.pid ] && kill -0 $$(cat $(STATE)/demo-runner.pid) 2>/dev/null; then \
		echo "demo-runner already running (pid $$(cat $(STATE)/demo-runner.pid))"; \
	else \
		nohup $(TP) demo-runner > $(STATE)/demo-runner.log 2>&1 & echo $$! > $(STATE)/demo-runner.pid; \
		echo "demo-runner started (pid $$(cat $(STATE)/demo-runner.pid), log $(STATE)/demo-runner.log)"; \
	fi
	@if command -v prometheus >/dev/null; then $(TP) prometheus up; \
	else echo "Prometheus is not installed, so the console's Health page has no figures: apt-get install prometheus"; fi
	@sleep 2
	@echo; echo "Lineage in ClickHouse (embedded chDB), by SQL:"
	$(TP) sql "SELECT stage, status, count() AS events FROM lineage_events GROUP BY stage, status ORDER BY stage, status"
	@echo
	@echo "Left running: Kafka (SASL/SCRAM + ACLs; passwords in $(STATE)/kafka/credentials), the gate worker (http://127.0.0.1:6066/metrics, /healthz), the lineage sink (SQL on 127.0.0.1:6068) and the notary (proofs on 127.0.0.1:6067)."
	@echo "Try: $(TP) tail denied --from-beginning --idle 2    Stop everything: make stop"
	@echo
	@for i in $$(seq 50); do [ -s $(STATE)/console/console.token ] && break; sleep 0.2; done
	@echo "Console (Governance, Lineage, Health, Proofs, Demo): http://127.0.0.1:6060/login?token=$$(cat $(STATE)/console/console.token)"
	@# a one-time link that enrols a browser key as an operator (valid 15 min; the CLI holds the root key)
	@$(TP) operators invite --label newcomer --ttl 900 --detach

stop: ## Stop the console, the demo runner, the worker, the sink, the notary, Prometheus and Kafka
	@for svc in invite demo-runner console worker sink notary; do \
		if [ -f $(STATE)/$$svc.pid ]; then kill $$(cat $(STATE)/$$svc.pid) 2>/dev/null || true; rm -f $(STATE)/$$svc.pid; echo "$$svc stopped"; fi; \
	done
	@if [ -x $(TP) ]; then $(TP) prometheus down 2>/dev/null || true; $(TP) kafka down; fi

test: install ## Run the whole test suite (starts its own Kafka broker)
	@rm -f .state/test-hang.log
	$(BIN)/pytest || { status=$$?; [ ! -s .state/test-hang.log ] || { echo 'a test hung; the stacks:'; cat .state/test-hang.log; }; exit $$status; }

test-unit: install ## Only the fast tests that need no broker
	$(BIN)/pytest -m "not broker"

screenshots: install ## Retake the console's screenshots in docs/screenshots (runs its browser tests)
	TRUSTPLANE_SCREENSHOTS=1 $(BIN)/pytest tests/browser

bench: install ## Benchmark the gate end to end (`make bench ARGS=--quick` for the smoke)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench.e2e $(ARGS)

chaos: install ## Chaos suite: kill/stop workers, sink, notary and brokers under signed load, then check every invariant (`make chaos ARGS=--quick`)
	$(BIN)/python -m bench.chaos $(ARGS)

eval: install ## Replay AgentDojo's four suites through the gate; report in docs/agentdojo (`make eval ARGS="--suite banking"`)
	$(TP) eval agentdojo $(ARGS)

kafka-cluster: install ## Three local Kafka nodes (RF 3, min ISR 2) in .state/cluster, provisioned
	TRUSTPLANE_STATE_DIR=$(STATE)/cluster $(TP) kafka up --brokers 3

kafka-cluster-down: ## Stop the three local Kafka nodes
	@if [ -x $(TP) ]; then TRUSTPLANE_STATE_DIR=$(STATE)/cluster $(TP) kafka down; fi

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
