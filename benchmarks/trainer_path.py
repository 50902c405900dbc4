"""The training paths users run, against the hand-written loop: `gptforge pretrain`, Transformers' `Trainer` on
gptforge and on HF Llama (same weights, same arguments), and a plain loop as the ceiling.

Rows (tokens/s of optimizer steps in steady state, after `warmup` steps; a GPU is synchronised at each step's end):
- `loop <model>[+compile]`: forward with labels (bf16 autocast on a GPU), backward, clip to 1.0, fused AdamW step;
  `+compile` is `torch.compile(model)`. No per-step host read but the timing's own: the ceiling.
- `Trainer <model>[+compile]`: `Trainer(TrainingArguments(bf16 on a GPU, optim="adamw_torch_fused",
  max_grad_norm=1.0, torch_compile=...))` over the same random token blocks.
- `Trainer gptforge compile_blocks` (`--rows blocks --compile`): each decoder block compiled, the rest eager.
- `gptforge pretrain[ --compile]`: the command, as a subprocess on a small text folder with a tokenizer trained on
  it, timed from the moments its metrics.jsonl lines appear (from the second logged step to the last).

Each contender runs `repeats` times, alternating, so a busy machine's drift shows up as spread instead of bias;
figures are medians with min-max over the repeats. Ratios are against `loop gptforge` / `loop Llama` of the same run.

Usage:
    python -m benchmarks.trainer_path                      # CPU: the `small` shape, fp32, eager rows
    python -m benchmarks.trainer_path --smoke              # seconds: a tiny shape, every row once
    python -m benchmarks.trainer_path --device cuda --shape gpt2-124m --compile   # the GPU table (with compile rows)
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import torch
import transformers
from transformers import Trainer, TrainerCallback, TrainingArguments

from gptforge import compile_blocks

from .models import SHAPES, Shape, model_pair

SHAPES_HERE = {
    **SHAPES,
    "tiny": Shape("tiny", vocab=512, hidden=64, layers=2, heads=4, seq=64, batch=4, llama_intermediate=192,
                  gpt2_intermediate=256),
    "dist": Shape("dist", vocab=2048, hidden=128, layers=4, heads=4, seq=128, batch=8, llama_intermediate=512,
                  gpt2_intermediate=512),
    "gpt2-124m": Shape("gpt2-124m", vocab=50257, hidden=768, layers=12, heads=12, seq=1024, batch=16,
                       llama_intermediate=2048, gpt2_intermediate=3072),
}  # fmt: skip


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def steady_rate(times: dict[int, float], tokens_per_step: int, warmup: int) -> float:
    """Tokens/s between the end of step `warmup` and the end of the last step."""
    last = max(times)
    first = warmup if warmup in times and warmup < last else min(times)
    return (last - first) * tokens_per_step / (times[last] - times[first])


def loop_rate(model, batches: list[torch.Tensor], warmup: int, device: torch.device, compiled: bool) -> float:
    autocast = torch.bfloat16 if device.type == "cuda" else None
    model = model.to(device).train()
    runner = torch.compile(model) if compiled else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0, fused=True)
    times = {}
    for step, ids in enumerate(batches, start=1):
        ids = ids.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            loss = runner(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        times[step] = time.perf_counter()
    return steady_rate(times, batches[0].numel(), warmup)


class StepTimes(TrainerCallback):
    def __init__(self, device: torch.device) -> None:
        self.device, self.times = device, {}

    def on_step_end(self, args, state, control, **kwargs):
        synchronize(self.device)
        self.times[state.global_step] = time.perf_counter()


def trainer_rate(model, batches: list[torch.Tensor], warmup: int, device: torch.device, compiled: bool) -> float:
    timer = StepTimes(device)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=batches[0].shape[0],
            max_steps=len(batches),
            bf16=device.type == "cuda",
            optim="adamw_torch_fused",
            max_grad_norm=1.0,
            torch_compile=compiled,
            learning_rate=1e-4,
            logging_steps=10,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            use_cpu=device.type == "cpu",
            seed=0,
        )
        rows = [{"input_ids": row, "labels": row} for ids in batches for row in ids]
        Trainer(model=model, args=args, train_dataset=rows, callbacks=[timer]).train()
    return steady_rate(timer.times, batches[0].numel(), warmup)


def text_folder(folder: Path, megabytes: float) -> Path:
    """train.jsonl / validation.jsonl of the Python standard library's own sources, about `megabytes` in all."""
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "train.jsonl").is_file():
        return folder
    docs, size = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        docs.append({"text": text})
        size += len(text)
        if size > megabytes * 2**20:
            break
    cut = max(1, len(docs) // 20)
    for name, part in (("validation", docs[:cut]), ("train", docs[cut:])):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in part), encoding="utf-8")
    return folder


def pretrain_rate(
    work: Path,
    shape: Shape,
    steps: int,
    warmup: int,
    device: torch.device,
    compiled: bool,
    tag: str,
    launcher: tuple[str, ...] = (sys.executable,),
    processes: int = 1,
    threads: int | None = None,
) -> float:
    """`gptforge pretrain` as a subprocess; tokens/s from the moments its metrics.jsonl lines appear.

    `launcher` starts it (`torchrun ...` / `accelerate launch ...` for `processes` > 1, each taking its share of the
    global batch `shape.batch`); `threads` sets `OMP_NUM_THREADS`.
    """
    from gptforge.tokenization import train_tokenizer

    # ~4 bytes of source per token, and enough text for a tokenizer of the full vocabulary
    data = text_folder(work / "data", megabytes=max(2.0, steps * shape.tokens * 6 / 2**20))
    tokenizer = work / f"tokenizer-{shape.vocab}"
    if not (tokenizer / "tokenizer.json").is_file():
        texts = [json.loads(line)["text"] for line in (data / "train.jsonl").read_text().splitlines()]
        train_tokenizer(texts, shape.vocab).save_pretrained(tokenizer)
    out = work / f"run-{tag}"
    logging_steps = max(1, warmup // 2)
    settings = {
        "vocab_size": shape.vocab, "hidden_size": shape.hidden, "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads, "num_key_value_heads": shape.heads,
        "intermediate_size": shape.llama_intermediate, "max_position_embeddings": max(shape.seq, 512),
    }  # fmt: skip
    argv = [*launcher, "-m", "gptforge.scripts.cli", "pretrain", "--out", str(out), "--overwrite"]
    argv += ["--data", str(data), "--tokenizer", str(tokenizer), "--preset", "tiny"]
    argv += [f"--set={k}={v}" for k, v in settings.items()]
    argv += ["--block-size", str(shape.seq), "--batch-size", str(shape.batch // processes), "--max-steps", str(steps)]
    argv += ["--logging-steps", str(logging_steps), "--eval-steps", "1000000", "--save-steps", "1000000"]
    argv += ["--max-eval-blocks", "2", "--warmup-steps", "1", "--no-progress", "--cache-dir", str(work / "cache")]
    argv += ["--precision", "bf16" if device.type == "cuda" else "fp32"] + (["--compile"] if compiled else [])
    metrics = out / "metrics.jsonl"
    metrics.unlink(missing_ok=True)
    times, seen = {}, 0
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while process.poll() is None:
        if metrics.is_file():
            lines = metrics.read_text().splitlines()
            now = time.perf_counter()
            for line in lines[seen:]:
                if line.endswith("}"):
                    record = json.loads(line)
                    if "loss" in record and "step" in record:
                        times.setdefault(record["step"], now)
                    seen += 1
        time.sleep(0.01)
    if process.returncode != 0:
        raise RuntimeError(f"gptforge pretrain failed ({process.returncode}): {process.stderr.read()[-2000:]}")
    logged = sorted(times)
    if len(logged) < 3:
        raise RuntimeError(f"gptforge pretrain logged {len(logged)} steps; raise --steps")
    return steady_rate({s: times[s] for s in logged[1:]}, shape.tokens, logged[1])


def contenders(rows: tuple[str, ...], compile_rows: bool) -> list[tuple[str, str, str, bool]]:
    """(label, kind, model, compiled) in run order."""
    out = []
    for compiled in (False, True) if compile_rows else (False,):
        suffix = "+compile" if compiled else ""
        for kind in rows:
            if kind == "blocks":  # `gptforge.compile_blocks` under an eager Trainer: the other compile path
                if compiled:
                    out.append(("Trainer gptforge compile_blocks", kind, "gptforge", False))
            elif kind == "pretrain":
                out.append((f"gptforge pretrain{' --compile' if compiled else ''}", kind, "gptforge", compiled))
            else:
                for model in ("gptforge", "Llama"):
                    out.append((f"{kind} {model}{suffix}", kind, model, compiled))
    return out


def main(
    shape: Shape,
    device: torch.device,
    steps: int,
    warmup: int,
    repeats: int,
    rows: tuple[str, ...] = ("loop", "Trainer", "pretrain"),
    compile_rows: bool = False,
    work: Path | None = None,
) -> dict:
    warnings.filterwarnings("ignore")
    transformers.logging.set_verbosity_error()
    work = Path(work or tempfile.mkdtemp(prefix="gptforge-trainer-path-"))
    generator = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, shape.vocab, (shape.batch, shape.seq), generator=generator) for _ in range(steps)]
    samples: dict[str, list[float]] = {}
    for repeat in range(repeats):
        for label, kind, model_name, compiled in contenders(rows, compile_rows):
            started = time.perf_counter()
            if kind == "pretrain":
                tag = f"{'compiled' if compiled else 'eager'}-{repeat}"
                rate = pretrain_rate(work, shape, steps, warmup, device, compiled, tag)
            else:
                model = model_pair("llama", shape, max_positions=max(shape.seq, 512))[model_name]
                if kind == "blocks":
                    compile_blocks(model)
                run = loop_rate if kind == "loop" else trainer_rate
                rate = run(model, batches, warmup, device, compiled)
                del model
                torch._dynamo.reset()
            samples.setdefault(label, []).append(rate)
            print(f"[{repeat + 1}/{repeats}] {label}: {rate:,.0f} tokens/s ({time.perf_counter() - started:.0f}s)",
                  file=sys.stderr, flush=True)  # fmt: skip
    result = {
        "bench": "gptforge-trainer-path",
        "machine": {
            "device": str(device),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "cpus": os.cpu_count(),
            "shape": shape.name,
            "steps": steps,
            "warmup": warmup,
            "repeats": repeats,
        },  # fmt: skip
        "rows": {
            label: {"median": statistics.median(rates), "min": min(rates), "max": max(rates), "all": rates}
            for label, rates in samples.items()
        },
    }
    for label, row in result["rows"].items():
        suffix = "+compile" if label.endswith(("+compile", "--compile")) else ""
        for ceiling in (f"loop gptforge{suffix}", f"loop Llama{suffix}"):
            if ceiling in result["rows"] and ceiling != label:
                row[f"vs {ceiling}"] = row["median"] / result["rows"][ceiling]["median"]
    print(table(result))
    print(json.dumps(result, separators=(",", ":")))
    return result


def table(result: dict) -> str:
    m = result["machine"]
    lines = [f"\n## training paths, {m['shape']} shape, {m['device']}, {m['repeats']} alternating repeats",
             "| path | tokens/s median (min-max) | vs loop gptforge | vs loop Llama |", "|---|---|---|---|"]  # fmt: skip
    for label, row in result["rows"].items():
        ratios = [next((f"{v:.2f}x" for k, v in row.items() if k.startswith(f"vs loop {who}")), "-")
                  for who in ("gptforge", "Llama")]  # fmt: skip
        lines.append(
            f"| {label} | {row['median']:,.0f} ({row['min']:,.0f}-{row['max']:,.0f}) | {' | '.join(ratios)} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.trainer_path",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--shape", default="small", choices=sorted(SHAPES_HERE), help="model and batch shape")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--steps", type=int, default=24, help="optimizer steps per contender (default 24)")
    parser.add_argument("--warmup", type=int, default=6, help="steps left out of the rate (default 6)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating repeats of every row (default 2)")
    parser.add_argument("--rows", default="loop,Trainer,pretrain", help="comma list: loop,Trainer,pretrain,blocks")
    parser.add_argument("--compile", action="store_true", help="also the torch.compile rows")
    parser.add_argument("--smoke", action="store_true", help="a tiny shape, 6 steps, one repeat: checks it runs")
    parser.add_argument("--work", default=None, help="folder for the text data, tokenizer and pretrain runs")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    shape = SHAPES_HERE["tiny" if args.smoke else args.shape]
    steps, warmup, repeats = (8, 2, 1) if args.smoke else (args.steps, args.warmup, args.repeats)
    if args.smoke:
        shape = replace(shape, batch=2)
    main(
        shape, torch.device(args.device), steps, warmup, repeats, tuple(args.rows.split(",")), args.compile, args.work
    )
