# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint down status clean

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

clean:
	rm -rf $(VENV) .kvstore build *.egg-info
