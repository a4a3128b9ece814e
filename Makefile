# Every target is idempotent and installs what it needs first.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# The distributions sharing the `cloudstack_storpool` namespace: the core (this folder), then
# the components, each in its own folder with its own pyproject.toml.
DISTS   := . settings heartbeat agent driver

.PHONY: setup system venv test lint typecheck demo up down bench marvin clean

setup: system venv

system:
	@bash integration/host-setup.sh

$(STAMP): $(addsuffix /pyproject.toml,$(DISTS))
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@$(BIN)/pip install -q --upgrade pip
	@$(BIN)/pip install -q -e '.[test]' $(addprefix -e ./,$(filter-out .,$(DISTS)))
	@touch $(STAMP)

venv: system $(STAMP)

lint: venv
	$(BIN)/ruff check .

typecheck: venv
	$(BIN)/mypy

test: venv lint typecheck
	$(BIN)/pytest -q

demo: venv
	$(BIN)/python -m integration demo

up: venv
	$(BIN)/python -m integration up

down: venv
	$(BIN)/python -m integration down

marvin: venv
	$(BIN)/python -m integration marvin

# The other HTTP stacks bench_http measures the service behind (granian, uvicorn) are the
# `bench` extra, installed here only.
bench: venv
	@$(BIN)/pip install -q -e '.[test,bench]'
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) build *.egg-info */build */src/*.egg-info .mypy_cache .pytest_cache .ruff_cache
