# Every target installs what it needs into .venv, so a fresh clone only runs `make test` / `make demo`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-slow lint format demo bench clean

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

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/gptforge demo --out runs/demo

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) runs build *.egg-info
