# mlm — the README's two commands are `make run` and `make test`; both set up .venv themselves.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MLM := $(VENV)/bin/mlm
STAMP := $(VENV)/.installed
# Benchmarks run in their own virtualenv: the peers (PyTorch, keras-hub) are not project deps.
BENCH_VENV ?= .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed
BENCH_OUT ?= bench/results
# Two test processes (pytest-xdist): the suite takes about half as long on 2 cores as serially.
# `make test PYTEST_ARGS=...` replaces this (e.g. `-n 0` for one process, `-k NAME`).
PYTEST_ARGS ?= -n 2

# Pipeline / cluster knobs (override on the command line: make run CORPUS=... LABELS=...).
CORPUS ?=
LABELS ?=
OUTPUT ?= runs/local
PIPELINE_YAML ?= pipelines/mlm_pretraining_pipeline.yaml
# The KFP backend the YAML is for: 2.5 (Kubeflow 1.10), 2.15 (Kubeflow 1.11), 2.16 (Kubeflow 26.03).
KFP_VERSION ?= 2.15
REGISTRY ?= ghcr.io/mlm-project
# The image the base manifests name; `make images` pins the overlays to what it pushed, by digest.
BASE_IMAGE := ghcr.io/mlm-project/mlm
TAG ?= 0.1.0
OVERLAY ?= dev
KFP_HOST ?=
CRON ?= 0 0 3 * * 0

export TF_CPP_MIN_LOG_LEVEL ?= 2
export KERAS_BACKEND := tensorflow

.PHONY: install system-packages upstream-packages run test lint format bench bench-quality compile images lock deploy submit schedule clean

# Programs the tests start for real, as COMMAND=DEBIAN_PACKAGE (installed when missing, as root).
SYSTEM_PACKAGES := prometheus-pushgateway=prometheus-pushgateway promtool=prometheus

# Re-install only when the project metadata changes (fast when already installed). The build
# requirements come first: a new venv's setuptools is too old for pyproject's [build-system].
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip $$($(PY) -c 'import tomllib; \
		print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))')
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

system-packages:
	@scripts/install-system-packages.sh $(SYSTEM_PACKAGES)

# Upstream's published API packages at each supported release, each in its own side environment
# (tests/conformance: the fakes and validators are built from them).
UPSTREAM_LIST := tests/conformance/upstream-packages.txt
UPSTREAM_DIR := $(VENV)/upstream

upstream-packages: $(STAMP)
	@$(PY) scripts/install-upstream-packages.py $(UPSTREAM_LIST) $(UPSTREAM_DIR)

run: $(STAMP)
	$(PY) pipelines/run_local.py --output $(OUTPUT) $(if $(CORPUS),--corpus $(CORPUS)) $(if $(LABELS),--labels $(LABELS))

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: lint system-packages upstream-packages
	$(VENV)/bin/pytest $(PYTEST_ARGS)

$(BENCH_STAMP): pyproject.toml bench/requirements.txt
	@test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet -e . -r bench/requirements.txt
	@touch $(BENCH_STAMP)

# Every benchmark, then one Markdown report (tables, commands, versions) and the PNG plot.
bench: $(BENCH_STAMP)
	@mkdir -p $(BENCH_OUT)
	@echo "make bench: about 75 minutes on 2 cores (bench_growth.py about 30, bench_peers.py about 15)"
	@set -e; for script in $(sort $(filter-out $(addprefix bench/bench_,quality.py ner.py allreduce.py),$(wildcard bench/bench_*.py))); do \
		echo "== $$script"; $(BENCH_VENV)/bin/python $$script --output $(BENCH_OUT); done
	@cat $(BENCH_OUT)/peers.md $(BENCH_OUT)/profile.md $(BENCH_OUT)/scaling.md $(BENCH_OUT)/input.md \
		$(BENCH_OUT)/training.md $(BENCH_OUT)/encoder.md \
		$(BENCH_OUT)/data.md $(BENCH_OUT)/growth.md $(BENCH_OUT)/streaming.md $(BENCH_OUT)/preemption.md \
		$(BENCH_OUT)/multiworker.md > $(BENCH_OUT)/report.md
	@{ cat bench/performance_intro.md; echo; echo "## The last run"; echo; \
		echo "Written by \`make bench\` on $$(date -u +%Y-%m-%d)."; echo; \
		sed -E "s/^#{1,2} /### /" $(BENCH_OUT)/report.md; } > docs/performance.md.tmp && mv docs/performance.md.tmp docs/performance.md
	@cp $(BENCH_OUT)/peers.png docs/performance-peers.png
	@echo "report: docs/performance.md (and $(BENCH_OUT)/report.md), plot: docs/performance-peers.png"

# Pre-training quality on the shared real text (../shared/data; not part of the repository):
# 27 to 29 minutes in its last two runs on 2 cores, and it needs that data, hence not part of
# `make bench`.
bench-quality: $(BENCH_STAMP)
	@mkdir -p $(BENCH_OUT)
	$(BENCH_VENV)/bin/python bench/bench_quality.py --output $(BENCH_OUT)

compile: $(STAMP)
	$(PY) pipelines/compile.py --output $(PIPELINE_YAML) --kfp-version $(KFP_VERSION)

# The images' hashed lock files: pyproject.toml's runtime dependencies (plus the CUDA wheels for
# the GPU image), resolved for the images' Python and platform. The Dockerfiles install them in a
# layer before the mlm wheel, so a source change does not reinstall TensorFlow.
LOCK := $(VENV)/bin/uv pip compile --quiet --generate-hashes --python-version 3.11 \
	--python-platform x86_64-manylinux_2_36 --custom-compile-command "make lock"

lock: $(STAMP)
	$(LOCK) pyproject.toml -o images/requirements.lock
	$(LOCK) pyproject.toml images/requirements-gpu.in -o images/requirements-gpu.lock

images:
	docker build -f images/cpu.Dockerfile -t $(REGISTRY)/mlm:$(TAG) .
	docker build -f images/gpu.Dockerfile -t $(REGISTRY)/mlm:$(TAG)-gpu .
	docker push $(REGISTRY)/mlm:$(TAG)
	docker push $(REGISTRY)/mlm:$(TAG)-gpu
	$(PYTHON) scripts/pin-image-digest.py $(BASE_IMAGE) \
		$$(docker inspect --format '{{index .RepoDigests 0}}' $(REGISTRY)/mlm:$(TAG)) \
		manifests/overlays/dev manifests/overlays/multi-user
	$(PYTHON) scripts/pin-image-digest.py $(BASE_IMAGE) \
		$$(docker inspect --format '{{index .RepoDigests 0}}' $(REGISTRY)/mlm:$(TAG)-gpu) \
		manifests/overlays/gke-gpu

deploy: $(STAMP)
	$(VENV)/bin/kubectl apply -k manifests/overlays/$(OVERLAY)

submit: compile
	$(MLM) pipeline submit $(if $(KFP_HOST),--host $(KFP_HOST)) --package $(PIPELINE_YAML)

schedule: compile
	$(MLM) pipeline schedule $(if $(KFP_HOST),--host $(KFP_HOST)) --package $(PIPELINE_YAML) --cron "$(CRON)"

clean:
	rm -rf $(VENV) runs build .pytest_cache .ruff_cache
