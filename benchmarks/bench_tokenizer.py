"""Tokenizer training throughput on ~11 MB of real code: the Python standard library of the running interpreter.

A benchmark, not a test: timings depend on the machine, so nothing here asserts a number.

Usage:

    python -m benchmarks.bench_tokenizer                      # 11 MB, vocab 16384, both input modes
    python -m benchmarks.bench_tokenizer --megabytes 4 --vocab-size 8192
"""

import argparse
import os
import platform
import time
from pathlib import Path

from gptforge.tokenization import train_tokenizer


def stdlib_files(megabytes: float) -> list[Path]:
    """The stdlib's own .py files (tests and site-packages excluded), in a fixed order, up to `megabytes`."""
    root = Path(os.__file__).parent
    budget = int(megabytes * 1e6)
    picked: list[Path] = []
    for path in sorted(root.rglob("*.py")):
        if {"site-packages", "test", "tests"} & set(path.relative_to(root).parts):
            continue
        try:
            path.read_text(encoding="utf-8")  # the Rust file reader needs UTF-8
        except (UnicodeDecodeError, OSError):
            continue
        picked.append(path)
        budget -= path.stat().st_size
        if budget <= 0:
            break
    return picked


def main(megabytes: float = 11.0, vocab_size: int = 16384, min_frequency: int = 2) -> dict[str, float]:
    """Train once from in-memory strings and once from the files; print and return seconds and MB/s for each."""
    files = stdlib_files(megabytes)
    texts = [path.read_text(encoding="utf-8") for path in files]
    size_mb = sum(len(text.encode("utf-8")) for text in texts) / 1e6
    print(
        f"corpus: {len(files)} stdlib files, {size_mb:.1f} MB | vocab_size={vocab_size} | "
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
        f"RAYON_NUM_THREADS={os.environ.get('RAYON_NUM_THREADS', 'unset')}"
    )
    results: dict[str, float] = {}
    for mode, corpus in (("strings", texts), ("files", files)):
        start, cpu_start = time.perf_counter(), time.process_time()
        tokenizer = train_tokenizer(corpus, vocab_size=vocab_size, min_frequency=min_frequency)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        results[f"{mode}_seconds"] = seconds
        # CPU seconds (all threads) tell apart a slow trainer from a busy machine.
        print(
            f"{mode:>8}: {seconds:6.2f} s  {size_mb / seconds:6.2f} MB/s  "
            f"(CPU {cpu_seconds:.2f} s, vocab {len(tokenizer)})"
        )

    # Encoding speed is what data preparation pays on every epoch, so report it too.
    start, cpu_start = time.perf_counter(), time.process_time()
    n_tokens = sum(len(ids) for ids in tokenizer(texts)["input_ids"])
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    results["encode_seconds"] = seconds
    print(
        f"  encode: {seconds:6.2f} s  {size_mb / seconds:6.2f} MB/s  "
        f"(CPU {cpu_seconds:.2f} s, {n_tokens / 1e6:.2f} M tokens)"
    )
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=11.0, help="corpus size to read from the stdlib")
    parser.add_argument("--vocab-size", type=int, default=16384, help="target vocabulary size")
    parser.add_argument("--min-frequency", type=int, default=2, help="minimum pair count for a merge")
    args = parser.parse_args()
    main(megabytes=args.megabytes, vocab_size=args.vocab_size, min_frequency=args.min_frequency)
