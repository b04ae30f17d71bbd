# Two commands on a fresh clone:  `make run` (whole DAG on the demo data) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(CURDIR)/$(VENV)/bin
# torch is installed first, on its own. The default pin gives the CPU wheel on these machines and the
# CUDA build from PyPI on a Linux GPU host; pick a build explicitly with e.g.
#   make run TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128   (or .../whl/cpu)
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX_URL ?=
PYTEST_ARGS ?=
# make test runs the suite on TEST_WORKERS processes (pytest-xdist), one test module per worker at a time
# (module fixtures such as the e2e build are made once); TEST_WORKERS=0 runs it in this process.
TEST_WORKERS ?= 2

export PATH := $(BIN):$(PATH)
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 90
export DO_NOT_TRACK := 1
export MLFLOW_DISABLE_TELEMETRY := true
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow.db
export DVC_NO_ANALYTICS := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HOME ?= $(CURDIR)/.hf
export TOKENIZERS_PARALLELISM := false

.PHONY: install run run-real profile flow test bench gpu-check mlflow-ui prefect-server deploy services services-down worker clean ui-check

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)" $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip check
	$(BIN)/python -c "import torch; print('torch', torch.__version__, 'cuda' if torch.cuda.is_available() else 'cpu')"
	touch $@

run: install            ## the main job: the whole DAG on the demo data
	python -m flows.orphans --remove
	dvc repro

run-real: install       ## the whole DAG on the real samples in ../shared/data (switches params.yaml to profiles/real.yaml)
	python -m profiles real
	python -m flows.orphans --remove
	dvc repro

profile: install        ## switch params.yaml to a data profile: make profile P=demo | P=real
	python -m profiles "$(P)"

flow: install           ## the same DAG as a Prefect flow (ephemeral server unless PREFECT_API_URL is set)
	python -m flows.pipeline

test: install
	@if [ -n "$$CI" ]; then python -c "import torch, sys; sys.exit('CI must use the CPU torch build, got ' + torch.__version__) if torch.version.cuda else None"; fi
	python -m pytest $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadscope) $(PYTEST_ARGS)

bench: install
	python -m benchmarks

gpu-check: install      ## on a CUDA machine: bf16 pretraining tokens/s and MFU against a bare loop
	python -m benchmarks.gpu_check $(if $(wildcard ../shared/data/bert-chinese-layout/vocab.txt),--vocab ../shared/data/bert-chinese-layout/vocab.txt --layout-dir ../shared/data/bert-chinese-layout --clue ../shared/data/clue)

mlflow-ui: install
	mlflow ui --host 127.0.0.1 --port 5000 --backend-store-uri $(MLFLOW_TRACKING_URI) --workers 1

prefect-server: install
	prefect server start --host 127.0.0.1 --port 4200

UI_CHECK_ARGS ?=
ui-check: install       ## MLflow and Prefect UIs in headless Chromium, screenshots in ui-check/ (UI_CHECK_ARGS="--skip registry")
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| { echo "ui-check needs Chromium: run 'apt-get install chromium' as root" >&2; exit 1; }
	python -m tools.ui_check $(UI_CHECK_ARGS)

deploy: install         ## needs `make prefect-server` in another shell
	PREFECT_API_URL=$${PREFECT_API_URL:-http://127.0.0.1:4200/api} python -m flows.deploy

services: install       ## Postgres, the MLflow server on it, the Prefect server and the work pools, on 127.0.0.1
	python -m flows.services up

services-down: install
	python -m flows.services down

POOL ?= cpu
worker: install         ## a Prefect process worker in this checkout for POOL: a resource class (cpu, gpu) or a pool name
	python -m flows.services worker --pool "$(POOL)" $(if $(WORKER),--name "$(WORKER)")

clean:
	rm -rf data/demo data/prepared data/downloads reports .prefect mlflow.db
