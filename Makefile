# Every target installs what it needs into .venv, so a fresh clone only runs `make test` / `make demo`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_VERSION ?= 2.13.0
# Where torch comes from when pip has no local wheel of it: PyTorch's CPU-only index (PyPI's Linux torch is the
# multi-GB CUDA build). A CUDA machine may pass its own, e.g. TORCH_INDEX=https://download.pytorch.org/whl/cu128.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: install test test-slow test-all test-floor lint format demo bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, so nothing below pulls it from PyPI: the wheel pip's own configuration provides locally
	# (find-links), if any, else the build from TORCH_INDEX. `--no-deps` because a local wheel folder need not hold
	# torch's dependencies; the install of gptforge below resolves them from the configured index.
	$(BIN)/pip install -q --no-index --no-deps torch==$(TORCH_VERSION) \
		|| $(BIN)/pip install -q torch==$(TORCH_VERSION) --index-url $(TORCH_INDEX)
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# mypy finds modules by folder: it checks a tree of links that places each sub-package's folder (configuration/,
# training/, scripts/, ...) inside gptforge/, as `[tool.setuptools.package-dir]` in pyproject.toml maps them when
# installed. The sub-packages are read from that table, so a new folder is type-checked once it is mapped there.
TYPECHECK := $(VENV)/typecheck
LINK_SUBPACKAGES := import sys, tomllib, pathlib; dirs = tomllib.load(open("pyproject.toml", "rb"))["tool"]["setuptools"]["package-dir"]; [pathlib.Path(sys.argv[1], *name.split(".")).symlink_to(pathlib.Path(folder).resolve()) for name, folder in dirs.items() if "." in name]

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	rm -rf $(TYPECHECK)/gptforge && mkdir -p $(TYPECHECK)/gptforge
	ln -s $(CURDIR)/gptforge/* $(TYPECHECK)/gptforge/
	$(BIN)/python -c '$(LINK_SUBPACKAGES)' $(TYPECHECK)
	cd $(TYPECHECK) && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml -p gptforge

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: $(STAMP) lint
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -n 2 -q

test-slow: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m slow

# everything, `slow` included (the -m here replaces the default `-m 'not slow'` of pyproject's addopts)
test-all: $(STAMP)
	# --dist loadfile: a file's tests share one worker, so a module-scoped fixture (the 2-process runs the distributed
	# resume tests continue) is built once, not once per worker
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -n 2 --dist loadfile -q -m "slow or not slow"

# The suite against the lowest transformers pyproject.toml allows (`make test` gets the newest pip resolves), in a
# venv of its own so .venv keeps the newest.
FLOOR_VENV := .venv-floor
FLOOR_STAMP := $(FLOOR_VENV)/.installed
TRANSFORMERS_FLOOR = $(shell sed -n 's/.*"transformers>=\([0-9.]*\),.*/\1/p' pyproject.toml)

$(FLOOR_STAMP): pyproject.toml
	$(PY) -m venv $(FLOOR_VENV)
	$(FLOOR_VENV)/bin/pip install -q --upgrade pip
	$(FLOOR_VENV)/bin/pip install -q --no-index --no-deps torch==$(TORCH_VERSION) || $(FLOOR_VENV)/bin/pip install -q torch==$(TORCH_VERSION) --index-url $(TORCH_INDEX)
	# the test tools and the GGUF writer only: the serving extra needs a newer transformers, and the consumer packages
	# (lm-eval, TRL, ...) pin their own; their tests skip where the package is missing
	$(FLOOR_VENV)/bin/pip install -q -e ".[test,gguf]" "transformers==$(TRANSFORMERS_FLOOR)"
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
