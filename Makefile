# model-release-operator: every target creates or reuses .venv and installs what it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXTRAS := local,trainer,test,lint,backtest

.PHONY: help venv prometheus test lint crds demo demo-rollback demo-gateway bench image clean

help:
	@echo "make demo   - a whole staged release on this machine (embedded default)"
	@echo "make demo-rollback - the same with a faulty canary that is rolled back"
	@echo "make demo-gateway - exact weights by an HTTPRoute: a shadow step, then 5% on 1 canary pod of 10"
	@echo "make test   - the whole test suite"
	@echo "make lint   - ruff, mypy and the import contracts"
	@echo "make crds   - regenerate crds/ from the API models"
	@echo "make bench  - benchmarks (print figures)"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	@touch $(STAMP)

venv: $(STAMP)

# Debian's Prometheus (2.42): the analysis tests start their own on 127.0.0.1 (openssl makes their
# TLS certificates).
prometheus:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null && command -v openssl >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      prometheus openssl >/dev/null; }

# The API-level operator tests run in a pytest process of their own: each hosts an emulator and a
# fake Prometheus in the test process, and a fresh process keeps what earlier layers left in memory
# out of theirs (one process for the whole suite once grew past this machine's memory).
test: $(STAMP) prometheus
	$(PY) -m pytest -q --ignore=tests/operator
	$(PY) -m pytest -q tests/operator

lint: $(STAMP)
	$(VENV)/bin/ruff check operator trainer_image tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

crds: $(STAMP)
	$(PY) -m modelrelease.api > crds/modelrelease.io_modelreleases.yaml
	cp crds/modelrelease.io_modelreleases.yaml charts/model-release-operator/crds/

# The embedded default: a whole staged release on this machine (reports/ gets the chart and YAML).
demo: $(STAMP) prometheus
	$(PY) -m modelrelease local demo

# The same with a faulty last canary (its server injects errors): analysis fails, RolledBack.
demo-rollback: $(STAMP) prometheus
	$(PY) -m modelrelease local demo --rollback

# Exact weights through a Gateway API HTTPRoute (examples/digits-gateway.yaml): a shadow step, then 5% of
# the traffic on 1 canary pod of 10, and 5% of requests with the tester header that a header route sends
# to the canary. Ten servers start slowly on a small machine, hence the longer timeout.
demo-gateway: $(STAMP) prometheus
	$(PY) -m modelrelease local demo --release examples/digits-gateway.yaml --tester-share 0.05 --timeout 1500

image:
	docker build -f operator.Dockerfile -t ghcr.io/modelrelease/operator:0.1.0 .
	docker build -t ghcr.io/modelrelease/trainer:0.1.0 trainer_image

bench: $(STAMP) prometheus
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .venv-helm .pytest_cache .mypy_cache .ruff_cache
