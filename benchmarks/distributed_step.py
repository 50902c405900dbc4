"""Time per step of `gptforge pretrain` on several CPU processes against one: DDP (torchrun) and FSDP2 (the shipped
accelerate config), at the same global batch.

Each contender is the real command, timed from its metrics.jsonl lines (`trainer_path.pretrain_rate`), alternating
over `--repeats`; figures are medians with min-max. On a 2-core machine two processes get one core each, so the
one-process rows are given with one thread (the fair per-core comparison) and with two.

Usage:
    python -m benchmarks.distributed_step                 # about 4 minutes on 2 cores
"""

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from .trainer_path import SHAPES_HERE, pretrain_rate

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
TORCHRUN = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")
ACCELERATE_FSDP = (
    sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(SCRIPTS / "accelerate_fsdp.yaml"),
    "--num_processes", "2", "--main_process_port", "0",
)  # fmt: skip
# label -> (launcher, processes, threads per process)
CONTENDERS = {
    "1 process, 1 thread": ((sys.executable,), 1, 1),
    "1 process, 2 threads": ((sys.executable,), 1, 2),
    "DDP, 2 processes x 1 thread (torchrun)": (TORCHRUN, 2, 1),
    "FSDP2, 2 processes x 1 thread (accelerate_fsdp.yaml)": (ACCELERATE_FSDP, 2, 1),
}


def main(steps: int, warmup: int, repeats: int) -> dict[str, list[float]]:
    shape = SHAPES_HERE["dist"]
    ms: dict[str, list[float]] = {label: [] for label in CONTENDERS}
    with tempfile.TemporaryDirectory(prefix="gptforge-dist-step-") as work:
        for repeat in range(repeats):
            for number, (label, (launcher, processes, threads)) in enumerate(CONTENDERS.items()):
                rate = pretrain_rate(
                    Path(work), shape, steps, warmup, torch.device("cpu"), False, f"{repeat}-{number}",
                    launcher=launcher, processes=processes, threads=threads,
                )  # fmt: skip
                ms[label].append(shape.tokens / rate * 1000)
                print(f"[{repeat + 1}/{repeats}] {label}: {ms[label][-1]:.0f} ms per step", flush=True)
    reference = statistics.median(ms["1 process, 1 thread"])
    print(f"\n## time per step, pretrain, {shape.hidden}-wide x {shape.layers} blocks, global batch "
          f"{shape.batch} x {shape.seq} tokens, {os.cpu_count()} cores")  # fmt: skip
    print("| run | ms per step, median (min-max) | vs 1 process, 1 thread |\n|---|---|---|")
    for label, values in ms.items():
        median = statistics.median(values)
        print(f"| {label} | {median:.0f} ({min(values):.0f}-{max(values):.0f}) | {reference / median:.2f}x |")
    return ms


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per run (default 30)")
    parser.add_argument("--warmup", type=int, default=6, help="steps left out of the rate (default 6)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating repeats (default 2)")
    cli = parser.parse_args()
    main(cli.steps, cli.warmup, cli.repeats)
