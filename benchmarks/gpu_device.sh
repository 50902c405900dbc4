#!/usr/bin/env bash
# Runs `python -m benchmarks.gpu` on a GPU machine whose image has torch but an older transformers: installs the
# carried transformers wheel (.whl/) into /tmp/site, lays the package out as setuptools' package-dir does (no build
# needed), then writes the log and gpu.json under $OUT. Arguments pass through to benchmarks.gpu.
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
out="${OUT:-$PWD/runs/gpu}" && mkdir -p "$out"
rm -rf /tmp/gf && mkdir -p /tmp/gf && cp -r gptforge benchmarks /tmp/gf/
for d in configuration modeling tokenization scripts; do cp -r "$d" "/tmp/gf/gptforge/$d"; done
cd /tmp/gf  # python puts the working directory first on sys.path: the repo's unmapped gptforge/ must not be it
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv
python3 -c "import torch, transformers, gptforge; print(torch.__version__, transformers.__version__, gptforge.__file__)"
python3 -m benchmarks.gpu --out "$out" "$@" 2>&1 | tee "$out/log-$(date +%H%M%S).txt"
