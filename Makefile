# Two commands set everything up on a fresh machine: `make drill` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
TOPOLOGY ?= runbooks/topology.yaml
LOST_DC ?=
SEED ?= 1
# The DC to lose: LOST_DC, or the topology's first DC.
FIRST_DC = $(BIN)/python -c 'import sys; from revive.topology import load; print(load(sys.argv[1]).dc_names[0])' $(TOPOLOGY)

.PHONY: install drill plans test reliability bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## The main job: a DC-fire drill on the built-in simulator; prints the report directory.
drill: $(STAMP)
	$(BIN)/revive drill --topology $(TOPOLOGY) --seed $(SEED) $(if $(LOST_DC),--lost-dc $(LOST_DC))

## Readiness findings and plans, without running anything. Findings never fail this.
plans: $(STAMP)
	$(BIN)/revive check --topology $(TOPOLOGY) || [ $$? -eq 1 ]
	lost="$(LOST_DC)"; lost="$${lost:-$$($(FIRST_DC))}"; \
	$(BIN)/revive plan provision --topology $(TOPOLOGY) --lost-dc "$$lost" && \
	$(BIN)/revive plan restart --topology $(TOPOLOGY) --dc "$$lost"

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest

## Every fault campaign and fuzzer at full size; rewrites docs/reliability.md when all pass.
## (`make test` runs the same campaigns with a few trials each.)
reliability: $(STAMP)
	REVIVE_RELIABILITY=full $(BIN)/pytest tests/reliability

bench: $(STAMP)
	$(BIN)/python bench/plan.py
	$(BIN)/python bench/priority.py
	$(BIN)/python bench/ramp.py
	$(BIN)/python bench/restart.py
	$(BIN)/python bench/adapters.py
	$(BIN)/python bench/slack_ack.py

clean:
	rm -rf $(VENV) .revive .pytest_cache .ruff_cache .hypothesis
