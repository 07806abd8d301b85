# The two commands a new machine needs:  make demo   and   make test
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
KAFKA_LIBS := .local/kafka/libs

.PHONY: help setup system venv kafka-libs helm helm-lint demo test unit integration faults soak lint format typecheck bench bench-acceptance bench-reliability train clean kafka-start kafka-stop kafka-clean kafka-start-secure kafka-stop-secure

help:
	@echo "make demo   - end to end: local Kafka, train (if needed), worker, replay, summary"
	@echo "make test   - install everything, lint, type-check, run the whole test suite"
	@echo "make test-kernels - the score-agreement tests under forced OpenBLAS kernels"
	@echo "make mutation [MODULES=codec,batcher] - mutation testing, kill rate per module"
	@echo "make unit | integration | faults | soak | lint | typecheck | bench | bench-acceptance | bench-reliability | train | kafka-start | kafka-stop | kafka-clean | helm-lint | clean"

setup: system venv kafka-libs helm

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

# helm for the chart tests (deploy/helm/ecg-worker); skipped when one is already installed.
helm:
	@bash scripts/install-helm.sh

helm-lint: helm
	PATH=$(abspath .local/bin):$$PATH helm lint --strict deploy/helm/ecg-worker

demo: setup
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/ecg-demo

test: setup lint typecheck
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/pytest

unit: venv
	$(BIN)/pytest tests/unit

# The score-agreement tests (batch sizes 1/7/500, stream vs offline) with OpenBLAS forced to
# other float32 kernels than this CPU's default, so that a CPU-dependent assumption fails
# here rather than on a user's machine. KERNELS must be ones this CPU can run.
.PHONY: test-kernels
KERNELS ?= Haswell Sandybridge
AGREEMENT_TESTS := tests/unit/test_agreement.py tests/unit/test_stream_summary.py \
	tests/unit/test_loop.py tests/unit/test_scorer.py
test-kernels: venv
	@for k in $(KERNELS); do \
	  OPENBLAS_CORETYPE=$$k OPENBLAS_VERBOSE=2 $(BIN)/python -c 'import numpy' 2>&1 | grep -i core; \
	  OPENBLAS_CORETYPE=$$k $(BIN)/pytest -q $(AGREEMENT_TESTS) || exit 1; \
	done

integration: setup
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/pytest tests/integration

# The fault-injection suite alone (also part of make test), with one FAULT line per fault.
faults: setup
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/pytest tests/integration/test_faults.py -s -q

# A longer soak: 10 kill -9 rounds per delivery mode on a 30,000-window stream (~1.5 min).
soak: setup
	PATH=$(abspath $(BIN)):$$PATH ECG_FAULT_ROUNDS=10 $(BIN)/pytest tests/integration/test_faults.py -s -q -k kill9_worker

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: venv
	$(BIN)/mypy worker trainer clients benchmarks

# Benchmarks print figures; they are not pass/fail unit tests (docs/benchmarks.md).
bench: setup
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python benchmarks/bench.py $(BENCH_ARGS)

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

# Stops the local broker and deletes its topics and data (.local/kafka/9092).
kafka-clean:
	bash deploy/kafka/local-kafka.sh clean

# A second local broker with a SASL_SSL listener on 127.0.0.1:9096 and ACLs (docs/security.md);
# its CA and users are in .local/kafka/secure/security/.
SECURE_KAFKA := bash deploy/kafka/local-kafka.sh --port 9095 --controller-port 9097 \
	--sasl-ssl-port 9096 --data-dir .local/kafka/secure

kafka-start-secure: kafka-libs
	$(SECURE_KAFKA) start

kafka-stop-secure:
	$(SECURE_KAFKA) stop

# Mutation testing of the scoring core and the delivery path (docs/mutation.md): a kill rate
# per module. Not part of make test (~15 min for all seven modules on two cores).
# make mutation MODULES=codec,batcher runs a subset.
.PHONY: mutation
MODULES ?=
MUTATION_CHILDREN ?= 2
mutation: venv
	$(BIN)/python scripts/mutation.py --max-children $(MUTATION_CHILDREN) \
	  $(if $(MODULES),--modules $(MODULES))

clean:
	rm -rf mutants .local artifacts .pytest_cache .mypy_cache .ruff_cache
