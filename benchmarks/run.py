"""gptforge against Transformers' own Llama and GPT-2, at identical shapes and weights, fp32 on CPU.

Each unit (training at one shape, memory at one shape, decoding, the sweep) runs in a fresh Python process, so no
compiled code, allocator state or profiler from one unit colours another; inside a unit the models alternate
round-robin (the starting model rotating), so background load hits them alike. The table shows medians with the
spread (min-max) of the measured rounds, and ratios gptforge / reference; a unit whose spread is wide measures again.

Usage:
    python -m benchmarks.run                 # the full run (`make bench`): about 7 minutes on 2 cores
    python -m benchmarks.run --quick         # a smoke run: shape small only, fewer rounds, no compilation
    python -m benchmarks.run --sections train,memory --shapes gpt2s --memory-shapes gpt2s-b8 --wait-idle 30

Measured:
- training: tokens/s of forward + backward + AdamW step (`fused=True`, Trainer's default), and the share of the
  machine's fp32 matmul peak (a 2048^3 `torch.mm`, probed between the models' steps). FLOPs per token = 6 x matmul
  parameters (embedding lookups excluded, a tied head counted) + 12 x layers x seq x hidden (attention scores and
  values, forward and backward, the full square as in PaLM's MFU; causal kernels skip about half of it);
- the same with each decoder block wrapped in `torch.compile` (Llama and gptforge alike), reported separately;
- memory: peak bytes torch allocates during one training step above the weights and AdamW state, with gradients
  freed between steps (Trainer's default) and kept, and the process total, at `small`, `gpt2s` and `gpt2s-b8` (gpt2s
  at batch 8, where logits rather than gradients dominate; the Llama pair only, to keep the run short);
- decoding: tokens/s of greedy `generate` (prompt 32, 128 new tokens) at batch 1 and 8, dynamic and static cache;
  with the static cache gptforge runs the compiled decode step (`gptforge.cpu_compile_config()`, the documented
  path), Llama runs what `generate` does by default on CPU (eager); the compile time is reported, not counted;
- a sequence-length sweep (256 to 2048, 2048 tokens per step) of training tokens/s, plotted to runs/bench/sweep.png.

Outputs: the table on stdout, then one JSON line; runs/bench/bench.json (latest), runs/bench/history.jsonl.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import torch
import transformers

import gptforge
from gptforge import compile_blocks, cpu_compile_config

from .measure import (
    MATMUL_PROBE_SIZE,
    Samples,
    cpu_load,
    step_peak_memory,
    time_decoding,
    time_training,
)
from .models import FAMILIES, SHAPES, Shape, model_pair, train_flops_per_token
from .report import Report, plot_sweep, single

WIDE_SPREAD = 0.25  # (max - min) / median of a model's rounds above which a training unit measures again
SWEEP_SEQS = (256, 512, 1024, 2048)
SWEEP_TOKENS = 2048


def quiet_libraries() -> None:
    """Transformers' and torch's warnings (compile config notes, deprecations) would drown the table."""
    warnings.filterwarnings("ignore")
    transformers.logging.set_verbosity_error()


def machine() -> dict:
    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "gptforge": gptforge.__version__,
    }


def wide(samples: dict[str, Samples], work: float) -> bool:
    return any((r["max"] - r["min"]) / r["median"] > WIDE_SPREAD for r in (s.rate(work) for s in samples.values()))


# --- units -------------------------------------------------------------------------------------------------------


def unit_train(report: Report, shape: Shape, rounds: int, warmup: int, compiled: bool, idle_wait: float) -> None:
    models = {}
    for family in FAMILIES:
        models.update(model_pair(family, shape))
    if compiled:  # the Llama pair only: compiling is slow on 2 cores, and the goals are against Llama
        for label, model in model_pair("llama", shape).items():
            compile_blocks(model, dynamic=False)  # the benchmark's shapes never change
            models[label + "+compile"] = model
    torch.manual_seed(1)
    ids = torch.randint(0, shape.vocab, (shape.batch, shape.seq))
    samples, probes, first_loss, first_step = time_training(models, ids, rounds, warmup, idle_wait=idle_wait)
    if wide(samples, shape.tokens):
        more, more_probes, _, _ = time_training(models, ids, rounds, warmup=0, idle_wait=idle_wait)
        for name in samples:
            samples[name].seconds += more[name].seconds
        probes.seconds += more_probes.seconds
        report.notes.append(f"train {shape.name}: spread above {WIDE_SPREAD:.0%}, measured {rounds} more rounds")
    peak = probes.rate(2 * MATMUL_PROBE_SIZE**3)
    rates = {name: s.rate(shape.tokens) for name, s in samples.items()}
    shares = {}
    for name, model in models.items():
        flops = train_flops_per_token(model, shape)
        shares[name] = {k: rates[name][k] * flops / peak["median"] for k in ("median", "min", "max")}
    pairs = [(forge, reference) for reference, forge in FAMILIES.values()]
    eager = [name for name in models if "+" not in name]
    report.add("train tokens/s, eager", shape.name, {k: rates[k] for k in eager}, pairs)
    report.add("train share of fp32 mm peak, eager", shape.name, {k: shares[k] for k in eager}, pairs)
    report.goals[f"train_{shape.name}"] = rates["gptforge"]["median"] / rates["Llama"]["median"]
    if compiled:
        both = [("gptforge+compile", "Llama+compile"), ("gptforge+compile", "Llama")]
        values = {k: rates[k] for k in ("Llama+compile", "gptforge+compile", "Llama")}
        report.add("train tokens/s, compiled blocks", shape.name, values, both)
        values = {k: shares[k] for k in ("Llama+compile", "gptforge+compile")}
        report.add("train share of fp32 mm peak, compiled blocks", shape.name, values, both[:1])
        report.goals[f"train_{shape.name}_compiled"] = rates["gptforge+compile"]["median"] / rates["Llama"]["median"]
        compile_s = {k: first_step[k] - shape.tokens / rates[k]["median"] for k in first_step if "+" in k}
        report.notes.append(
            f"train {shape.name}: compile time (first step minus a median step): "
            + ", ".join(f"{k} {v:.0f}s" for k, v in compile_s.items())
        )
    report.add(
        "fp32 matmul peak, GFLOP/s (2048^3 mm)", shape.name, {"probe": {k: v / 1e9 for k, v in peak.items()}}, []
    )
    if shape.name == "gpt2s":
        report.goals["mfu_gpt2s"] = shares["gptforge"]["median"]
        if compiled:
            report.goals["mfu_gpt2s_compiled"] = shares["gptforge+compile"]["median"]
    losses = ", ".join(f"{k} {v:.4f}" for k, v in first_loss.items())
    report.notes.append(f"train {shape.name}: first-step losses (same weights, same function): {losses}")


def unit_memory(
    report: Report, shape: Shape, families: tuple[str, ...] = tuple(FAMILIES), grads_kept: bool = True
) -> None:
    step, kept, total = {}, {}, {}
    torch.manual_seed(1)
    ids = torch.randint(0, shape.vocab, (shape.batch, shape.seq))
    for family in families:
        for name, model in model_pair(family, shape).items():
            stats = step_peak_memory(model, ids)
            step[name] = single(stats["step_peak_bytes"] / 2**20)
            total[name] = single((stats["step_peak_bytes"] + stats["resident_bytes"]) / 2**20)
            if grads_kept:
                kept[name] = single(step_peak_memory(model, ids, keep_grads=True)["step_peak_bytes"] / 2**20)
    pairs = [FAMILIES[family][::-1] for family in families]
    vocab = f"vocab {shape.vocab}, batch {shape.batch}"
    report.add(f"train-step peak above weights+AdamW, {vocab}", shape.name, step, pairs, "MiB")
    if grads_kept:
        report.add(f"the same, gradients kept allocated, {vocab}", shape.name, kept, pairs, "MiB")
    report.add(f"train-step process total, {vocab}", shape.name, total, pairs, "MiB")
    goal = f"memory_{shape.vocab}" if shape.name in ("small", "gpt2s") else f"memory_{shape.name}"
    report.goals[goal] = step["gptforge"]["median"] / step["Llama"]["median"]
    if grads_kept:
        report.goals[f"{goal}_grads_kept"] = kept["gptforge"]["median"] / kept["Llama"]["median"]


def unit_decode(
    report: Report, shape: Shape, batches: list[int], new_tokens: int, rounds: int, compile_ref: bool, idle_wait: float
) -> None:
    pair = model_pair("llama", shape, training=False)
    llama, forge = pair["Llama"], pair["gptforge"]
    torch.manual_seed(2)
    for batch in batches:
        prompt = torch.randint(1, shape.vocab, (batch, 32))
        work = batch * new_tokens
        contenders = {"Llama": (llama, None), "gptforge": (forge, None)}
        samples, _, tokens = time_decoding(contenders, prompt, new_tokens, "dynamic", rounds, idle_wait)
        rates = {k: s.rate(work) for k, s in samples.items()}
        report.add(f"decode tokens/s, batch {batch}, dynamic cache", shape.name, rates, [("gptforge", "Llama")])
        same_dynamic = torch.equal(tokens["Llama"], tokens["gptforge"])
        if batch == 1:
            report.goals["decode_dynamic_b1"] = rates["gptforge"]["median"] / rates["Llama"]["median"]

        contenders = {"Llama": (llama, None), "gptforge+compile": (forge, cpu_compile_config())}
        pairs = [("gptforge+compile", "Llama")]
        if compile_ref:
            contenders.update({"Llama+compile": (llama, cpu_compile_config()), "gptforge": (forge, None)})
            pairs += [("gptforge+compile", "Llama+compile"), ("gptforge", "Llama")]
        samples, first, tokens = time_decoding(contenders, prompt, new_tokens, "static", rounds, idle_wait)
        rates = {k: s.rate(work) for k, s in samples.items()}
        report.add(f"decode tokens/s, batch {batch}, static cache", shape.name, rates, pairs)
        if batch == 1:
            report.goals["decode_static_b1"] = rates["gptforge+compile"]["median"] / rates["Llama"]["median"]
        compile_s = {k: first[k] - work / rates[k]["median"] for k in first if "+compile" in k}
        same_static = all(torch.equal(tokens["Llama"], t) for t in tokens.values())
        report.notes.append(
            f"decode {shape.name} batch {batch}: same tokens from every model: dynamic {same_dynamic}, static "
            f"{same_static}; compile time (first call minus a steady one): "
            + ", ".join(f"{k} {v:.1f}s" for k, v in compile_s.items())
        )


def unit_sweep(report: Report, seqs: list[int], rounds: int, idle_wait: float) -> None:
    for seq in seqs:
        shape = replace(SHAPES["small"], seq=seq, batch=SWEEP_TOKENS // seq)
        models = {}
        for family in FAMILIES:
            models.update(model_pair(family, shape, max_positions=max(seqs)))
        torch.manual_seed(1)
        ids = torch.randint(0, shape.vocab, (shape.batch, shape.seq))
        samples, _, _, _ = time_training(models, ids, rounds, warmup=2, probe=False, idle_wait=idle_wait)
        rates = {k: s.rate(shape.tokens) for k, s in samples.items()}
        for name, value in rates.items():
            report.curves.setdefault(name, {})[str(seq)] = value
        pairs = [(forge, reference) for reference, forge in FAMILIES.values()]
        report.add(f"sweep: train tokens/s, seq {seq} x batch {shape.batch}", "small", rates, pairs)


def run_unit(unit: str, options: dict) -> Report:
    report = Report()
    kind, _, shape = unit.partition(":")
    quick, idle_wait = options["quick"], options["idle_wait"]
    if kind == "train":
        rounds = options["rounds"] or (3 if quick else 5)
        unit_train(report, SHAPES[shape], rounds, 1 if quick else 2, options["compile_train"], idle_wait)
    elif kind == "memory":
        if shape == "gpt2s-b8":  # a minute per family and setting: the Llama pair (the goals' reference), logits
            # dominate there whether gradients are kept or not
            unit_memory(report, SHAPES[shape], ("llama",), grads_kept=False)
        else:
            unit_memory(report, SHAPES[shape])
    elif kind == "decode":
        batches, new_tokens, rounds = ([1], 32, 2) if quick else ([1, 8], 128, 3)
        unit_decode(report, SHAPES[shape], batches, new_tokens, rounds, options["compile_reference"], idle_wait)
    elif kind == "sweep":
        unit_sweep(report, list(SWEEP_SEQS[:2] if quick else SWEEP_SEQS), 2 if quick else 3, idle_wait)
    else:
        raise ValueError(f"unknown unit {unit!r}")
    return report


def run_isolated(unit: str, options: dict) -> Report:
    """`run_unit` in a fresh interpreter; its report comes back as JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "unit.json"
        command = [sys.executable, "-m", "benchmarks.run", "--unit", unit, "--unit-json", str(path)]
        command += ["--wait-idle", str(options["idle_wait"])]
        command += ["--quick"] if options["quick"] else []
        command += ["--rounds", str(options["rounds"])] if options["rounds"] else []
        command += ["--no-compile-train"] if not options["compile_train"] else []
        command += ["--compile-reference"] if options["compile_reference"] else []
        subprocess.run(command, check=True)
        report = Report()
        report.merge(json.loads(path.read_text()))
        return report


# --- main --------------------------------------------------------------------------------------------------------


def main(
    quick: bool = False,
    sections: tuple[str, ...] = ("train", "memory", "decode", "sweep"),
    shapes: tuple[str, ...] = ("small", "gpt2s"),
    memory_shapes: tuple[str, ...] = ("small", "gpt2s", "gpt2s-b8"),
    decode_shapes: tuple[str, ...] = ("small",),
    rounds: int | None = None,
    compile_train: bool = True,
    compile_reference: bool = False,
    idle_wait: float = 0.0,
    isolate: bool = True,
    out: str = "runs/bench",
    plot_copy: str | None = None,
) -> dict:
    """Run the benchmark, print the table, the goals and one JSON line, and write them under `out`."""
    quiet_libraries()
    if quick:
        shapes, memory_shapes, compile_train = ("small",), ("small",), False
    options = dict(
        quick=quick,
        rounds=rounds,
        compile_train=compile_train,
        compile_reference=compile_reference,
        idle_wait=idle_wait,
    )
    units = [f"train:{s}" for s in shapes if "train" in sections]
    units += [f"memory:{s}" for s in memory_shapes if "memory" in sections]
    units += [f"decode:{s}" for s in decode_shapes if "decode" in sections]
    units += ["sweep"] if "sweep" in sections else []

    info = machine()
    info["cpu_busy_at_start"] = round(cpu_load(), 2)
    started = time.perf_counter()
    report = Report()
    for unit in units:
        unit_started = time.perf_counter()
        report.merge((run_isolated(unit, options) if isolate else run_unit(unit, options)).to_dict())
        print(f"[bench] {unit}: {time.perf_counter() - unit_started:.0f}s", file=sys.stderr, flush=True)
    info["cpu_busy_at_end"] = round(cpu_load(), 2)
    info["seconds"] = round(time.perf_counter() - started, 1)

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if report.curves:
        plot_sweep(report.curves, out_dir / "sweep.png", f"training throughput, shape small, {info['cpu']}, fp32")
        if plot_copy:
            shutil.copyfile(out_dir / "sweep.png", plot_copy)

    print(f"\n## gptforge benchmark ({'quick' if quick else 'full'} run), fp32, CPU")
    print(", ".join(f"{k}: {v}" for k, v in info.items()))
    print()
    print(report.table())
    print("\nGoals (ratios against Transformers' Llama, same shapes, same run):")
    print(report.goal_lines())
    print("\nNotes:")
    for note in report.notes:
        print("-", note)
    record = {"bench": "gptforge", "quick": quick, "machine": info, "goals": report.goals, "rows": report.rows}
    line = json.dumps(record, separators=(",", ":"))
    (out_dir / "bench.json").write_text(line + "\n")
    with open(out_dir / "history.jsonl", "a") as handle:
        handle.write(line + "\n")
    print(line)
    return record


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    # --- what to run ---
    parser.add_argument("--quick", action="store_true", help="smoke run: shape small only, fewer rounds, no compile")
    parser.add_argument(
        "--sections", default="train,memory,decode,sweep", help="comma list: train,memory,decode,sweep"
    )
    parser.add_argument("--shapes", default="small,gpt2s", help="training shapes, comma list: small,gpt2s")
    parser.add_argument(
        "--memory-shapes",
        default="small,gpt2s,gpt2s-b8",
        help="memory shapes, comma list: small,gpt2s,gpt2s-b8 (gpt2s at batch 8, logits-dominated)",
    )
    parser.add_argument("--decode-shapes", default="small", help="decoding shapes, comma list (gpt2s adds ~2 min)")
    # --- how ---
    parser.add_argument("--rounds", type=int, default=None, help="measured training rounds per model (default 5)")
    parser.add_argument("--no-compile-train", action="store_true", help="skip the torch.compile(block) training rows")
    parser.add_argument(
        "--compile-reference",
        action="store_true",
        help="also decode Llama compiled (and gptforge eager), static cache",
    )
    parser.add_argument(
        "--wait-idle", type=float, default=0.0, metavar="SECONDS",
        help="before each measured round wait up to SECONDS for the CPUs to go idle (for shared machines)",
    )  # fmt: skip
    parser.add_argument("--in-process", action="store_true", help="run every unit in this process (debugging)")
    # --- outputs ---
    parser.add_argument("--out", default="runs/bench", help="folder for bench.json, history.jsonl and sweep.png")
    parser.add_argument("--plot-copy", default=None, help="also copy the sweep plot here (e.g. benchmarks/sweep.png)")
    # --- internal: one unit in a child process ---
    parser.add_argument("--unit", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--unit-json", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    if args.unit:
        quiet_libraries()
        options = dict(
            quick=args.quick,
            rounds=args.rounds,
            compile_train=not args.no_compile_train,
            compile_reference=args.compile_reference,
            idle_wait=args.wait_idle,
        )
        Path(args.unit_json).write_text(json.dumps(run_unit(args.unit, options).to_dict()))
    else:
        main(
            quick=args.quick,
            sections=tuple(args.sections.split(",")),
            shapes=tuple(args.shapes.split(",")),
            memory_shapes=tuple(args.memory_shapes.split(",")),
            decode_shapes=tuple(args.decode_shapes.split(",")),
            rounds=args.rounds,
            compile_train=not args.no_compile_train,
            compile_reference=args.compile_reference,
            idle_wait=args.wait_idle,
            isolate=not args.in_process,
            out=args.out,
            plot_copy=args.plot_copy,
        )
