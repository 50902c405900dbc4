# Every target installs what it needs into .venv, so a fresh clone only runs `make test` / `make demo`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-slow test-floor lint format demo bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU wheel of torch first, so nothing below pulls a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: $(STAMP) lint
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -n 2 -q

test-slow: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m slow

# The suite against the lowest transformers pyproject.toml allows (`make test` gets the newest pip resolves), in a
# venv of its own so .venv keeps the newest.
FLOOR_VENV := .venv-floor
FLOOR_STAMP := $(FLOOR_VENV)/.installed
TRANSFORMERS_FLOOR = $(shell sed -n 's/.*"transformers>=\([0-9.]*\),.*/\1/p' pyproject.toml)

$(FLOOR_STAMP): pyproject.toml
	$(PY) -m venv $(FLOOR_VENV)
	$(FLOOR_VENV)/bin/pip install -q --upgrade pip
	$(FLOOR_VENV)/bin/pip install -q torch==2.13.0
	$(FLOOR_VENV)/bin/pip install -q -e ".[dev]" "transformers==$(TRANSFORMERS_FLOOR)"
	touch $(FLOOR_STAMP)

test-floor: $(FLOOR_STAMP)
	$(FLOOR_VENV)/bin/python -c "import transformers; print('transformers', transformers.__version__)"
	HF_HUB_OFFLINE=1 $(FLOOR_VENV)/bin/python -m pytest -n 2 -q

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/gptforge demo --out runs/demo

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) $(FLOOR_VENV) runs build *.egg-info
