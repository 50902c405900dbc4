"""Preparing a large text corpus for pretraining: throughput, peak memory, and the second run's reuse.

A generated corpus (one plain-text file of random lines over a 5,000-word vocabulary) of each size is prepared the
way `gptforge pretrain --data FILE --tokenizer TOK` prepares it: read into rows, hold out a share, tokenise and pack
into blocks of 256 on every core, write memory-mapped Arrow shards to the cache. Each preparation runs in a fresh
process whose whole process tree (the `datasets.map` workers included) is sampled for resident memory; then the same
command runs again and must find the shards (no tokenising). The corpus and the cache are deleted afterwards.

A benchmark, not a test: the figures depend on the machine, so nothing here asserts a number.

Usage:

    python -m benchmarks.data_prep                      # 250 MB and 1 GB (several minutes on 2 cores)
    python -m benchmarks.data_prep --megabytes 50
"""

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

BLOCK_SIZE = 256
VOCAB_SIZE = 4096


def write_corpus(path: Path, megabytes: float, seed: int = 0) -> int:
    """Random lines of words (a Zipf-like choice over 5,000 generated words) until `megabytes`; returns bytes."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choices(letters, k=rng.randint(2, 9))) for _ in range(5000)]
    weights = [1 / (rank + 1) for rank in range(len(words))]
    target = int(megabytes * 1e6)
    written = 0
    with open(path, "w", encoding="utf-8") as handle:
        while written < target:
            chunk = rng.choices(words, weights=weights, k=200_000)
            text = "".join(
                " ".join(chunk[i : i + 12]) + (".\n" if i % 96 else ".\n\n") for i in range(0, len(chunk), 12)
            )
            handle.write(text)
            written += len(text)
    return written


def train_benchmark_tokenizer(corpus: Path, out: Path) -> None:
    from gptforge.tokenization import train_tokenizer

    with open(corpus, encoding="utf-8") as handle:
        sample = handle.read(10_000_000)
    train_tokenizer([sample], VOCAB_SIZE).save_pretrained(out)


def prepare(corpus: str, tokenizer: str, cache: str) -> None:
    """The child: what `gptforge pretrain` does before its first step, timed; prints one JSON line."""
    from gptforge.configuration import GPTForgeConfig
    from gptforge.scripts.pretrain import PretrainOptions
    from gptforge.training.folders import load_tokenizer
    from gptforge.training.prepared import prepared_blocks

    start = time.perf_counter()
    options = PretrainOptions(output_dir=os.path.join(cache, "unused"), data=corpus, cache_dir=cache)
    options.block_size = BLOCK_SIZE
    tok = load_tokenizer(tokenizer)
    train, validation, held_out, _ = prepared_blocks(options, tok, Path(cache) / "unused-tok", GPTForgeConfig())
    print(
        json.dumps(
            {
                "seconds": time.perf_counter() - start,
                "train_blocks": len(train),
                "validation_blocks": len(validation),
                "held_out": held_out,
            }
        )
    )


def run_child(corpus: Path, tokenizer: Path, cache: Path) -> dict:
    """Run `prepare` in a fresh process; add wall time and the peak resident memory of its process tree (the sum of
    each process's proportional set size, sampled every 0.25 s)."""
    command = [sys.executable, "-m", "benchmarks.data_prep", "--child", str(corpus), str(tokenizer), str(cache)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    parent = psutil.Process(process.pid)
    peak = 0
    while process.poll() is None:
        try:
            tree = [parent, *parent.children(recursive=True)]
            # PSS: forked workers share the parent's pages; RSS would count those once per process
            peak = max(peak, sum(p.memory_full_info().pss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.25)
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"preparation failed:\n{stderr[-3000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result.update(wall_seconds=time.perf_counter() - start, peak_pss_mb=peak / 1e6, output=stdout)
    return result


def main(sizes: list[float], workdir: str | None = None) -> list[dict]:
    root = Path(tempfile.mkdtemp(prefix="gptforge-data-prep-", dir=workdir))
    rows = []
    try:
        for megabytes in sizes:
            corpus = root / f"corpus-{megabytes:g}MB.txt"
            written = write_corpus(corpus, megabytes)
            tokenizer = root / "tokenizer"
            if not tokenizer.is_dir():
                train_benchmark_tokenizer(corpus, tokenizer)
            cache = root / f"cache-{megabytes:g}"
            first = run_child(corpus, tokenizer, cache)
            second = run_child(corpus, tokenizer, cache)
            assert "reusing the blocks prepared earlier" in second["output"], second["output"]
            row = {
                "corpus_mb": written / 1e6,
                "prepare_s": first["seconds"],
                "throughput_mb_s": written / 1e6 / first["seconds"],
                "peak_pss_mb": first["peak_pss_mb"],
                "reuse_s": second["seconds"],
                "reuse_wall_s": second["wall_seconds"],
                "reuse_peak_pss_mb": second["peak_pss_mb"],
                "train_blocks": first["train_blocks"],
                "tokens": (first["train_blocks"] + first["validation_blocks"]) * BLOCK_SIZE,
            }
            rows.append(row)
            print(
                f"{row['corpus_mb']:8.0f} MB: prepared in {row['prepare_s']:7.1f} s ({row['throughput_mb_s']:5.2f} MB/s, "
                f"{row['tokens'] / 1e6:6.1f}M tokens), peak memory (PSS) {row['peak_pss_mb']:6.0f} MB; second run reuses in "
                f"{row['reuse_s']:5.2f} s ({row['reuse_wall_s']:5.1f} s with interpreter start, peak memory (PSS) "
                f"{row['reuse_peak_pss_mb']:5.0f} MB)",
                flush=True,
            )
            shutil.rmtree(cache, ignore_errors=True)
            corpus.unlink()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    import datasets
    import torch

    print(
        f"machine: {os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB; torch {torch.__version__}, datasets {datasets.__version__}"
    )
    return rows


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        prepare(*sys.argv[2:])
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, action="append", help="corpus size (repeatable); default 250, 1000")
    parser.add_argument("--workdir", default=None, help="where the corpus and cache go (default: the temp folder)")
    cli = parser.parse_args()
    main(cli.megabytes or [250.0, 1000.0], cli.workdir)
