# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint down status clean k8s-build k8s-up k8s-test k8s-down

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

run: $(STAMP)  ## start a local 3-replica StatefulSet in .kvstore/ (Ctrl-C stops it)
	$(BIN)/kvstore local up --replicas 3

status: $(STAMP)
	$(BIN)/kvstore local status

down: $(STAMP)
	$(BIN)/kvstore local down

test: $(STAMP)  ## the whole test suite
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check kvstore tests
	$(BIN)/ruff format --check kvstore tests
	$(BIN)/mypy

# A one-node Kubernetes of local processes (hack/k8s/cluster.py), as root; opt-in like the image
# test. The first k8s-up builds the components from their Go modules (long), then they are cached.
k8s-build:
	$(PY) hack/k8s/cluster.py build

k8s-up: $(STAMP)
	$(BIN)/python hack/k8s/cluster.py up

k8s-test: $(STAMP)
	KV_K8S_TEST=1 $(BIN)/python -m pytest -v -m k8s_cluster tests/k8s/cluster

k8s-down:
	$(PY) hack/k8s/cluster.py down

clean:
	rm -rf $(VENV) .kvstore build *.egg-info
