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

.PHONY: install drill plans test reliability bench clean serve serve-down

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

## Two workers: most tests wait on servers and subprocesses, not on the CPU. Each test file
## stays on one worker, and the lab's files share one (see tests/conftest.py).
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest -n 2 --dist loadgroup

## Every fault campaign and fuzzer at full size, and the lab drills; rewrites
## docs/reliability.md when all pass. (`make test` runs them with a few trials each.)
reliability: $(STAMP)
	REVIVE_RELIABILITY=full REVIVE_RELIABILITY_WRITE=1 \
		$(BIN)/pytest -n 2 --dist loadgroup tests/reliability tests/lab/test_lab_drill.py

## The orchestrator on this machine: two Prefect API replicas behind HAProxy on PostgreSQL and
## Redis, one services process, a worker per DC of $(TOPOLOGY), the board (README).
serve: $(STAMP)
	$(BIN)/revive stack up --topology $(TOPOLOGY)

serve-down: $(STAMP)
	$(BIN)/revive stack down

bench: $(STAMP)
	$(BIN)/python bench/plan.py
	$(BIN)/python bench/priority.py
	$(BIN)/python bench/ramp.py
	$(BIN)/python bench/restart.py
	$(BIN)/python bench/adapters.py
	$(BIN)/python bench/slack_ack.py

clean:
	rm -rf $(VENV) .revive .pytest_cache .ruff_cache .hypothesis
