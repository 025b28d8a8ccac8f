# Two commands set everything up on a fresh machine: `make drill` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
TOPOLOGY ?= runbooks/topology.yaml
DC ?= dc2
LOST_DC ?= dc1
SEED ?= 1

.PHONY: install drill plans test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## The main job: a DC-fire drill on the built-in simulator; prints the report directory.
drill: $(STAMP)
	$(BIN)/revive drill --topology $(TOPOLOGY) --seed $(SEED)

## Readiness findings and plans, without running anything. Findings never fail this.
plans: $(STAMP)
	$(BIN)/revive check --topology $(TOPOLOGY) || [ $$? -eq 1 ]
	$(BIN)/revive plan provision --topology $(TOPOLOGY) --dc $(DC)
	$(BIN)/revive plan restart --topology $(TOPOLOGY) --dc $(LOST_DC)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/plan.py
	$(BIN)/python bench/ramp.py
	$(BIN)/python bench/restart.py
	$(BIN)/python bench/slack_ack.py

clean:
	rm -rf $(VENV) .revive .pytest_cache .ruff_cache .hypothesis
