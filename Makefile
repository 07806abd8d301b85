# The two commands a new machine needs:  make demo   and   make test
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
KAFKA_LIBS := .local/kafka/libs

.PHONY: help setup system venv kafka-libs demo test unit integration faults lint format typecheck bench bench-acceptance bench-reliability train clean kafka-start kafka-stop

help:
	@echo "make demo   - end to end: local Kafka, train (if needed), worker, replay, summary"
	@echo "make test   - install everything, lint, type-check, run the whole test suite"
	@echo "make unit | integration | faults | lint | typecheck | bench | bench-acceptance | bench-reliability | train | kafka-start | kafka-stop | clean"

setup: system venv kafka-libs

system:
	@bash scripts/setup-system.sh

venv: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[train,dev]'
	touch $@

kafka-libs: $(KAFKA_LIBS)/.complete

$(KAFKA_LIBS)/.complete: deploy/kafka/pom.xml
	bash deploy/kafka/local-kafka.sh fetch
	touch $@

demo: setup
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/ecg-demo

test: setup lint typecheck
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/pytest

unit: venv
	$(BIN)/pytest tests/unit

integration: setup
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/pytest tests/integration

# The fault-injection suite alone (also part of make test), with one FAULT line per fault.
faults: setup
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/pytest tests/integration/test_faults.py -s -q

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: venv
	$(BIN)/mypy worker

# Benchmarks print figures; they are not pass/fail unit tests (docs/benchmarks.md).
bench: setup
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python benchmarks/worker_throughput.py

bench-acceptance: setup
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python benchmarks/ecg_acceptance.py
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python benchmarks/image_models.py

# Fail-over time with/without static membership; exactly-once vs at-least-once throughput.
bench-reliability: setup
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python benchmarks/reliability.py failover --runs 2
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python benchmarks/reliability.py throughput

train: venv
	$(BIN)/ecg-train ecg --out artifacts/ecg

kafka-start: kafka-libs
	bash deploy/kafka/local-kafka.sh start

kafka-stop:
	bash deploy/kafka/local-kafka.sh stop

clean:
	rm -rf .local artifacts .pytest_cache .mypy_cache .ruff_cache
